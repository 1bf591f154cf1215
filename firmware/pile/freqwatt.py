"""Frequency-watt: the power a pile adds to its baseline while the grid is off nominal.

Two ways to say it, docs/grid-services.md: a curve of (frequency, W) points, linear in
between and flat beyond its ends (OCPP 2.1 `v2xFreqWattCurve`, added to the baseline),
or droop parameters (SunSpec 711, IEEE 1547): a deadband over and under nominal, then
the rating per `droop` % of nominal frequency. The response moves towards its target
no faster than the open-loop response time allows (a full-rating step takes that long,
a smaller one less), and it is only computed from a fresh, plausible reading: a silent
converter or a frequency outside 45-65 Hz drops it to 0 at once. The caller clamps the
sum into the envelope. Integers only (mHz, W), every product below 2**30, no allocation.
"""

from micropython import const

from pile.limits import MAX_POWER_W

MODE_OFF = const(0)
MODE_DROOP = const(1)
MODE_CURVE = const(2)
MIN_MHZ = const(45000)  # outside 45..65 Hz a reading is implausible, not a grid event
MAX_MHZ = const(65000)
MIN_POINTS = const(2)
MAX_POINTS = const(20)


def check_curve(points):
    """The curve as a tuple of (mHz, W) pairs; ValueError unless `points` is a list of 2..20
    [mHz, W] integer pairs with strictly rising frequencies within 45..65 Hz."""
    if type(points) is not list or not MIN_POINTS <= len(points) <= MAX_POINTS:
        raise ValueError("a frequency-watt curve is a list of 2..20 [mHz, W] points")
    curve = []
    last = 0
    for point in points:
        if type(point) is not list or len(point) != 2 or type(point[0]) is not int \
                or type(point[1]) is not int:
            raise ValueError("a curve point is [mHz, W], two integers")
        mhz, watts = point
        if not MIN_MHZ <= mhz <= MAX_MHZ or mhz <= last:
            raise ValueError("curve frequencies must rise strictly within 45000..65000 mHz")
        if not -MAX_POWER_W <= watts <= MAX_POWER_W:
            raise ValueError("curve power must be within +-%d W" % MAX_POWER_W)
        curve.append((mhz, watts))
        last = mhz
    return tuple(curve)


def _scaled(value, part, whole):
    """value * part // whole for 0 <= part <= whole < 2**15, without a product that leaves
    the small ints of a 32-bit port (value up to +-2 MW)."""
    return value // whole * part + value % whole * part // whole


def curve_w(curve, mhz):
    """The curve's power at `mhz`: linear between points, flat beyond the ends."""
    f0, w0 = curve[0]
    if mhz <= f0:
        return w0
    for f1, w1 in curve:
        if mhz <= f1:
            return w0 + _scaled(w1 - w0, mhz - f0, f1 - f0)  # f1 > f0: check_curve
        f0, w0 = f1, w1
    return w0


def droop_w(mhz, rated_c, rated_d, cfg):
    """IEEE 1547 droop: less charge (more discharge) under nominal, more charge over it,
    `droop` % of nominal frequency past the deadband being the whole rating."""
    nominal = cfg.freq_nominal_hz * 1000
    low = nominal - cfg.freq_db_under_mhz
    if mhz < low:
        span = nominal * cfg.freq_droop_under_pct // 100
        return -_scaled(rated_d, min(low - mhz, span), span)
    high = nominal + cfg.freq_db_over_mhz
    if mhz > high:
        span = nominal * cfg.freq_droop_over_pct // 100
        return _scaled(rated_c, min(mhz - high, span), span)
    return 0


class FreqWatt:
    """The response's state between decisions: its target and where it has got to."""

    def __init__(self):
        self.target = 0  # W the curve or droop asks for at the latest reading
        self.response = 0  # W, moving towards target within the response time
        self.valid = False  # the latest reading was fresh and plausible
        self._held_ms = 0  # how long the response has not moved: what it may move by now

    def update(self, mode, curve, mhz, fresh, rated_c, rated_d, cfg, dt):
        """The response (W) for this decision, `dt` ms after the last one."""
        self.valid = fresh and MIN_MHZ <= mhz <= MAX_MHZ
        if mode == MODE_OFF or not self.valid:
            self.target = self.response = self._held_ms = 0
            return 0
        if mode == MODE_CURVE:
            target = curve_w(curve, mhz)
        else:
            target = droop_w(mhz, rated_c, rated_d, cfg)
        self.target = target
        # A full-rating step takes the whole response time. The time counts from the
        # response's last move, not the last decision: a reading that comes right after
        # a decision (the tick's transaction) may still move it by the whole time it held.
        window = cfg.freq_response_ms
        held = min(self._held_ms + dt, window)
        last = self.response
        if held >= window:
            self.response = target
        else:
            step = _scaled(max(rated_c, rated_d, 1), held, window)
            self.response += max(-step, min(step, target - last))
        self._held_ms = 0 if self.response != last else held
        return self.response
