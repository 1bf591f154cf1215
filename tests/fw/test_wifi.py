"""Wi-Fi station upkeep (CPython and MicroPython).

The WLAN is a stand-in: no radio here. It refuses the first `failures` attempts
and can be made to drop the association, as an access point does.
"""

import asyncio

from pile.wifi import Station


class FlakyWlan:
    def __init__(self, failures):
        self.failures = failures
        self.connected = False
        self.calls = []

    def isconnected(self):
        return self.connected

    def connect(self, ssid, key):
        self.calls.append((ssid, key))
        if self.failures:
            self.failures -= 1
        else:
            self.connected = True

    def disconnect(self):
        self.connected = False


def test_backoff_doubles_to_five_seconds_and_resets_on_success():
    """However long the access point was gone, the pile tries again within 5 s of its
    return, so it is back within 10 s (issue 26); with a minute's cap, an outage of 30 s
    left it off the network for up to 32 s more."""
    station = Station(FlakyWlan(0), "site")
    waits = [station.next_backoff(False) for _ in range(40)]
    assert waits[:4] == [1000, 2000, 4000, 5000]
    assert max(waits) == 5000
    assert station.next_backoff(True) == 0
    assert station.next_backoff(False) == 1000


def test_reconnects_after_failures_and_after_a_drop():
    wlan = FlakyWlan(failures=2)
    station = Station(wlan, "site", "secret", timeout_ms=30, first_backoff_ms=10)

    async def scenario():
        task = asyncio.create_task(station.keep_connected())
        for _ in range(100):
            await asyncio.sleep(0.01)
            if wlan.connected:
                break
        assert wlan.connected
        assert station.attempts == 3 and station.connects == 1
        wlan.connected = False  # the access point went away
        for _ in range(400):
            await asyncio.sleep(0.01)
            if wlan.connected:
                break
        task.cancel()
        assert wlan.connected
        assert station.connects == 2
        assert wlan.calls == [("site", "secret")] * 4

    asyncio.run(scenario())
