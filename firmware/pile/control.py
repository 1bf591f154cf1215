"""Setpoint arbitration and the pile state machine: one `decide` per decision point.

The aggregator only ever asks: its setpoint is clamped into the safety envelope,
increases in magnitude are ramped at `ramp_w_per_s`, decreases and safety cuts
apply in the same decision, and a setpoint dies after its ttl, leaving the fallback.
`ControlLoop` (pile/loop.py) calls `decide` at up to three points a control period:
before the tick's converter transaction, after its fresh readings, and after the
mid-tick read. Time comes in as a ticks_ms value on every call, so tests drive the clock.
Each decision also counts the discharge since the last one into the owner's V2G budget
(pile/budget.py), whose run time is these decisions' time, and gives the envelope whether
that budget closes discharge; in a site group, also this pile's share of the connection's
caps (`inputs.share`, a pile/siteshare.py SiteShare, set by the firmware).
"""

from micropython import const

from pile import freqwatt, limits
from pile.budget import Budget
from pile.clock import ticks_diff

STATE_BOOT = const(0)
STATE_IDLE = const(1)
STATE_CHARGING = const(2)
STATE_DISCHARGING = const(3)
STATE_FAULT = const(4)
STATE_STOPPED = const(5)
STATE_NO_EV = const(6)

MAX_TTL_S = const(3600)
MAX_DEPARTURE_S = const(604800)  # one week
_MAX_RAMP_DT_MS = const(1000)  # a stalled loop does not earn a bigger ramp step


class NotReady(Exception):
    """No converter reading yet: the envelope is unknown, so no setpoint can be answered."""


