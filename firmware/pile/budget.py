"""The owner's V2G budget: what the pile discharged over a rolling day and week of its own
run time, kept across reboots and power cuts (docs/safety.md, "The owner's V2G budget").

The pile may have no wall clock, and a host's time cannot be trusted to end a day early,
so a day is 24 hours of the pile's own run time, counted by the control loop's ticks and
saved with the counters; time while the pile is off does not count. Energy is kept in
whole-hour buckets: the day's count is the hour under way plus the last 24 whole hours
(24 to 25 hours, never less than a day), the week's the day under way plus the last 7
whole days (7 to 8 days). A budget never opens early, whatever happens to the power or
the host.

On flash (`state()`, saved by the Pile between periods) the hour under way carries
`RESERVE_WH` more than was counted: what a power cut may have discharged since that save.
Once `_HOLD_WH` has been counted since the last save, discharge waits for the next one, so
a cut forgets nothing while the period it interrupts carried at most the other half of
the reserve (100 Wh: 1.4 MW for a 250 ms period). At boot the counters are what the last
save said, reserve included, and discharge under a budget waits for the first save.

Pure integer arithmetic on small ints, no allocation in `run`: it is called at every
decision. Energy is W x ms folded into W s, then Wh, with constants below 8192.
"""

from array import array

from micropython import const

from pile.config import NO_BUDGET

_HOURS = const(24)
_DAYS = const(7)
_HOUR_S = const(3600)
RESERVE_WH = const(200)  # added to the hour under way on flash at every save
_HOLD_WH = const(100)  # counted since the last save: discharge under a budget waits for one
_SAVE_WH = const(75)  # counted since the last save: a save is due
_CLOCK_SAVE_S = const(600)  # run time since the last save: a save is due (a cut forgets it)
_STEP_MS = const(1000)  # W x ms is summed at most a second at a time: below 2**30 at 1 MW
FORMAT = const(1)  # of `state()`

SPENT_DAY = const(1)  # `spent()` bits
SPENT_WEEK = const(2)


