"""ESP32 port: the shared MCU HAL with the ESP32's watchdog range."""

from micropython import const

from pile.hal.mcu import McuHal

_WDT_MAX_MS = const(3600000)  # the task watchdog accepts long timeouts; an hour is plenty

_SERVICE_TIMER = const(0)  # hardware timer 0: the ESP32 has no virtual timers


def hal(spec):
    return McuHal(spec, _WDT_MAX_MS, _SERVICE_TIMER)
