"""Hypothesis strategies for safety scenarios: valid configs, wild telemetry, host requests."""

from hypothesis import strategies as st
from pile.limits import MAX_POWER_W


@st.composite
def configs(draw):
    min_soc = draw(st.integers(0, 95))
    max_soc = draw(st.integers(min_soc + 1, 100))
    derate = draw(st.integers(10, 60))
    cutoff = draw(st.integers(derate + 1, 80))
    conv_derate = draw(st.integers(30, 110))
    return {
        "min_soc": min_soc,
        "max_soc": max_soc,
        "reserve_soc": draw(st.integers(min_soc, max_soc)),
        "battery_capacity_wh": draw(st.integers(5000, 200000)),
        "departure_margin_pct": draw(st.integers(0, 100)),
        "battery_derate_c": derate,
        "battery_cutoff_c": cutoff,
        "battery_resume_c": draw(st.integers(0, cutoff - 1)),
        "battery_min_charge_c": draw(st.integers(-30, min(20, derate - 1))),
        "converter_derate_c": conv_derate,
        "converter_cutoff_c": draw(st.integers(conv_derate + 1, min(130, conv_derate + 100))),
        "site_import_limit_w": draw(st.integers(0, 60000)),
        "site_export_limit_w": draw(st.integers(0, 30000)),
        "no_meter_charge_w": draw(st.integers(0, 20000)),
        "ramp_w_per_s": draw(st.integers(10, 50000)),
        "fallback": draw(st.sampled_from(["idle", "charge"])),
        "meter_stale_s": draw(st.integers(2, 10)),
        "converter_fault_polls": draw(st.integers(1, 5)),
        "freq_response": draw(st.sampled_from(["off", "droop"])),
        "freq_nominal_hz": draw(st.sampled_from([50, 60])),
        "freq_db_under_mhz": draw(st.integers(17, 1000)),
        "freq_db_over_mhz": draw(st.integers(17, 1000)),
        "freq_droop_under_pct": draw(st.integers(2, 12)),
        "freq_droop_over_pct": draw(st.integers(2, 12)),
        "freq_response_ms": draw(st.sampled_from([0, 200, 250, 1000, 10000])),
    }


def near(*edges):
    """Values at and around the thresholds the rules switch on, or anywhere."""
    close = [edge + delta for edge in edges for delta in (-1, 0, 1)]
    return st.sampled_from(close) | st.integers(min(close) - 50, max(close) + 50)


@st.composite
def mostly(draw, usual, rare):
    """`usual` nine times in ten: faults stay present without drowning the healthy cases.

    (one_of(usual, usual, ..., rare) would not do: it weighs distinct branches, not copies.)
    """
    return draw(rare if draw(st.integers(0, 9)) == 9 else usual)


_HEALTHY = 0b110001  # ready, EV connected, contactor closed
power = st.integers(-40000, 40000)


@st.composite
def segment(draw, cfg):
    """A stretch of ticks with steady readings (real telemetry is sticky), one request first."""
    x10 = 10
    rated_c = draw(st.integers(0, 30000) | st.just(11000) | st.just(4294967295))
    tel = {
        "status": draw(mostly(st.just(_HEALTHY), st.integers(0, 127))),
        "fault_code": draw(mostly(st.just(0), st.integers(0, 65535))),
        "power": draw(power),
        "soc": draw(near(cfg["min_soc"] * x10, cfg["max_soc"] * x10, cfg["reserve_soc"] * x10)
                    | mostly(st.integers(0, 1000), st.integers(0, 65535))),
        "battery_temp": draw(near(cfg["battery_min_charge_c"] * x10, cfg["battery_derate_c"] * x10,
                                  cfg["battery_resume_c"] * x10, cfg["battery_cutoff_c"] * x10)
                             | st.integers(cfg["battery_min_charge_c"] * x10,
                                           cfg["battery_derate_c"] * x10)),
        "converter_temp": draw(mostly(st.just(400), near(cfg["converter_derate_c"] * x10,
                                                         cfg["converter_cutoff_c"] * x10))),
        "ev_max_charge": draw(st.integers(0, 655350) | st.just(rated_c)),
        "ev_max_discharge": draw(st.integers(0, 655350) | st.just(20000)),
        "rated_charge": rated_c,
        "rated_discharge": draw(st.integers(0, 30000) | st.just(11000)),
        "grid_freq": draw(mostly(near(4996, 5004, 5996, 6004) | st.integers(4500, 6500),
                                 st.integers(0, 65535))),  # 0.01 Hz
    }
    other = draw(st.integers(-60000, 60000))
    dt = draw(st.just(250) | st.integers(0, 1500))
    first = {
        "dt": dt,
        "tel": tel,
        "ok": draw(mostly(st.just(True), st.booleans())),
        "site": draw(mostly(st.just(other + tel["power"]), st.none())),
        "age": draw(mostly(st.integers(0, 1000), near(cfg["meter_stale_s"] * 1000))),
        "estop": draw(mostly(st.just(False), st.booleans())),
        "action": draw(mostly(st.none() | setpoints, st.sampled_from(["stop", "release"]))),
    }
    repeats = draw(st.integers(0, 24))
    return [first] + [dict(first, action=None) for _ in range(repeats)]


curves = st.lists(st.tuples(st.integers(45000, 65000),
                            mostly(st.integers(-30000, 30000), st.integers(-MAX_POWER_W,
                                                                           MAX_POWER_W))),
                  min_size=2, max_size=20, unique_by=lambda p: p[0]).map(
    lambda points: [list(p) for p in sorted(points)])
setpoints = st.tuples(
    mostly(st.integers(-20000, 20000), st.integers(-MAX_POWER_W - 10, MAX_POWER_W + 10)),
    mostly(st.integers(1, 8), st.integers(-5, 4000)),
    mostly(st.none() | st.integers(1, 20000), st.integers(-10, 700000)),
    mostly(st.none(), st.integers(-5, 105)),
    # frequency-watt: (mode, curve, reversion s); mostly valid, sometimes anything
    mostly(st.one_of(st.tuples(st.none(), st.none(), st.none()),
                     st.tuples(st.just(1), st.none(), st.none() | st.integers(1, 8)),
                     st.tuples(st.just(2), curves, st.none() | st.integers(1, 8))),
           st.tuples(st.none() | st.integers(-1, 3), st.none() | curves,
                     st.none() | st.integers(-1, 10))),
)


@st.composite
def scenarios(draw):
    cfg = draw(configs())
    return {
        "config": cfg,
        "start": draw(st.integers(0, (1 << 30) - 1)),
        "steps": [step for part in draw(st.lists(segment(cfg), min_size=1, max_size=8))
                  for step in part],
    }
