"""RP2040 port: the shared MCU HAL with the RP2040's watchdog limit."""

from micropython import const

from pile.hal.mcu import McuHal

_WDT_MAX_MS = const(8388)  # the RP2040 watchdog counter cannot count longer

_SERVICE_TIMER = const(-1)  # a virtual timer


def hal(spec):
    return McuHal(spec, _WDT_MAX_MS, _SERVICE_TIMER)
