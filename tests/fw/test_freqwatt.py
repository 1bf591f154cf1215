from fwtest import RATED, config, raises
from pile import freqwatt, limits
from test_control import Run

CURVE = [[49500, -4000], [49900, 0], [50100, 0], [50500, 4000]]


def response(mhz, cfg=None, mode=freqwatt.MODE_DROOP, curve=None, fresh=True, dt=250):
    return freqwatt.FreqWatt().update(mode, curve, mhz, fresh, RATED, RATED, cfg or config(), dt)


def test_droop_under_and_over_nominal_past_the_deadband():
    # 49.80 Hz: 164 mHz past the 36 mHz deadband, 5 % of 50 Hz (2500 mHz) is the rating
    assert response(49800) == -(RATED * 164 // 2500)
    assert response(50200) == RATED * 164 // 2500
    assert response(49964) == response(50036) == response(50000) == 0
    assert response(47000) == -RATED and response(53000) == RATED  # the rating at most


def test_droop_settings_down_to_17_mhz_and_2_percent():
    cfg = config(freq_db_under_mhz=17, freq_droop_under_pct=2)
    assert response(49800, cfg) == -(RATED * 183 // 1000)
    cfg = config(freq_nominal_hz=60, freq_db_over_mhz=100, freq_droop_over_pct=10)
    assert response(60200, cfg) == RATED * 100 // 6000
    with raises(ValueError):
        config(freq_nominal_hz=55)
    with raises(ValueError):
        config(freq_db_under_mhz=16)


def test_a_curve_is_linear_between_points_and_flat_beyond():
    curve = freqwatt.check_curve(CURVE)
    assert freqwatt.curve_w(curve, 49700) == -2000
    assert freqwatt.curve_w(curve, 50000) == 0
    assert freqwatt.curve_w(curve, 50300) == 2000
    assert freqwatt.curve_w(curve, 45000) == -4000 and freqwatt.curve_w(curve, 65000) == 4000
    assert response(49600, mode=freqwatt.MODE_CURVE, curve=curve) == -3000


def test_big_powers_stay_exact_in_small_integers():
    curve = freqwatt.check_curve([[45000, -1000000], [65000, 1000000]])
    assert freqwatt.curve_w(curve, 55001) == 100  # 2 MW over 20 Hz: 100 W per Hz
    assert freqwatt.curve_w(curve, 64999) == 999900


def test_bad_curves_are_refused():
    for points in ([[50000, 0]], [[50000, 0]] * 21, [[50000, 0], [50000, 10]],
                   [[50100, 0], [50000, 10]], [[44999, 0], [50000, 0]],
                   [[50000, 0], [65001, 0]], [[50000, 0], [50100, 1000001]],
                   [[50000, 0], [50100]], [[50000, 0.5], [50100, 0]], "49000:0", None):
        with raises(ValueError):
            freqwatt.check_curve(points)


def test_a_stale_or_implausible_reading_drops_the_response_at_once():
    fw = freqwatt.FreqWatt()
    cfg = config()
    assert fw.update(freqwatt.MODE_DROOP, None, 49500, True, RATED, RATED, cfg, 250) < 0
    assert fw.update(freqwatt.MODE_DROOP, None, 49500, False, RATED, RATED, cfg, 250) == 0
    assert not fw.valid
    for mhz in (44999, 65001, 0):
        assert response(mhz) == 0
        fw.update(freqwatt.MODE_DROOP, None, mhz, True, RATED, RATED, cfg, 250)
        assert not fw.valid and fw.response == 0


def test_the_response_time_paces_a_full_rating_step():
    fw = freqwatt.FreqWatt()
    cfg = config(freq_response_ms=1000)
    steps = [fw.update(freqwatt.MODE_DROOP, None, 47000, True, RATED, RATED, cfg, 250)
             for _ in range(5)]
    assert steps == [-RATED // 4, -RATED // 2, -3 * RATED // 4, -RATED, -RATED]


def test_a_setpoints_droop_rides_on_top_inside_the_envelope():
    run = Run()
    run.setpoint(0, freq_mode=freqwatt.MODE_DROOP)
    run.tel.grid_freq = 4980
    assert run.step() == -(RATED * 164 // 2500)
    assert run.ctl.freq_w == run.step()
    assert run.ctl.reasons & limits.REASON_FREQ_RESPONSE
    run.tel.grid_freq = 4700
    assert run.step() == -5000  # the export cap: discharge covers the 5 kW load only
    assert run.ctl.freq_w == -5000 and run.ctl.reasons & limits.REASON_SITE_EXPORT_CAP


def test_the_response_is_not_slowed_by_the_setpoint_ramp():
    run = Run(cfg=config(ramp_w_per_s=10))
    run.setpoint(-4000, freq_mode=freqwatt.MODE_DROOP)
    assert run.step() == -2  # 10 W/s: the base creeps
    run.tel.grid_freq = 4980
    assert run.step() == -4 - RATED * 164 // 2500  # the response in one decision
    assert run.ctl.base == -4 and run.ctl.reasons & limits.REASON_RAMPING


def test_a_departure_that_forces_a_charge_is_not_reduced():
    run = Run(soc=300)
    run.setpoint(0, departure_s=600, reserve_soc=80, freq_mode=freqwatt.MODE_DROOP)
    run.tel.grid_freq = 4900
    charge = run.steps(12)
    assert run.ctl.env.must_charge and charge == run.ctl.env.max_charge
    assert run.ctl.freq_w == 0


def test_the_setpoints_response_reverts_to_the_configs():
    run = Run(cfg=config(freq_response="droop"))
    run.setpoint(0, ttl_s=10, freq_mode=freqwatt.MODE_CURVE, freq_curve=CURVE, freq_revert_s=2)
    run.tel.grid_freq = 4970
    assert run.step() == -2000  # the curve
    run.steps(8)
    assert run.step() == -(RATED * (300 - 36) // 2500)  # two seconds on: the config's droop
    run = Run()
    run.setpoint(0, ttl_s=2, freq_mode=freqwatt.MODE_CURVE, freq_curve=CURVE)
    run.tel.grid_freq = 4970
    assert run.step() == -2000
    assert run.steps(8) == 0  # the setpoint expired, and its curve with it; config: off
    assert not run.ctl.reasons & limits.REASON_FREQ_RESPONSE


def test_an_unusable_frequency_is_reported_and_answered_with_the_base():
    run = Run(cfg=config(freq_response="droop"))
    run.setpoint(-3000)
    run.steps(8)
    run.tel.grid_freq = 0  # a converter that does not measure it
    assert run.step() == -3000
    assert run.ctl.reasons & limits.REASON_FREQ_INVALID
    run.tel.grid_freq = 4980
    run.converter_ok = False  # no fresh reading this decision
    assert run.step() == -3000 and run.ctl.reasons & limits.REASON_FREQ_INVALID


def test_bad_frequency_fields_are_refused_and_change_nothing():
    run = Run()
    run.setpoint(-2000)
    for extra in ({"freq_mode": 3}, {"freq_mode": 0}, {"freq_curve": CURVE},
                  {"freq_revert_s": 5}, {"freq_mode": 1, "freq_curve": CURVE},
                  {"freq_mode": 2}, {"freq_mode": 2, "freq_curve": [[50000, 0]]},
                  {"freq_mode": 1, "freq_revert_s": 61}, {"freq_mode": 1, "freq_revert_s": 0}):
        with raises(ValueError):
            run.setpoint(1000, **extra)
        assert run.ctl.setpoint == -2000 and run.ctl._freq_mode == freqwatt.MODE_OFF


def test_time_the_response_held_counts_towards_its_next_move():
    fw = freqwatt.FreqWatt()
    cfg = config()  # 200 ms for the rating
    assert fw.update(freqwatt.MODE_DROOP, None, 50000, True, RATED, RATED, cfg, 250) == 0
    # the tick's fresh reading, 3 ms after the decision before its transaction
    assert fw.update(freqwatt.MODE_DROOP, None, 49800, True, RATED, RATED, cfg, 3) == -721
