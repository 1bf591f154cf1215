"""The plant's grid frequency, and the oracle rule for a pile's response to it.

A scenario's `grid` section (all optional):

    {"hz": [[t, Hz], ...],        # linear between points; two points at one t make a step
     "noise_mhz": 5, "seed": 1,   # uniform noise on top, repeatable
     "event": "gb-2019-08-09", "event_at": 10,   # a recorded under-frequency event
     "response": {...}}           # what the oracle expects the pile to do (FreqRule)

The converter reports the frequency in register 11 (0.01 Hz, DESIGN section 4).
"""

import random
from dataclasses import dataclass, field

# The shape of the GB event of 9 August 2019 (National Grid ESO's technical report to
# Ofgem, figure of system frequency): a fall to 49.1 Hz in about 15 s after two
# generators tripped, a plateau near 49.2 Hz, a second fall to 48.8 Hz at 76 s (low
# frequency demand disconnection), and a recovery to 50 Hz over about four minutes.
# The points are read off the report's plot and rounded: a reconstruction of its shape,
# not the measurement record. Seconds from the event's start, Hz.
EVENTS = {
    "gb-2019-08-09": [[0, 50.00], [2, 49.95], [15, 49.10], [30, 49.20], [57, 49.20],
                      [76, 48.80], [90, 49.20], [150, 49.70], [240, 50.00]],
}


class GridError(ValueError):
    pass


def frequency_profile(grid, piecewise):
    """A function of scenario time (s) to Hz from a scenario's `grid` section."""
    points = [list(p) for p in grid.get("hz", [[0, 50.0]])]
    if "event" in grid:
        name = grid["event"]
        if name not in EVENTS:
            raise GridError(f"no recorded grid event {name!r}; known: {', '.join(EVENTS)}")
        at = grid.get("event_at", 0)
        points = [p for p in points if p[0] < at] + [[at + t, hz] for t, hz in EVENTS[name]]
    for t, hz in points:
        if not 40 <= hz <= 70:
            raise GridError(f"grid.hz: {hz} Hz at {t} s is no grid frequency (40..70 Hz)")
    clean = piecewise(points, default=50.0)
    noise = grid.get("noise_mhz", 0) / 1000
    if not noise:
        return clean
    rng = random.Random(grid.get("seed", 1))
    return lambda t: clean(t) + rng.uniform(-noise, noise)


@dataclass
class FreqRule:
    """The response the oracle expects: droop (IEEE 1547) or a curve, from the pile's
    baseline power, complete to 90 % within `response_s` plus the pile's reading delay
    (`reaction_s`: half a tick to see the reading, a bus transaction to write it)."""

    nominal_hz: float = 50.0
    db_under_mhz: float = 36.0
    db_over_mhz: float = 36.0
    droop_under_pct: float = 5.0
    droop_over_pct: float = 5.0
    rated_w: float = 11000.0
    curve: list = field(default_factory=list)  # [[mHz, W], ...] instead of droop
    response_s: float = 0.2
    reaction_s: float = 0.3
    tolerance_w: float = 50.0

    def expected_w(self, hz):
        mhz = hz * 1000
        if self.curve:
            points = self.curve
            if mhz <= points[0][0]:
                return points[0][1]
            for (f0, w0), (f1, w1) in zip(points, points[1:], strict=False):
                if mhz <= f1:
                    return w0 + (w1 - w0) * (mhz - f0) / (f1 - f0)
            return points[-1][1]
        nominal = self.nominal_hz * 1000
        if mhz < nominal - self.db_under_mhz:
            span = nominal * self.droop_under_pct / 100
            return -self.rated_w * min(1.0, (nominal - self.db_under_mhz - mhz) / span)
        if mhz > nominal + self.db_over_mhz:
            span = nominal * self.droop_over_pct / 100
            return self.rated_w * min(1.0, (mhz - nominal - self.db_over_mhz) / span)
        return 0.0


class FreqWatch:
    """Tracks excursions and judges the pile's commanded power against `FreqRule`.

    When the expected response moves by more than the tolerance, an excursion starts:
    the baseline is the commanded power just before (the pile may already have answered
    within the plant's step), less the response expected before. Once
    the response time and the reading delay have passed, the commanded power must have
    covered 90 % of the change, unless a limit the plant itself shows holds it (the SOC
    floor or ceiling, the EV's maximum, the site's export or import cap).
    """

    def __init__(self, rule):
        self.rule = rule
        self.expected = 0.0
        self.baseline = None
        self.since = 0.0
        self._commanded = None  # W at the last check

    def shortfall(self, t, hz, plant, limits):
        """How many W the commanded power falls short of 90 % of the response (0 when on
        time, limited or inside the grace), for Oracle._rule."""
        rule = self.rule
        expected = rule.expected_w(hz)
        grace = rule.response_s + rule.reaction_s
        before = plant.commanded_w if self._commanded is None else self._commanded
        self._commanded = plant.commanded_w
        if self.baseline is None or abs(expected - self.expected) > rule.tolerance_w:
            if self.baseline is None or t - self.since > grace:  # the last one had settled
                self.baseline = before - self.expected
            self.since = t
            self.expected = expected
        if t - self.since <= grace:
            return 0.0
        moved, needed = plant.commanded_w - self.baseline, 0.9 * expected
        if expected < 0 and moved > needed + rule.tolerance_w:
            held = (plant.soc * 100 <= limits.min_soc_pct + 0.5
                    or plant.commanded_w <= -plant.ev_max_discharge_w() + rule.tolerance_w
                    or -plant.site_w >= limits.site_export_limit_w - rule.tolerance_w)
            return 0.0 if held else moved - needed
        if expected > 0 and moved < needed - rule.tolerance_w:
            held = (plant.commanded_w >= plant.ev_max_charge_w() - rule.tolerance_w
                    or plant.site_w >= limits.site_import_limit_w - rule.tolerance_w)
            return 0.0 if held else needed - moved
        return 0.0