class Budget:
    def __init__(self):
        self.hours = array("i", bytes(4 * _HOURS))  # Wh of the last 24 whole hours, a ring
        self.days = array("i", bytes(4 * _DAYS))  # Wh of the last 7 whole days, a ring
        self._hour = 0  # where the next whole hour goes: the oldest
        self._day = 0
        self.hour_wh = 0  # Wh counted in the hour under way
        self.hours_wh = 0  # the sum of `hours`
        self.days_wh = 0  # the sum of `days`
        self.today_wh = 0  # the whole hours of the day under way
        self.hour_of_day = 0  # how many of those there are
        self.second = 0  # run time into the hour under way: s, then ms
        self._ms = 0
        self._wms = 0  # W ms below a W s
        self._ws = 0  # W s below a Wh: counted as one more Wh (a started Wh counts)
        self.unsaved_wh = 0  # Wh counted since the last save
        self.unsaved_s = 0  # run time since the last save
        self.rolled = False  # an hour ended since the last save
        self.durable = False  # saved on flash: discharge waits for a save after _HOLD_WH

    # -- at every decision ------------------------------------------------------------

    def run(self, ms, watts):
        """`ms` of run time passed with `watts` (0..1 MW) discharged all along. The clock
        moves first, so energy lands in the latest hour, which is counted the longest."""
        if ms <= 0:
            return
        self._clock(ms)
        if watts <= 0:
            return
        wms, ws, wh = self._wms, self._ws, 0
        while ms > 0:
            step = ms if ms < _STEP_MS else _STEP_MS
            ms -= step
            wms += watts * step
            ws += wms // 1000
            wms %= 1000
            wh += ws // _HOUR_S
            ws %= _HOUR_S
        self._wms, self._ws = wms, ws
        self.hour_wh += wh
        if self.durable:  # kept small: a pile without flash never saves
            self.unsaved_wh += wh

    def _clock(self, ms):
        ms += self._ms
        seconds = ms // 1000
        self._ms = ms % 1000
        if self.durable:
            self.unsaved_s += seconds
        second = self.second + seconds
        while second >= _HOUR_S:
            second -= _HOUR_S
            self._roll()
        self.second = second

    def _roll(self):
        """The hour under way becomes a whole hour; 24 of them make a whole day."""
        wh = self.hour_wh
        at = self._hour
        self.hours_wh += wh - self.hours[at]
        self.hours[at] = wh
        self._hour = (at + 1) % _HOURS
        self.hour_wh = 0
        self.today_wh += wh
        self.hour_of_day += 1
        self.rolled = True
        if self.hour_of_day == _HOURS:
            at = self._day
            self.days_wh += self.today_wh - self.days[at]
            self.days[at] = self.today_wh
            self._day = (at + 1) % _DAYS
            self.today_wh = 0
            self.hour_of_day = 0

    def _started(self):
        return 1 if self._ws or self._wms else 0

    def day_wh(self):
        """Wh discharged over the last 24 to 25 hours of run time."""
        return self.hour_wh + self.hours_wh + self._started()

    def week_wh(self):
        """Wh discharged over the last 7 to 8 days of run time."""
        return self.hour_wh + self.today_wh + self.days_wh + self._started()

    def left_wh(self, cfg):
        """Wh the owner's budgets still allow (the smaller of the day's and the week's), or
        NO_BUDGET when neither is set."""
        left = NO_BUDGET
        limit = cfg.budget_day_wh
        if limit != NO_BUDGET:
            left = max(0, limit - self.day_wh())
        limit = cfg.budget_week_wh
        if limit != NO_BUDGET:
            week = max(0, limit - self.week_wh())
            if left == NO_BUDGET or week < left:
                left = week
        return left

    def spent(self, cfg):
        """SPENT_DAY and SPENT_WEEK bits: the budgets that allow nothing more now."""
        bits = 0
        if cfg.budget_day_wh != NO_BUDGET and self.day_wh() >= cfg.budget_day_wh:
            bits |= SPENT_DAY
        if cfg.budget_week_wh != NO_BUDGET and self.week_wh() >= cfg.budget_week_wh:
            bits |= SPENT_WEEK
        return bits

    def closes(self, cfg):
        """Whether the budget closes discharge now: spent, or waiting for a save."""
        left = self.left_wh(cfg)
        if left == NO_BUDGET:
            return False
        return left == 0 or self.durable and self.unsaved_wh >= _HOLD_WH

    # -- on flash ---------------------------------------------------------------------

    def save_due(self):
        return self.unsaved_wh >= _SAVE_WH or self.rolled or self.unsaved_s >= _CLOCK_SAVE_S

    def state(self):
        """What to save: the counters, oldest first, with RESERVE_WH more in the hour under
        way than counted. Call `saved()` once it is on flash."""
        hours = [self.hours[(self._hour + i) % _HOURS] for i in range(_HOURS)]
        days = [self.days[(self._day + i) % _DAYS] for i in range(_DAYS)]
        return {"format": FORMAT, "hours": hours, "days": days,
                "hour_wh": self.hour_wh + self._started() + RESERVE_WH,
                "hour_of_day": self.hour_of_day, "second": self.second}

    def saved(self):
        """The last `state()` is on flash."""
        self.unsaved_wh = 0
        self.unsaved_s = 0
        self.rolled = False

    def restore(self, state):
        """The counters a `state()` saved (ValueError when it is not one): the reserve
        counted as discharged, and discharge under a budget waits for the next save."""
        if type(state) is not dict or state.get("format") != FORMAT:
            raise ValueError("not a budget of format %d" % FORMAT)
        hours, days = state.get("hours"), state.get("days")
        values = (state.get("hour_wh"), state.get("hour_of_day"), state.get("second"))
        if type(hours) is not list or len(hours) != _HOURS or type(days) is not list \
                or len(days) != _DAYS or not _counts(hours + days + [values[0]]) \
                or type(values[1]) is not int or not 0 <= values[1] < _HOURS \
                or type(values[2]) is not int or not 0 <= values[2] < _HOUR_S:
            raise ValueError("its counters are out of range")
        for i in range(_HOURS):
            self.hours[i] = hours[i]
        for i in range(_DAYS):
            self.days[i] = days[i]
        self._hour = self._day = 0
        self.hours_wh = sum(hours)
        self.days_wh = sum(days)
        self.hour_wh, self.hour_of_day, self.second = values
        self.today_wh = sum(hours[_HOURS - self.hour_of_day:]) if self.hour_of_day else 0
        self._ms = self._wms = self._ws = 0
        self.unsaved_s = 0
        self.rolled = False
        self.hold()

    def hold(self):
        """Discharge under a budget waits for the next save (at boot: what was discharged
        since the last save is covered by the reserve on flash once, not once a boot)."""
        self.unsaved_wh = _HOLD_WH

    def assume_spent(self, wh):
        """Counters that could not be read: count `wh` in the hour under way, so that the
        budgets stay spent until it has aged out of the day and the week."""
        self.hour_wh += wh
        self.hold()


def _counts(values):
    """Whether every one of `values` is a Wh count a pile could have made (a day at 1 MW is
    24e6 Wh), so that every sum of them stays a small int on 32 bits."""
    for value in values:
        if type(value) is not int or not 0 <= value < 1 << 25:
            return False
    return True
