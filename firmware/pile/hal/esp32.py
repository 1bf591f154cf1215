"""ESP32 port: the shared MCU HAL with the ESP32's watchdog range."""

from micropython import const

from pile.hal.mcu import McuHal

_WDT_MAX_MS = const(3600000)  # the task watchdog accepts long timeouts; an hour is plenty

_SERVICE_TIMER = const(0)  # hardware timer 0: the ESP32 has no virtual timers


def hal(spec, root="."):
    # txdone() is ESP-IDF's uart_wait_tx_done(), which may return with the last stop bit
    # still in the shift register: DE drops a character time later
    return McuHal(spec, _WDT_MAX_MS, _SERVICE_TIMER, tx_settle=True, root=root)
