"""Every safety rule and every envelope reason bit, by example (CPython and MicroPython)."""

from fwtest import RATED, config, envelope, telemetry
from pile import limits
from pile.telemetry import STATUS_EV_CONNECTED, STATUS_FAULT, STATUS_INSULATION_FAULT, STATUS_READY

# The default site imports 5 kW with the pile idle: export cap 0 lets V2G cover that load.
LOAD = 5000


def test_healthy_pile_gets_rating_and_local_load():
    env = envelope()
    assert env.max_charge == RATED
    assert env.max_discharge == LOAD
    assert env.reasons == limits.REASON_SITE_EXPORT_CAP
    assert not env.must_charge


def test_soc_floor_stops_discharge_at_and_below_min_soc():
    assert envelope(telemetry(soc=201)).max_discharge == LOAD
    for soc in (200, 150, 0):
        env = envelope(telemetry(soc=soc))
        assert env.max_discharge == 0
        assert env.max_charge == RATED
        assert env.reasons & limits.REASON_SOC_FLOOR


def test_soc_ceiling_stops_charge_at_and_above_max_soc():
    cfg = config(max_soc=90)
    assert envelope(telemetry(soc=899), cfg).max_charge == RATED
    env = envelope(telemetry(soc=900), cfg)
    assert env.max_charge == 0
    assert env.max_discharge == LOAD
    assert env.reasons & limits.REASON_SOC_CEILING


def test_battery_derates_linearly_from_45_to_55_degc():
    assert envelope(telemetry(battery_temp=450)).max_charge == RATED
    env = envelope(telemetry(battery_temp=500))
    assert env.max_charge == RATED // 2
    assert env.reasons & limits.REASON_BATTERY_HOT
    assert envelope(telemetry(battery_temp=525)).max_charge == RATED // 4
    assert envelope(telemetry(battery_temp=550)).max_charge == 0


def test_battery_hot_cut_resumes_only_below_resume_temperature():
    env = envelope(telemetry(battery_temp=550))
    assert env.battery_hot and env.max_discharge == 0
    for temp in (540, 510, 500):
        envelope(telemetry(battery_temp=temp), env=env)
        assert env.max_charge == 0 and env.max_discharge == 0
        assert env.reasons & limits.REASON_BATTERY_HOT
    envelope(telemetry(battery_temp=499), env=env)
    assert not env.battery_hot
    assert env.max_charge == RATED * 51 // 100  # derated: (550 - 499) / 100 of rating


def test_no_charge_below_zero_degc():
    assert envelope(telemetry(battery_temp=0)).max_charge == RATED
    env = envelope(telemetry(battery_temp=-1))
    assert env.max_charge == 0
    assert env.max_discharge == LOAD
    assert env.reasons & limits.REASON_BATTERY_COLD


def test_converter_derates_from_75_to_90_degc():
    assert envelope(telemetry(converter_temp=750)).max_charge == RATED
    env = envelope(telemetry(converter_temp=825))
    assert env.max_charge == RATED // 2
    assert env.reasons & limits.REASON_CONVERTER_HOT
    env = envelope(telemetry(converter_temp=900))
    assert env.max_charge == 0 and env.max_discharge == 0


def test_site_import_cap_subtracts_other_load():
    cfg = config(site_import_limit_w=12000)
    env = envelope(cfg=cfg, site_w=8000)  # pile idle: other load 8 kW
    assert env.max_charge == 4000
    assert env.reasons & limits.REASON_SITE_IMPORT_CAP
    tel = telemetry(power=3000)  # pile charging 3 kW inside the 8 kW site reading
    assert envelope(tel, cfg, site_w=8000).max_charge == 7000


def test_site_export_cap_limits_discharge_to_load_plus_export():
    env = envelope(telemetry(power=-2000), site_w=1000)  # other load 3 kW
    assert env.max_discharge == 3000
    assert env.reasons & limits.REASON_SITE_EXPORT_CAP
    cfg = config(site_export_limit_w=4000)
    assert envelope(telemetry(power=-2000), cfg, site_w=1000).max_discharge == 7000
    assert envelope(site_w=-3000).max_discharge == 0  # solar already exporting


