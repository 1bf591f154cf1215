"""`micropython firmware/main.py BOARD_JSON` off the board; on a board it runs at boot.

Kept to three lines so nothing is compiled at start-up: the firmware itself is
pile/firmware.py, deployed precompiled (.mpy).
"""

from pile.firmware import main

_path = globals().get("__file__", "")  # unset when main.py is frozen into the firmware
main(_path.rsplit("/", 1)[0] if "/" in _path else ".")
