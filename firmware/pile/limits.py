"""The safety envelope: the most the pile may charge and discharge right now.

Pure integer arithmetic (W, permille SOC, 0.1 degC), no I/O, no allocation: the
caller owns one Envelope and passes it back every decision, which also carries the
battery-hot latch that gives the derating its hysteresis. Every intermediate
value stays below 2**30 so it remains a small int on the 32-bit boards.

A reasons bit (DESIGN section 5) is set whenever its rule limits either
direction below the converter rating at this decision, binding or not.
"""

from micropython import const

from pile.telemetry import STATUS_ANY_FAULT, STATUS_EV_CONNECTED

REASON_SOC_FLOOR = const(1 << 0)
REASON_SOC_CEILING = const(1 << 1)
REASON_DEPARTURE_RESERVE = const(1 << 2)
REASON_BATTERY_HOT = const(1 << 3)
REASON_BATTERY_COLD = const(1 << 4)
REASON_CONVERTER_HOT = const(1 << 5)
REASON_SITE_IMPORT_CAP = const(1 << 6)
REASON_SITE_EXPORT_CAP = const(1 << 7)
REASON_METER_LOST = const(1 << 8)
REASON_EV_LIMIT = const(1 << 9)
REASON_CONVERTER_FAULT = const(1 << 10)
REASON_STOPPED = const(1 << 11)
REASON_SETPOINT_EXPIRED = const(1 << 12)
REASON_RAMPING = const(1 << 13)
REASON_NO_EV = const(1 << 14)
REASON_FREQ_RESPONSE = const(1 << 15)  # extension: a frequency response is under way
REASON_FREQ_INVALID = const(1 << 16)  # extension: one is asked, the frequency is unusable
REASON_V2G_BUDGET = const(1 << 17)  # extension: the owner's V2G budget closes discharge
REASON_SITE_SHARE = const(1 << 18)  # extension: a site group's allowance or fallback share

MAX_POWER_W = const(1000000)  # no rating, cap or request is taken above this
NO_DEPARTURE = const(-1)
_LONG_S = const(1209600)  # two weeks: any longer charge time means "charge now"


class Inputs:
    """What the envelope depends on besides telemetry and config, updated in place each
    decision so computing it allocates nothing."""

    def __init__(self):
        self.site_w = None  # W, + import; None without a meter reading
        self.meter_age_ms = 0  # age of that reading
        self.reserve_x10 = NO_DEPARTURE  # departure reserve SOC in permille
        self.departure_left_s = 0  # seconds to departure; negative once passed
        self.stopped = False  # the stop latch
        self.converter_lost = False  # the converter stopped answering
        self.budget_closed = False  # the owner's V2G budget is spent (pile/budget.py)
        # a site group's share of the connection's caps (pile/siteshare.py's SiteShare: its
        # import_w and export_w, the allowance or the fallback share); None alone
        self.share = None


class Envelope:
    def __init__(self):
        self.max_charge = 0  # W, >= 0
        self.max_discharge = 0  # W, >= 0
        self.reasons = 0
        self.must_charge = False  # departure reserve: charge regardless of the setpoint
        self.battery_hot = False  # latched at cutoff, released below the resume temperature


def _bounded(value):
    if value < 0:
        return 0
    return MAX_POWER_W if value > MAX_POWER_W else value


def _derated(rating, temp, start, end):
    """Linear derating of `rating`: full at `start`, zero at `end` (0.1 degC)."""
    if temp <= start:
        return rating
    if temp >= end:
        return 0
    return rating * (end - temp) // (end - start)


