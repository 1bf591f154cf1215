"""The firmware's modules once it is built from a board file: `boot_modules.py BOARD_JSON`.

Builds the firmware as main.py does (pile/firmware.py's `Firmware` on the board's HAL),
runs nothing, and prints the `pile` modules it imported, one a line.
"""

import sys

from pile.firmware import Firmware, load_board
from pile.hal import select

board = load_board(sys.argv[1])
Firmware(board, select(board, "firmware"))
for name in sorted(sys.modules):
    if name.split(".")[0] == "pile":
        print(name)