def test_import_cap_below_other_load_allows_no_charge_only_discharge():
    env = envelope(cfg=config(site_import_limit_w=4000), site_w=6000)
    assert env.max_charge == 0
    assert env.max_discharge == 6000


def test_stale_or_missing_meter_means_no_discharge_and_capped_charge():
    for site_w, age in ((None, 0), (5000, 3001)):
        env = envelope(site_w=site_w, meter_age_ms=age)
        assert env.max_discharge == 0
        assert env.max_charge == 3680
        assert env.reasons & limits.REASON_METER_LOST
    assert not envelope(meter_age_ms=3000).reasons & limits.REASON_METER_LOST


def test_ev_limits_apply_below_rating():
    env = envelope(telemetry(ev_max_charge=6000, ev_max_discharge=2000))
    assert env.max_charge == 6000
    assert env.max_discharge == 2000
    assert env.reasons & limits.REASON_EV_LIMIT


def test_converter_rating_bounds_everything():
    cfg = config(site_export_limit_w=100000)
    env = envelope(telemetry(rated_charge=7000, rated_discharge=3000), cfg)
    assert env.max_charge == 7000 and env.max_discharge == 3000
    assert not env.reasons & limits.REASON_EV_LIMIT  # the EV accepts more than the rating


def test_faults_stop_and_unplug_close_the_envelope():
    plugged = STATUS_READY | STATUS_EV_CONNECTED
    fault = limits.REASON_CONVERTER_FAULT
    cases = (
        (telemetry(status=plugged | STATUS_FAULT), False, False, fault),
        (telemetry(status=plugged | STATUS_INSULATION_FAULT), False, False, fault),
        (telemetry(fault_code=17), False, False, fault),
        (telemetry(), False, True, fault),
        (telemetry(), True, False, limits.REASON_STOPPED),
        (telemetry(status=STATUS_READY), False, False, limits.REASON_NO_EV),
    )
    for tel, stopped, lost, bit in cases:
        env = envelope(tel, stopped=stopped, lost=lost)
        assert env.max_charge == 0 and env.max_discharge == 0
        assert env.reasons & bit


def test_departure_reserve_blocks_discharge_at_reserve():
    env = envelope(telemetry(soc=500), reserve_x10=500, departure_left_s=36000)
    assert env.max_discharge == 0
    assert env.reasons & limits.REASON_DEPARTURE_RESERVE
    assert not env.must_charge
    above = envelope(telemetry(soc=501), reserve_x10=500, departure_left_s=36000)
    assert above.max_discharge == LOAD


def test_departure_forces_charge_when_time_is_just_enough():
    # 10 % of 60 kWh = 6000 Wh at 11 kW = 1963 s, plus 10 % margin = 2159 s.
    tel = telemetry(soc=400)
    assert not envelope(tel, reserve_x10=500, departure_left_s=2160).must_charge
    env = envelope(tel, reserve_x10=500, departure_left_s=2159)
    assert env.must_charge
    assert env.reasons & limits.REASON_DEPARTURE_RESERVE
    assert envelope(tel, reserve_x10=500, departure_left_s=-60).must_charge


def test_reasons_bits_match_the_protocol_contract():
    bits = (limits.REASON_SOC_FLOOR, limits.REASON_SOC_CEILING, limits.REASON_DEPARTURE_RESERVE,
            limits.REASON_BATTERY_HOT, limits.REASON_BATTERY_COLD, limits.REASON_CONVERTER_HOT,
            limits.REASON_SITE_IMPORT_CAP,
            limits.REASON_SITE_EXPORT_CAP, limits.REASON_METER_LOST, limits.REASON_EV_LIMIT,
            limits.REASON_CONVERTER_FAULT, limits.REASON_STOPPED, limits.REASON_SETPOINT_EXPIRED,
            limits.REASON_RAMPING, limits.REASON_NO_EV)
    for index, bit in enumerate(bits):
        assert bit == 1 << index


def test_absurd_readings_stay_bounded():
    tel = telemetry(rated_charge=4000000000, ev_max_charge=4000000000, rated_discharge=-5)
    env = envelope(tel, cfg=config(site_import_limit_w=1000000), site_w=0)
    assert env.max_charge == limits.MAX_POWER_W
    assert env.max_discharge == 0