class Controller:
    def __init__(self, cfg):
        self.cfg = cfg
        self.env = limits.Envelope()
        self.state = STATE_BOOT
        self.applied = 0  # W, what the converter is told after this decision
        self.target = 0  # W, the request clamped into the envelope, before ramping
        self.base = 0  # W, the target ramped: `applied` without the frequency response
        self.freq = freqwatt.FreqWatt()
        self.freq_w = 0  # W of `applied` that is frequency response, after clamping
        self.reasons = 0
        self.setpoint = 0
        self.setpoint_live = False
        self.inputs = limits.Inputs()
        self.stopped = False
        self.estop = False
        self.failed_polls = 0
        self.sessions_ended = 0  # unplugs that dropped a live setpoint or a departure
        self.budget = Budget()  # the owner's V2G budget: what was discharged, day and week
        self.uptime_s = 0
        self._ms = 0
        self._last = None
        self._setpoint_at = 0
        self._ttl_ms = 0
        self._departure_at_s = 0
        self._seen_converter = False
        self._plugged = False  # an EV was connected at the last decision
        self._tel = None  # the readings of the last decision
        self._freq_mode = freqwatt.MODE_OFF  # asked by the live setpoint (OFF: the config's)
        self._freq_curve = None
        self._freq_ms = 0  # the setpoint's response reverts to the config's after this

    # -- requests from the host -------------------------------------------------

    def set_setpoint(self, power, ttl_s, now, departure_s=None, reserve_soc=None,
                     freq_mode=None, freq_curve=None, freq_revert_s=None):
        """Accept a setpoint; return (target, reasons): what the pile will do, clamped into
        the envelope with this setpoint's own departure and reserve, before ramping and
        before any frequency response (`freq_mode` droop or curve: added on top of the
        setpoint until the setpoint expires or `freq_revert_s` has passed).

        Raises ValueError, changing nothing, when a field is out of range, and NotReady
        before the converter has been read.
        """
        if not _within(power, -limits.MAX_POWER_W, limits.MAX_POWER_W):
            raise ValueError("power must be an integer within +-%d W" % limits.MAX_POWER_W)
        if not _within(ttl_s, 1, MAX_TTL_S):
            raise ValueError("ttl must be 1..%d s" % MAX_TTL_S)
        if departure_s is not None and not _within(departure_s, 1, MAX_DEPARTURE_S):
            raise ValueError("departure must be 1..%d s from now" % MAX_DEPARTURE_S)
        if reserve_soc is not None:
            if not _within(reserve_soc, 0, 100):
                raise ValueError("reserve SOC must be 0..100 %")
            if departure_s is None and self.inputs.reserve_x10 == limits.NO_DEPARTURE:
                raise ValueError("a reserve SOC needs a departure time")
        curve = _freq_request(freq_mode, freq_curve, freq_revert_s, ttl_s)
        if not self._seen_converter:
            raise NotReady("no converter reading yet: ask again in a moment")
        self._freq_mode = freq_mode or freqwatt.MODE_OFF
        self._freq_curve = curve
        self._freq_ms = (freq_revert_s or ttl_s) * 1000
        self.setpoint = power
        self.setpoint_live = True
        self._setpoint_at = now
        self._ttl_ms = ttl_s * 1000
        if departure_s is not None:
            self._departure_at_s = self.uptime_s + departure_s
            if reserve_soc is None:
                reserve_soc = self.cfg.reserve_soc
        inputs = self.inputs
        if reserve_soc is not None:
            inputs.reserve_x10 = max(reserve_soc * 10, self.cfg.min_soc_x10)
        # the envelope again with this departure: a reserve may forbid discharge or force a
        # charge from now on, and the ACK must say so
        inputs.departure_left_s = self._departure_at_s - self.uptime_s
        limits.compute(self.env, self._tel, self.cfg, inputs)
        return self._arbitrate(power), self.env.reasons

    def ttl_left_s(self, now):
        if not self.setpoint_live:
            return 0
        return max(0, (self._ttl_ms - ticks_diff(now, self._setpoint_at) + 999) // 1000)

    def stop(self):
        """Latch the stop; the ACK already reports 0 W, written at the next tick."""
        self.stopped = True
        self.inputs.stopped = True  # a setpoint ACKed before the next tick is clamped too
        self.target = 0
        self.reasons |= limits.REASON_STOPPED

    def release(self):
        """Release the stop latch; refused (False) while the E-stop input is active."""
        if self.estop:
            return False
        self.stopped = False
        self.inputs.stopped = False  # a setpoint ACKed before the next tick may have power
        self.reasons &= ~limits.REASON_STOPPED  # so the ACK no longer reports it
        return True

    # -- a decision point -------------------------------------------------------

    def decide(self, now, tel, converter_ok, site_w, meter_age_ms, estop=False):
        """Decide with the latest readings; return the power to write to the converter (W)."""
        dt = 0 if self._last is None else ticks_diff(now, self._last)
        self._last = now
        self._ms += dt
        if self._ms >= 1000:
            self.uptime_s += self._ms // 1000
            self._ms %= 1000

        # since the last decision: the larger of the discharge it commanded and the one the
        # converter measured (when it answered), into the owner's budget
        discharged = -self.applied
        if converter_ok and -tel.power > discharged:
            discharged = -tel.power
        self.budget.run(dt, min(discharged, limits.MAX_POWER_W))

        self._tel = tel
        self.estop = estop
        if estop:
            self.stopped = True
        if converter_ok:
            self.failed_polls = 0
            self._seen_converter = True
        else:
            self.failed_polls += 1
        lost = self.failed_polls >= self.cfg.converter_fault_polls

        inputs = self.inputs
        inputs.site_w = site_w
        inputs.meter_age_ms = meter_age_ms
        inputs.departure_left_s = self._departure_at_s - self.uptime_s
        inputs.stopped = self.stopped
        inputs.converter_lost = lost
        inputs.budget_closed = self.budget.closes(self.cfg)
        share = inputs.share  # a site group's, brought up to `now`
        if share is not None:
            share.apply(now)
        env = self.env
        limits.compute(env, tel, self.cfg, inputs)
        plugged = not env.reasons & limits.REASON_NO_EV
        if self._plugged and not plugged:  # an unplug ends the session: the next car starts
            if self.setpoint_live or inputs.reserve_x10 != limits.NO_DEPARTURE:  # idle
                self.sessions_ended += 1
            self.setpoint_live = False
            inputs.reserve_x10 = limits.NO_DEPARTURE
        self._plugged = plugged

        if self.setpoint_live and ticks_diff(now, self._setpoint_at) >= self._ttl_ms:
            self.setpoint_live = False
        if self.setpoint_live:
            request = self.setpoint
        elif self.cfg.fallback == "charge":
            request = env.max_charge
        else:
            request = 0
        target = self._arbitrate(request)
        self.target = target
        step = self.cfg.ramp_w_per_s * min(dt, _MAX_RAMP_DT_MS) // 1000
        base = self.base = _ramp(self.base, target, step)
        mode = self._freq_mode_now(now)
        response = self.freq.update(mode, self._freq_curve, tel.grid_freq * 10, converter_ok,
                                    min(tel.rated_charge, limits.MAX_POWER_W),
                                    min(tel.rated_discharge, limits.MAX_POWER_W), self.cfg, dt)
        # on top of the ramped base, inside the envelope; never against a departure's charge
        applied = base if env.must_charge else self._arbitrate(base + response)
        self.applied = applied
        self.freq_w = applied - base

        reasons = env.reasons
        if not self.setpoint_live:
            reasons |= limits.REASON_SETPOINT_EXPIRED
        if base != target:
            reasons |= limits.REASON_RAMPING
        if mode != freqwatt.MODE_OFF:
            if not self.freq.valid:
                reasons |= limits.REASON_FREQ_INVALID
            elif self.freq.target or response:
                reasons |= limits.REASON_FREQ_RESPONSE
        self.reasons = reasons
        self.state = self._next_state(lost)
        return self.applied

    def _freq_mode_now(self, now):
        """The live setpoint's frequency response until it reverts, else the config's."""
        if self._freq_mode != freqwatt.MODE_OFF:
            if self.setpoint_live and ticks_diff(now, self._setpoint_at) < self._freq_ms:
                return self._freq_mode
            self._freq_mode = freqwatt.MODE_OFF  # reverted, expired or unplugged
            self._freq_curve = None
        return freqwatt.MODE_DROOP if self.cfg.freq_response == "droop" else freqwatt.MODE_OFF

    def _arbitrate(self, request):
        env = self.env
        if env.must_charge:
            return env.max_charge
        if request > env.max_charge:
            return env.max_charge
        if request < -env.max_discharge:
            return -env.max_discharge
        return request

    def _next_state(self, lost):
        if self.stopped:
            return STATE_STOPPED
        if lost:
            return STATE_FAULT
        if not self._seen_converter:
            return STATE_BOOT
        if self.env.reasons & limits.REASON_CONVERTER_FAULT:
            return STATE_FAULT
        if self.env.reasons & limits.REASON_NO_EV:
            return STATE_NO_EV
        if self.applied > 0:
            return STATE_CHARGING
        if self.applied < 0:
            return STATE_DISCHARGING
        return STATE_IDLE


def _within(value, low, high):
    return type(value) is int and low <= value <= high


def _freq_request(mode, curve, revert_s, ttl_s):
    """A setpoint's frequency-response fields checked: its curve (a tuple) or None."""
    if mode is None:
        if curve is not None or revert_s is not None:
            raise ValueError("a frequency curve or reversion time needs a frequency mode")
        return None
    if not _within(mode, freqwatt.MODE_DROOP, freqwatt.MODE_CURVE):
        raise ValueError("frequency mode must be 1 (droop) or 2 (curve)")
    if revert_s is not None and not _within(revert_s, 1, ttl_s):
        raise ValueError("frequency reversion must be 1..ttl s")
    if mode == freqwatt.MODE_DROOP:
        if curve is not None:
            raise ValueError("a curve is for frequency mode 2")
        return None
    return freqwatt.check_curve(curve)


def _ramp(applied, target, step):
    """Move from `applied` toward `target`: cuts at once, rises by at most `step`.

    Reversing direction cuts to zero first, then ramps from there.
    """
    if target >= 0:
        if applied < 0:
            applied = 0
        return target if target <= applied else min(target, applied + step)
    if applied > 0:
        applied = 0
    return target if target >= applied else max(target, applied - step)
