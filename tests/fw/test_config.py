"""Config schema: defaults, ranges, cross-key rules, all-or-nothing (CPython and MicroPython)."""

from fwtest import raises
from pile.config import CHOICES, INTEGERS, Config, ConfigError, allowed


def test_defaults_follow_the_design():
    cfg = Config()
    assert (cfg.min_soc, cfg.max_soc, cfg.reserve_soc) == (20, 100, 50)
    assert (cfg.battery_derate_c, cfg.battery_cutoff_c, cfg.battery_resume_c) == (45, 55, 50)
    assert (cfg.converter_derate_c, cfg.converter_cutoff_c) == (75, 90)
    assert cfg.site_export_limit_w == 0
    assert cfg.ramp_w_per_s == 5000
    assert cfg.tick_ms == 250 and cfg.telemetry_period_s == 1
    assert cfg.meter_stale_s == 3 and cfg.converter_fault_polls == 3
    assert cfg.fallback == "idle"
    assert cfg.min_soc_x10 == 200 and cfg.battery_cutoff_c_x10 == 550


def test_every_key_accepts_its_bounds_on_its_own():
    for key, (_, low, high, _) in INTEGERS.items():
        for value in (low, high):
            try:
                Config({key: value})
            except ConfigError as exc:
                assert "out of range" not in str(exc)  # only a cross-key rule may refuse


def test_out_of_range_names_the_key_and_range():
    with raises(ConfigError) as caught:
        Config().update({"min_soc": 120})
    assert caught.value.key == "min_soc"
    assert "0..100 %" in str(caught.value)


def test_wrong_types_and_unknown_keys_are_refused():
    for change in ({"min_soc": "20"}, {"min_soc": 20.0}, {"min_soc": True},
                   {"fallback": "discharge"}, {"link_key": "x"}):
        with raises(ConfigError):
            Config().update(change)
    with raises(ConfigError):
        Config().update([("min_soc", 30)])


def test_a_refused_change_changes_nothing():
    cfg = Config()
    with raises(ConfigError) as caught:
        cfg.update({"max_soc": 90, "ramp_w_per_s": 0})
    assert caught.value.key == "ramp_w_per_s"
    assert cfg.max_soc == 100 and cfg.max_soc_x10 == 1000


def test_cross_key_rules():
    refused = (
        ({"min_soc": 60, "max_soc": 60}, "min_soc"),
        ({"max_soc": 15}, "max_soc"),
        ({"battery_derate_c": 55}, "battery_derate_c"),
        ({"battery_resume_c": 55}, "battery_resume_c"),
        ({"converter_cutoff_c": 70}, "converter_cutoff_c"),
        ({"reserve_soc": 10}, "reserve_soc"),
        ({"meter_stale_s": 1}, "meter_stale_s"),
    )
    for change, key in refused:
        with raises(ConfigError) as caught:
            Config().update(change)
        assert caught.value.key == key


def test_valid_change_updates_scaled_values():
    cfg = Config()
    cfg.update({"min_soc": 30, "battery_cutoff_c": 60, "fallback": "charge"})
    assert cfg.min_soc_x10 == 300
    assert cfg.battery_cutoff_c_x10 == 600
    assert cfg.values["fallback"] == "charge"


def test_allowed_describes_ranges_and_choices():
    assert allowed("ramp_w_per_s") == "10..1000000 W/s"
    assert allowed("fallback") == "one of " + ", ".join(CHOICES["fallback"][1])
