"""Workers sharing a fleet (pilectl/aggregator/shard.py): who owns a pile, and each one's share."""

from hypothesis import given
from hypothesis import strategies as st
from pilectl.aggregator.shard import owner, worker_share

workers_st = st.sets(st.text("abcdefgh-0123456789", min_size=1, max_size=8), min_size=1,
                     max_size=6)
piles_st = st.lists(st.text("pile-0123456789", min_size=1, max_size=10), min_size=1,
                    max_size=60, unique=True)


@given(workers_st, piles_st)
def test_every_pile_has_one_owner_whatever_the_order_of_the_workers(workers, piles):
    for pile in piles:
        found = owner(pile, workers)
        assert found in workers
        assert owner(pile, sorted(workers, reverse=True)) == found


@given(workers_st, piles_st, st.data())
def test_a_worker_leaving_moves_only_its_own_piles(workers, piles, data):
    gone = data.draw(st.sampled_from(sorted(workers)))
    left = workers - {gone}
    for pile in piles:
        before = owner(pile, workers)
        after = owner(pile, left)
        if before != gone:
            assert after == before
        else:
            assert after in left or not left


def test_owners_spread_over_the_workers():
    counts = {}
    for n in range(10000):
        w = owner(f"pile-{n:05d}", ["agg-1", "agg-2", "agg-3"])
        counts[w] = counts.get(w, 0) + 1
    assert all(3000 < c < 3700 for c in counts.values()), counts


reach_st = st.tuples(st.integers(-500000, 0), st.integers(0, 500000))


@given(st.dictionaries(st.text("abc", min_size=1, max_size=3), reach_st, min_size=1,
                       max_size=5), st.integers(-3_000_000, 3_000_000))
def test_the_shares_add_up_to_the_target_clipped_each_inside_its_reach(reaches, target):
    shares = {w: worker_share(target, w, reaches) for w in reaches}
    low = sum(r[0] for r in reaches.values())
    high = sum(r[1] for r in reaches.values())
    assert abs(sum(shares.values()) - min(high, max(low, target))) <= len(reaches)
    for w, share in shares.items():
        assert reaches[w][0] <= share <= reaches[w][1]


def test_a_worker_with_a_bigger_reach_takes_a_bigger_share():
    reaches = {"a": (-100000, 100000), "b": (-50000, 50000)}
    assert worker_share(-60000, "a", reaches) == -40000
    assert worker_share(-60000, "b", reaches) == -20000
