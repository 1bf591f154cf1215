"""Feed the hardware watchdog only when every registered task has checked in.

Peter Hinch's pattern: one hung task stops the feeding and the board resets,
whereas a lone feeder task would keep a half-dead firmware alive.
"""


class Supervisor:
    def __init__(self, wdt):
        self._wdt = wdt
        self._all = 0
        self._seen = 0
        self._count = 0

    def task(self):
        """Register one more task; returns the token it checks in with."""
        bit = 1 << self._count
        self._count += 1
        self._all |= bit
        return bit

    def check_in(self, token):
        self._seen |= token
        if self._seen == self._all:
            self._wdt.feed()
            self._seen = 0
