"""Keep a Wi-Fi station connected: reconnect when the link drops, backing off.

Takes a function that opens a WLAN-like object (`active()`, `isconnected()`,
`connect(ssid, key)`, `disconnect()`): `network.WLAN(network.STA_IF)` on the
boards. A failed attempt doubles the wait (1 s up to 5 s) so a site with no
access point is not flooded with association attempts (at most one attempt of
up to 15 s every 20 s); a success resets it (pile/backoff.py, without jitter: one
station, no crowd to spread). The cap is what a returning access
point waits for at most: with an association of about 2 s the pile is back on
the network within 10 s of it. The TCP link listens regardless: clients simply
find the pile again once it is back.

The WLAN is opened and its radio switched on by the first attempt, not at boot,
and a refusal (OSError: on an ESP32 the driver's buffers come from the memory
MicroPython's heap also grows into, and opening the WLAN said "WiFi Out of
Memory" on an emulated board) is one more failed attempt: the pile controls its
converter without Wi-Fi, where the error used to stop the firmware at start.
"""

import asyncio

from micropython import const

from pile.backoff import Backoff
from pile.clock import ticks_diff, ticks_ms

_FIRST_BACKOFF_MS = const(1000)
_MAX_BACKOFF_MS = const(5000)
_CONNECT_TIMEOUT_MS = const(15000)
_POLL_S = 0.05
_WATCH_S = 2


class Station:
    def __init__(self, open_wlan, ssid, key=None, timeout_ms=_CONNECT_TIMEOUT_MS,
                 first_backoff_ms=_FIRST_BACKOFF_MS):
        self._open_wlan = open_wlan
        self.wlan = None  # opened by the first attempt
        self.ssid = ssid
        self.key = key
        self.timeout_ms = timeout_ms
        self.backoff = Backoff(first_backoff_ms, _MAX_BACKOFF_MS)
        self.attempts = 0
        self.connects = 0  # successful associations, for status
        self.errors = 0  # attempts the radio refused (OSError)
        self._failing = False  # said on the console once per run of refusals

    def next_backoff(self, connected):
        """The wait after an attempt: reset by a success, doubled (capped) by a failure."""
        if connected:
            self.backoff.reset()
            return 0
        return self.backoff.next_ms(0)

    async def _attempt(self):
        self.attempts += 1
        try:
            if self.wlan is None:  # opened and started here, not at boot: see the docstring
                self.wlan = self._open_wlan()
            wlan = self.wlan
            if not wlan.active():
                wlan.active(True)
            wlan.connect(self.ssid, self.key)
        except OSError as exc:  # out of memory for the radio's buffers, a driver error
            self.errors += 1
            if not self._failing:
                print("Wi-Fi could not start (%s): trying again" % (exc,))
            self._failing = True
            return False
        self._failing = False
        started = ticks_ms()
        while ticks_diff(ticks_ms(), started) < self.timeout_ms:
            if wlan.isconnected():
                self.connects += 1
                return True
            await asyncio.sleep(_POLL_S)
        wlan.disconnect()  # stop the driver's own retrying before ours waits
        return False

    async def keep_connected(self):
        while True:
            if self.wlan is not None and self.wlan.isconnected():
                await asyncio.sleep(_WATCH_S)
                continue
            wait = self.next_backoff(await self._attempt())
            if wait:
                await asyncio.sleep(wait / 1000)
