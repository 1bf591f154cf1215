"""Hardware access, one module per port; nothing outside this package touches hardware.

`select(board, root)` picks the port's HAL from the board file: a board that names its
devices by path runs on the unix port, the others on an ESP32 or an RP2040.
"""


def select(board, root="."):
    """The HAL for `board`; `root` is the folder of the firmware that runs (the boot
    stage's slot: its profiles are read from there)."""
    if "device" in board["modbus"]:
        from pile.hal.unix import UnixHal

        return UnixHal(board, root)
    if board["board"].startswith("esp32"):
        from pile.hal import esp32

        return esp32.hal(board, root)
    from pile.hal import rp2

    return rp2.hal(board, root)
