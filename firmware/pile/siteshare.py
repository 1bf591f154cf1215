"""A site group's member side: the share of the connection's caps this pile may take.

The leader's allowance (SITE_ALLOWANCE, docs/site-group.md) holds for two of the
group's periods from its arrival; without a valid one the pile takes its fallback share
from the board file at once. Either is one more input of the safety envelope
(limits.Inputs.share_*, reasons bit 18), so it only ever narrows what the other rules
allow, and the pile never takes more than the leader computed for it while an allowance
is valid. Pure: time comes in as ticks_ms.
"""

from pile.clock import ticks_diff

_VALID_PERIODS = 2


class SiteShare:
    def __init__(self, share_import, share_export, period_ms):
        self.share_import = share_import  # W: the fallback shares, from the board file
        self.share_export = share_export
        self.period_ms = period_ms
        self.allow_import = 0  # W: the last allowance taken
        self.allow_export = 0
        self._at = None  # ticks_ms it arrived; None before the first
        self.allowances = 0  # taken since boot
        self.fallbacks = 0  # times a valid allowance ran out with none after it
        self._valid = False  # at the last `apply`

    def allow(self, import_w, export_w, now):
        """The leader's allowance (W, both >= 0, checked by the caller) arrived at `now`."""
        self.allow_import = import_w
        self.allow_export = export_w
        self._at = now
        self.allowances += 1

    def valid(self, now):
        at = self._at
        return at is not None and ticks_diff(now, at) < _VALID_PERIODS * self.period_ms

    def apply(self, inputs, now):
        """Set the envelope's share inputs for a decision at `now`."""
        valid = self.valid(now)
        if valid:
            inputs.share_import = self.allow_import
            inputs.share_export = self.allow_export
        else:
            inputs.share_import = self.share_import
            inputs.share_export = self.share_export
            if self._valid:
                self.fallbacks += 1
        self._valid = valid
