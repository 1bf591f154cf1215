# The port's own modules (asyncio among them), then the pile firmware: the `pile` package
# and main.py, frozen as bytecode that runs from flash.
include("$(PORT_DIR)/boards/manifest.py")
package("pile", base_path="$(BOARD_DIR)/../../../firmware")
module("main.py", base_path="$(BOARD_DIR)/../../../firmware")
