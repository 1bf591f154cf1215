"""RP2040 port: the shared MCU HAL with the RP2040's watchdog limit."""

from micropython import const

from pile.hal.mcu import McuHal

_WDT_MAX_MS = const(8388)  # the RP2040 watchdog counter cannot count longer

_SERVICE_TIMER = const(-1)  # a virtual timer


def hal(spec, root="."):
    # txdone() waits for the PL011's BUSY bit, which "remains set until the complete byte,
    # including all the stop bits, has been sent" (RP2040 datasheet, UARTFR): DE may drop
    # at once, with no busy wait of a character (docs/performance.md)
    return McuHal(spec, _WDT_MAX_MS, _SERVICE_TIMER, tx_settle=False, root=root)
