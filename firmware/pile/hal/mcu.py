"""The HAL shared by the ESP32 and RP2040 ports, built from the board file.

Neither port has a hardware RS485 mode, so the driver-enable (DE) pin is raised
for the frame and lowered once its last bit has left the shift register.

A MicroPython UART asked for more bytes than have come waits `timeout_char` (at least a
millisecond, busy) for each further one, stopping every other task: so the UARTs here
are read only as far as `any()` says (docs/pico.md).
"""

import asyncio
import time

import machine
from machine import UART, WDT, Pin, Timer

from pile.estop import Estop
from pile.events import RESET_POWER_ON, RESET_WATCHDOG
from pile.wifi import Station

_STALE = bytearray(32)  # stale input is read into this and dropped


class RS485:
    """A half-duplex UART: `start_send()` raises DE, `sent()` lowers it once the frame has
    left, `readinto()` receives."""

    def __init__(self, uart: UART, de: Pin, baud: int, settle: bool):
        self.uart = uart
        self._de = de
        self._char_us = 11000000 // baud  # 1 start + 8 data + parity/stop bits
        self._settle = settle  # txdone() may come before the final stop bit: wait a char
        de.value(0)

    def readinto(self, buf: memoryview):
        """The bytes waiting, or None: never waits for more."""
        waiting = self.uart.any()
        return self.uart.readinto(buf, min(waiting, len(buf))) if waiting else None

    def start_send(self, frame: memoryview) -> int:
        """Drive the line and start `frame`; the ms it takes on the wire."""
        self._de.value(1)
        self.uart.write(frame)
        return len(frame) * self._char_us // 1000

    def sent(self) -> bool:
        """True once the frame has left (the line released), else False: look again."""
        if not self.uart.txdone():
            return False
        if self._settle:
            time.sleep_us(self._char_us)  # a busy wait: 0.57 ms at 19200 baud
        self._de.value(0)
        return True

    def drain_input(self) -> None:
        """Drop stale bytes (a late reply, line noise) before the next request."""
        waiting = self.uart.any()
        while waiting:
            self.uart.readinto(_STALE, min(waiting, len(_STALE)))
            waiting = self.uart.any()


class UartReader:
    """The host link's reading side on a UART: only what has come, so a flood of bytes
    cannot hold the event loop in `read` (a bare StreamReader's read(256) waits for each
    further byte, 22 ms for 256 at 115200 baud)."""

    def __init__(self, uart: UART, stream):
        self._uart = uart
        self._stream = stream

    async def read(self, n: int) -> bytes:
        first = await self._stream.read(1)  # waits in the event loop's poll, not busy
        more = min(self._uart.any(), n - 1)
        rest = self._uart.read(more) if more > 0 else None
        return first + rest if rest else first


class McuHal:
    """What the firmware needs from one board: RS485 UARTs, watchdog, E-stop, reset."""

    def __init__(self, spec: dict, wdt_max_ms: int, timer_id: int, tx_settle: bool,
                 root: str = "."):
        self.spec = spec
        self.profiles = root + "/profiles"  # the slot's own (bootstage.py): "./a/profiles"
        self._wdt_max_ms = wdt_max_ms
        self._timer_id = timer_id
        self._tx_settle = tx_settle  # see RS485
        self._service_timer = None

    def link_stream(self):
        """(reader, writer) on the host-link UART, or None when the board has none. A UART
        never waits for its peer, so one asyncio stream serves both ways, read through
        `UartReader`."""
        wiring = self.spec.get("link", {})
        if "uart" not in wiring:
            return None
        uart = UART(wiring["uart"], baudrate=wiring["baud"], tx=Pin(wiring["tx"]),
                    rx=Pin(wiring["rx"]), timeout=0)
        stream = asyncio.StreamReader(uart)  # MicroPython's: it writes as well
        return UartReader(uart, stream), stream

    def rs485(self, name: str = "modbus") -> RS485:
        """The UART of the board file's part `name`: "modbus", or "site.bus" (a site
        group's bus, a part within a part)."""
        wiring = self.spec
        for key in name.split("."):
            wiring = wiring[key]
        baud = wiring["baud"]
        uart = UART(wiring["uart"], baudrate=baud, tx=Pin(wiring["tx"]), rx=Pin(wiring["rx"]),
                    timeout=0)
        return RS485(uart, Pin(wiring["de"], Pin.OUT), baud, self._tx_settle)

    def reset(self) -> None:
        """Reboot the board (COMMAND reboot)."""
        machine.reset()

    def reset_cause(self) -> int:
        """Watchdog or power-on, as the chip saw it. (A requested reboot is a watchdog
        reset on the RP2040: the pile notes those itself, Pile.note_reset.)"""
        return RESET_WATCHDOG if machine.reset_cause() == machine.WDT_RESET else RESET_POWER_ON

    def watchdog(self, timeout_ms: int, on_expiry=None) -> WDT:
        """The hardware watchdog; the timeout is clipped to what the chip supports. The
        chip resets by itself (`on_expiry` is for the unix port); reset_cause() tells."""
        return WDT(timeout=min(timeout_ms, self._wdt_max_ms))

    def service_mode(self, wdt: WDT) -> None:
        """The firmware was stopped at the REPL (Ctrl-C, e.g. by `pilectl deploy`). A started
        watchdog cannot be stopped on either chip, so a timer feeds it until the next reset."""
        self._service_timer = Timer(self._timer_id, period=1000,
                                    callback=lambda _timer: wdt.feed())

    def wifi(self) -> Station | None:
        """The Wi-Fi station keeping the board on the site network, or None without "wifi"."""
        spec = self.spec.get("wifi")
        if not spec:
            return None
        import network

        return Station(lambda: network.WLAN(network.STA_IF), spec["ssid"],
                       spec.get("password"))

    def output(self, name: str) -> Pin | None:
        """An output named in the board file ("contactor_pin", "status_led_pin"), low at
        start, or None when the board has none."""
        pin = self.spec.get(name)
        return None if pin is None else Pin(pin, Pin.OUT, value=0)

    def estop(self) -> Estop | None:
        """The E-stop input, latched by its pin's interrupt on the press, or None when the
        board has none."""
        number = self.spec.get("estop_pin")
        if number is None:
            return None
        pin = Pin(number, Pin.IN, Pin.PULL_UP)
        estop = Estop(pin, interrupts=True)
        pin.irq(trigger=Pin.IRQ_FALLING, handler=estop.press)
        return estop
