"""Wi-Fi station upkeep (CPython and MicroPython).

The WLAN is a stand-in: no radio here. It refuses the first `failures` attempts
and can be made to drop the association, as an access point does.
"""

import asyncio

from pile.wifi import Station


class FlakyWlan:
    """Refuses `failures` associations; its radio refuses to start `radio_failures` times
    (OSError, as an ESP32's out of memory), and it cannot connect before it started."""

    def __init__(self, failures, radio_failures=0):
        self.failures = failures
        self.radio_failures = radio_failures
        self.started = False
        self.connected = False
        self.calls = []

    def active(self, on=None):
        if on is None:
            return self.started
        if self.radio_failures:
            self.radio_failures -= 1
            raise OSError(12)  # ENOMEM
        self.started = on

    def isconnected(self):
        return self.connected

    def connect(self, ssid, key):
        if not self.started:
            raise OSError("Wifi Not Started")
        self.calls.append((ssid, key))
        if self.failures:
            self.failures -= 1
        else:
            self.connected = True

    def disconnect(self):
        self.connected = False


async def connected(wlan, steps):
    """Until `wlan` is associated, `steps` times 10 ms at most."""
    for _ in range(steps):
        await asyncio.sleep(0.01)
        if wlan.connected:
            return


def test_backoff_doubles_to_five_seconds_and_resets_on_success():
    """However long the access point was gone, the pile tries again within 5 s of its
    return, so it is back within 10 s (issue 26); with a minute's cap, an outage of 30 s
    left it off the network for up to 32 s more."""
    station = Station(lambda: FlakyWlan(0), "site")
    waits = [station.next_backoff(False) for _ in range(40)]
    assert waits[:4] == [1000, 2000, 4000, 5000]
    assert max(waits) == 5000
    assert station.next_backoff(True) == 0
    assert station.next_backoff(False) == 1000


def test_reconnects_after_failures_and_after_a_drop():
    wlan = FlakyWlan(failures=2)
    station = Station(lambda: wlan, "site", "secret", timeout_ms=30, first_backoff_ms=10)

    async def scenario():
        task = asyncio.create_task(station.keep_connected())
        await connected(wlan, 100)
        assert wlan.connected
        assert station.attempts == 3 and station.connects == 1
        wlan.connected = False  # the access point went away
        await connected(wlan, 400)
        task.cancel()
        assert wlan.connected
        assert station.connects == 2
        assert wlan.calls == [("site", "secret")] * 4

    asyncio.run(scenario())


def test_a_radio_that_cannot_start_is_tried_again_and_stops_nothing():
    """The WLAN is opened and its radio started by the station's attempts: one that fails
    (out of memory) counts as a failed attempt and is tried again, where it used to stop
    the firmware at start."""
    wlan = FlakyWlan(failures=0, radio_failures=2)
    refusals = [OSError("WiFi Out of Memory")]

    def open_wlan():  # an ESP32's network.WLAN() starts the driver, and can fail so
        if refusals:
            raise refusals.pop()
        return wlan

    station = Station(open_wlan, "site", timeout_ms=30, first_backoff_ms=10)

    async def scenario():
        task = asyncio.create_task(station.keep_connected())
        await connected(wlan, 200)
        task.cancel()
        assert wlan.connected
        assert (station.attempts, station.errors, station.connects) == (4, 3, 1)

    asyncio.run(scenario())
