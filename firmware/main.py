"""`micropython firmware/main.py BOARD_JSON` off the board; on a board it runs at boot.

Kept to two lines so nothing is compiled at start-up: the firmware itself is
pile/firmware.py, deployed precompiled (.mpy).
"""

from pile.firmware import main

main(__file__.rsplit("/", 1)[0] if "/" in __file__ else ".")
