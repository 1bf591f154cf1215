"""`micropython firmware/main.py BOARD_JSON` off the board; on a board it runs at boot.

Kept to a few lines so little is compiled at start-up: the boot stage (bootstage.py)
picks the slot whose firmware runs (docs/field-update.md), and the firmware itself is
pile/firmware.py in that slot, deployed precompiled (.mpy).
"""

import bootstage

_path = globals().get("__file__", "")  # unset when main.py is frozen into the firmware
bootstage.start(_path.rsplit("/", 1)[0] if "/" in _path else ".")
