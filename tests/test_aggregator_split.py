"""The aggregator's split (pilectl/aggregator/split.py), proven over random fleets and targets."""

import random

from hypothesis import given, settings
from hypothesis import strategies as st
from pilectl.aggregator.split import Share, fill, split

ids = st.text("abcdefgh0123456789", min_size=1, max_size=6)
shares = st.lists(
    st.builds(Share, pile_id=ids, max_charge_w=st.integers(0, 22000),
              max_discharge_w=st.integers(0, 22000), tier=st.integers(0, 2),
              wear_w=st.floats(0, 5000, allow_nan=False),
              forced_w=st.one_of(st.none(), st.none(), st.integers(0, 11000)),
              budget_left_wh=st.one_of(st.none(), st.just(0), st.integers(1, 50000))),
    max_size=40, unique_by=lambda s: s.pile_id)
targets = st.integers(-600000, 600000)


@given(shares, targets, st.booleans())
def test_no_pile_leaves_its_envelope_and_the_total_is_the_clipped_target(fleet, target, wear):
    result = split(target, fleet, wear_fair=wear)
    for share in fleet:
        if share.forced_w is None:
            assert -share.max_discharge_w <= result.setpoints[share.pile_id] <= share.max_charge_w
            if share.budget_left_wh == 0:  # its owner's V2G budget is spent
                assert result.setpoints[share.pile_id] >= 0
        else:
            assert share.pile_id not in result.setpoints  # not the aggregator's to move
    assert result.planned_w == min(result.high_w, max(result.low_w, target))
    assert result.shortfall_w == target - result.planned_w
    if result.low_w <= target <= result.high_w:
        assert result.shortfall_w == 0


@given(shares, targets)
def test_max_min_fair_within_a_tier_and_tiers_in_order(fleet, target):
    result = split(target, fleet)
    free = [s for s in fleet if s.forced_w is None]
    sign = 1 if result.planned_w - result.forced_w > 0 else -1

    def got(share):
        return sign * result.setpoints[share.pile_id]

    def cap(share):
        return share.max_charge_w if sign > 0 else share.discharge_w

    for tier in {s.tier for s in free}:
        members = [s for s in free if s.tier == tier]
        most = max(got(s) for s in members)
        for share in members:  # a pile below its cap has at most 1 W less than any other
            assert got(share) == cap(share) or got(share) >= most - 1
        later = [s for s in free if s.tier > tier and got(s) > 0]
        if later:  # a later tier only gets power once this one is full
            assert all(got(s) == cap(s) for s in members)


@given(shares, targets, st.booleans(), st.randoms(use_true_random=False))
def test_deterministic_whatever_the_order(fleet, target, wear, rng):
    shuffled = list(fleet)
    rng.shuffle(shuffled)
    assert split(target, fleet, wear).setpoints == split(target, shuffled, wear).setpoints


@settings(max_examples=50)
@given(st.lists(st.floats(0, 50000, allow_nan=False), min_size=2, max_size=12),
       st.integers(1000, 20000))
def test_wear_fair_discharge_levels_the_fleets_wear(initial, target):
    fleet = [f"p{i}" for i in range(len(initial))]
    wear = dict(zip(fleet, initial, strict=True))
    rounds = int((max(initial) - min(initial)) * len(initial) / target) + 3
    for _ in range(rounds):  # each round: the discharge given adds to a pile's wear
        result = split(-target, [Share(p, 0, 30000, wear_w=wear[p]) for p in fleet],
                       wear_fair=True)
        for pile in fleet:
            wear[pile] -= result.setpoints[pile]
    assert max(wear.values()) - min(wear.values()) <= target / len(fleet) + 2


def test_an_example_from_the_docs():
    fleet = [Share("a", 11000, 11000), Share("b", 11000, 2000), Share("c", 11000, 15000, tier=1),
             Share("d", 0, 0, forced_w=7000)]
    result = split(-20000, fleet)
    assert result.setpoints == {"a": -11000, "b": -2000, "c": -14000}
    assert result.planned_w == -20000 and result.forced_w == 7000 and result.shortfall_w == 0


def test_a_pile_whose_budget_is_spent_gives_its_share_to_the_others():
    fleet = [Share("a", 11000, 11000, budget_left_wh=0), Share("b", 11000, 11000),
             Share("c", 11000, 11000, budget_left_wh=2500)]
    result = split(-15000, fleet)
    assert result.setpoints == {"a": 0, "b": -7500, "c": -7500}
    assert result.low_w == -22000 and result.shortfall_w == 0
    assert split(5000, fleet).setpoints["a"] > 0  # it may still charge


def test_fill_of_ten_thousand_piles_rounds_to_the_watt():
    rng = random.Random(7)
    caps = [rng.randint(0, 11000) for _ in range(10000)]
    watts = fill(12345678, caps, [0.0] * len(caps))
    assert sum(watts) == 12345678 and all(0 <= w <= c for w, c in zip(watts, caps, strict=True))