def compute(env, tel, cfg, inputs):
    """Fill `env` from converter telemetry `tel`, config `cfg` and the other `inputs`."""
    site_w = inputs.site_w
    reserve_x10 = inputs.reserve_x10
    rated_c = _bounded(tel.rated_charge)
    rated_d = _bounded(tel.rated_discharge)
    charge = rated_c
    discharge = rated_d
    reasons = 0
    soc = tel.soc

    if inputs.stopped:
        reasons |= REASON_STOPPED
    if inputs.converter_lost or tel.status & STATUS_ANY_FAULT or tel.fault_code:
        reasons |= REASON_CONVERTER_FAULT
    if not tel.status & STATUS_EV_CONNECTED:
        reasons |= REASON_NO_EV
    if reasons:
        charge = discharge = 0

    if soc <= cfg.min_soc_x10:
        discharge = 0
        reasons |= REASON_SOC_FLOOR
    if soc >= cfg.max_soc_x10:
        charge = 0
        reasons |= REASON_SOC_CEILING

    ev_c = _bounded(tel.ev_max_charge)
    ev_d = _bounded(tel.ev_max_discharge)
    if ev_c < rated_c or ev_d < rated_d:
        reasons |= REASON_EV_LIMIT
    charge = min(charge, ev_c)
    discharge = min(discharge, ev_d)

    temp = tel.battery_temp
    if env.battery_hot:
        env.battery_hot = temp >= cfg.battery_resume_c_x10
    else:
        env.battery_hot = temp >= cfg.battery_cutoff_c_x10
    if env.battery_hot:
        charge = discharge = 0
        reasons |= REASON_BATTERY_HOT
    elif temp > cfg.battery_derate_c_x10:
        start = cfg.battery_derate_c_x10
        end = cfg.battery_cutoff_c_x10
        charge = min(charge, _derated(rated_c, temp, start, end))
        discharge = min(discharge, _derated(rated_d, temp, start, end))
        reasons |= REASON_BATTERY_HOT
    if temp < cfg.battery_min_charge_c_x10:
        charge = 0
        reasons |= REASON_BATTERY_COLD

    temp = tel.converter_temp
    if temp > cfg.converter_derate_c_x10:
        start = cfg.converter_derate_c_x10
        end = cfg.converter_cutoff_c_x10
        charge = min(charge, _derated(rated_c, temp, start, end))
        discharge = min(discharge, _derated(rated_d, temp, start, end))
        reasons |= REASON_CONVERTER_HOT

    share = inputs.share
    stale = site_w is None or inputs.meter_age_ms > cfg.meter_stale_s * 1000
    if share is not None and (site_w is None or not stale):
        pass  # in a site group the share stands for the caps (the leader's meter sets them)
    elif stale:
        discharge = 0
        charge = min(charge, cfg.no_meter_charge_w)
        reasons |= REASON_METER_LOST
    else:
        other_load = site_w - tel.power  # what the site draws without the pile
        cap = _bounded(cfg.site_import_limit_w - other_load)
        if cap < rated_c:
            reasons |= REASON_SITE_IMPORT_CAP
        charge = min(charge, cap)
        cap = _bounded(other_load + cfg.site_export_limit_w)
        if cap < rated_d:
            reasons |= REASON_SITE_EXPORT_CAP
        discharge = min(discharge, cap)

    if inputs.budget_closed:
        discharge = 0
        reasons |= REASON_V2G_BUDGET

    env.must_charge = False
    if reserve_x10 != NO_DEPARTURE and reserve_x10 < cfg.owner_reserve_soc_x10:
        reserve_x10 = cfg.owner_reserve_soc_x10  # no departure's reserve is below the owner's
    reserved = reserve_x10 != NO_DEPARTURE and soc <= reserve_x10
    if reserved:
        discharge = 0
        reasons |= REASON_DEPARTURE_RESERVE

    if share is not None:  # last: the share learns what every other rule leaves (its report)
        share.free_charge = charge
        share.free_discharge = discharge
        if share.import_w < rated_c or share.export_w < rated_d:
            reasons |= REASON_SITE_SHARE
        charge = min(charge, share.import_w)  # 0..MAX_POWER_W, checked where they came in
        discharge = min(discharge, share.export_w)

    if reserved and soc < reserve_x10:  # charged in time, at what the share leaves
        needed_s = _charge_time_s(soc, reserve_x10, charge, cfg)
        env.must_charge = inputs.departure_left_s <= needed_s

    env.max_charge = charge
    env.max_discharge = discharge
    env.reasons = reasons


def _charge_time_s(soc, target_x10, power, cfg):
    """Seconds to charge from `soc` to `target_x10` at `power`, with the configured margin."""
    if power <= 0:
        return _LONG_S
    energy_wh = (target_x10 - soc) * cfg.battery_capacity_wh // 1000
    seconds = energy_wh * 3600 // power
    if seconds > _LONG_S:
        return _LONG_S
    return seconds + seconds * cfg.departure_margin_pct // 100
