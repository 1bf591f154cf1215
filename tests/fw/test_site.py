"""A site group's allowances (pile/site.py) and the water filling they share with the
aggregator (pile/share.py): docs/site-group.md's worked example, a member lost, the
meter lost, and random groups (CPython and MicroPython; the hypothesis properties are
tests/test_site_properties.py)."""

import random

from pile.share import fill
from pile.site import Member, allowances, without_meter


def group(*heard):
    """docs/site-group.md's three piles: 11 kW both ways, shares 14/13/13 and 4/3.5/3.5 kW,
    each wanting to discharge 11 kW and discharging 4 kW now."""
    members = [Member("pile-a", 14000, 4000), Member("pile-b", 13000, 3500),
               Member("pile-c", 13000, 3500)]
    for i, m in enumerate(members):
        m.heard = heard[i] if heard else True
        m.power = -4000
        m.max_charge = m.max_discharge = 11000
        m.wanted = -11000
    return members


def test_the_worked_example_shares_the_export_headroom_evenly():
    members = group()
    site_w = 2000 - 12000  # the site's own 2 kW, the piles' 12 kW out
    headroom = allowances(members, site_w, 40000, 11000)
    assert headroom == (40000 - 2000, 2000 + 11000)
    assert [m.allow_export for m in members] == [4334, 4333, 4333]
    assert [m.allow_import for m in members] == [11000, 11000, 11000]  # room to start


def test_a_moving_load_is_taken_to_go_on_moving_where_that_costs_headroom():
    members = group()
    site_w = 2000 - 12000
    # the load fell 1.5 kW since the reading before: 1.5 kW less export headroom
    assert allowances(members, site_w, 40000, 11000, -1500) == (38000, 13000 - 1500)
    assert sum(m.allow_export for m in members) == 11500
    # it rose 1.5 kW: 1.5 kW less import headroom, the export headroom as it is
    assert allowances(group(), site_w, 40000, 11000, 1500) == (38000 - 1500, 13000)


def test_wants_first_then_the_rest_levelled():
    members = group()
    members[0].wanted = -1000  # the aggregator asks pile-a for little
    allowances(members, 2000 - 12000, 40000, 11000)
    exports = [m.allow_export for m in members]
    assert sum(exports) == 13000 and exports[0] >= 1000
    assert exports[1] == exports[2] == 6000  # both want more than the level: levelled
    members = group()
    members[0].wanted = members[1].wanted = 0
    members[2].max_discharge = 2000  # its envelope stops it lower
    allowances(members, 20000, 40000, 11000)  # export headroom: 20 + 12 + 11 = 43 kW
    assert [m.allow_export for m in members] == [11000, 11000, 2000]


def test_a_member_not_heard_is_counted_at_the_most_it_may_take():
    members = group(True, False, True)
    members[1].allow_export = 4333  # what it was sent last period: it may still hold it
    # the meter's -10 kW holds pile-b's power, unknown: from 4333 W out to 13 kW in
    assert allowances(members, 2000 - 12000, 40000, 11000)[1] == 0
    assert members[1].allow_export == 3500 and members[1].allow_import == 13000  # its share
    assert members[0].allow_export + members[2].allow_export == 0
    big = group(True, False, True)  # 50 kW of the site's own load: room for both
    _, export_w = allowances(big, 50000 - 12000, 60000, 30000)
    assert export_w == 50000 - 4000 + 30000 - (13000 + 3500)
    assert big[0].allow_export == big[2].allow_export == 11000


def test_the_meter_lost_cuts_the_group_to_the_no_meter_rule():
    members = group()
    allowances(members, -10000, 40000, 11000)
    without_meter(members, 3680)
    assert [(m.allow_import, m.allow_export) for m in members] == [(3680, 0)] * 3
    assert members[0].prev_export == 4334  # still counted while it may hold it


def test_fill_is_integer_and_levels():
    assert fill(10, [3, 10, 10], [0, 0, 0]) == [3, 4, 3]
    assert fill(7, [5, 5], [4, 0]) == [2, 5]  # level 5 and one watt left: lowest index
    assert fill(0, [5], [0]) == [0]
    assert sum(fill(1000001, [600000, 600000], [0, 0])) == 1000001
    # the aggregator's wear-fair bases are floats: all of the amount still goes out
    assert fill(5567, [1470, 4098], [2627.6376171529796, 0.0]) == [1470, 4097]


def test_random_groups_keep_the_caps():
    random.seed(29)
    rng = random
    for _ in range(300):
        members = []
        for i in range(rng.randint(2, 8)):
            m = Member("p%d" % i, rng.randint(0, 11000), rng.randint(0, 11000))
            m.heard = rng.random() < 0.8
            m.max_charge = rng.randint(0, 22000)
            m.max_discharge = rng.randint(0, 22000)
            m.power = rng.randint(-m.max_discharge, m.max_charge)
            m.wanted = rng.randint(-m.max_discharge, m.max_charge)
            m.allow_import, m.allow_export = rng.randint(0, 22000), rng.randint(0, 22000)
            members.append(m)
        site_w = rng.randint(-100000, 100000)
        caps = rng.randint(0, 100000), rng.randint(0, 100000)
        reserved = [m.reserved() for m in members]
        import_w, export_w = allowances(members, site_w, caps[0], caps[1])
        heard = [m for m in members if m.heard]
        for m in heard:
            assert 0 <= m.allow_import <= m.max_charge and 0 <= m.allow_export <= m.max_discharge
        assert sum(m.allow_import for m in heard) <= import_w
        assert sum(m.allow_export for m in heard) <= export_w
        load = site_w - sum(m.power for m in heard)  # the site and the piles not heard
        unheard = sum(reserved[i][0] + reserved[i][1] for i in range(len(members))
                      if not members[i].heard)
        assert import_w == max(0, caps[0] - load - unheard)
        assert export_w == max(0, load + caps[1] - unheard)
