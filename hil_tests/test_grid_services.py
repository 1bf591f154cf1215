"""Frequency-watt through the pile's real interfaces: the converter's frequency register
changes as the grid's would, and what counts is what the pile then writes."""

import pytest
from pile import limits
from pile_under_test import RATED
from pilectl import wire
from pilectl.client import PileError

DROOP_AT_49_80 = -(RATED * 164 // 2500)  # 164 mHz past the 36 mHz deadband, 5 % droop


async def test_droop_answers_an_under_frequency_step_on_top_of_the_setpoint(pile):
    await pile.client.config_set({"freq_response": "droop"})
    await pile.client.setpoint(-3000, 60)
    await pile.until(lambda t: t["applied_w"] == -3000, what="the setpoint applied")
    pile.plant.hold_grid(49.80)
    tel = await pile.until(lambda t: t["freq_response_w"] == DROOP_AT_49_80,
                           what="the droop response")
    assert tel["grid_freq_mhz"] == 49800 and tel["applied_w"] == -3000 + DROOP_AT_49_80
    assert tel["reasons"] & limits.REASON_FREQ_RESPONSE
    assert pile.plant.commanded_w == -3000 + DROOP_AT_49_80
    pile.plant.hold_grid(50.0)
    await pile.until(lambda t: t["applied_w"] == -3000 and t["freq_response_w"] == 0,
                     what="back to the setpoint")
    await pile.client.config_set({"freq_response": "off"})


async def test_a_setpoints_curve_and_an_implausible_frequency(pile):
    curve = [[49500, -4000], [49900, 0], [50100, 0], [50500, 4000]]
    ack = await pile.client.setpoint(1000, 60, freq_mode=wire.FREQ_CURVE, freq_curve=curve)
    assert ack["target_w"] == 1000  # the baseline; the response comes on top
    pile.plant.hold_grid(49.70)
    await pile.until(lambda t: t["applied_w"] == 1000 - 2000, what="the curve's response")
    pile.plant.hold_grid(30.0)  # no grid runs at 30 Hz: a converter's bad reading
    tel = await pile.until(lambda t: t["reasons"] & limits.REASON_FREQ_INVALID,
                           what="the reading refused")
    assert tel["freq_response_w"] == 0
    await pile.until(lambda t: t["applied_w"] == 1000, what="the baseline alone")
    pile.plant.hold_grid(50.0)


async def test_a_bad_curve_is_refused_and_changes_nothing(pile):
    await pile.client.setpoint(-2000, 60)
    for extra in ({"freq_mode": wire.FREQ_CURVE, "freq_curve": [[50000, 0]]},
                  {"freq_mode": wire.FREQ_CURVE, "freq_curve": [[50100, 0], [50000, 0]]},
                  {"freq_mode": 7}, {"freq_mode": wire.FREQ_DROOP, "freq_revert_s": 61}):
        with pytest.raises(PileError) as refused:
            await pile.client.setpoint(3000, 60, **extra)
        assert refused.value.code == wire.ERR_OUT_OF_RANGE, refused.value
    tel = await pile.until(lambda t: t["applied_w"] == -2000, what="the setpoint unchanged")
    assert not tel["reasons"] & limits.REASON_FREQ_RESPONSE
