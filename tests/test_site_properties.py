"""A site group's allowances (pile/site.py), proven over any meter reading, member powers,
envelopes and members not heard from (hypothesis, CPython; tests/fw/test_site.py runs the
same rules on MicroPython)."""

from hypothesis import given, settings
from hypothesis import strategies as st
from pile.site import Member, allowances

WATTS = st.integers(0, 22000)


@st.composite
def members(draw, heard=None):
    group = []
    for i in range(draw(st.integers(2, 8))):
        m = Member(f"p{i}", draw(WATTS), draw(WATTS))
        m.heard = draw(st.booleans()) if heard is None else heard
        m.max_charge, m.max_discharge = draw(WATTS), draw(WATTS)
        m.power = draw(st.integers(-m.max_discharge, m.max_charge))
        m.wanted = draw(st.integers(-30000, 30000))  # asked of it: not always inside
        m.allow_import, m.allow_export = draw(WATTS), draw(WATTS)  # sent last period
        m.prev_import, m.prev_export = draw(WATTS), draw(WATTS)
        group.append(m)
    return group


SITE = st.integers(-200000, 200000)
CAP = st.integers(0, 150000)


@given(members(heard=True), SITE, CAP, CAP, st.integers(-50000, 50000))
def test_allowances_sum_to_at_most_the_headroom_each_inside_its_envelope(group, site_w,
                                                                          import_cap, export_cap,
                                                                          change):
    """`change`: the load's move since the reading before, taken to go on where it costs."""
    allowances(group, site_w, import_cap, export_cap, change)
    load = site_w - sum(m.power for m in group)  # what the site draws without the piles
    import_room = max(0, import_cap - max(load, load + change))
    export_room = max(0, min(load, load + change) + export_cap)
    for m in group:
        assert 0 <= m.allow_import <= m.max_charge
        assert 0 <= m.allow_export <= m.max_discharge
    # all of the headroom is given while the envelopes can take it, none beyond
    assert sum(m.allow_import for m in group) == min(import_room,
                                                     sum(m.max_charge for m in group))
    assert sum(m.allow_export for m in group) == min(export_room,
                                                     sum(m.max_discharge for m in group))


@given(members(), SITE, CAP, CAP, st.data())
def test_the_caps_hold_whatever_the_members_not_heard_do(group, site_w, import_cap,
                                                          export_cap, data):
    """The heard members' allowances keep the site inside its caps for the meter's
    reading, whatever power the members not heard had at that reading and take next
    within what they may hold, unless the headroom could not cover those members alone
    (then the heard members get nothing)."""
    reserved = {m.pile_id: m.reserved() for m in group}
    sent = {m.pile_id: (m.allow_import, m.allow_export) for m in group}
    allowances(group, site_w, import_cap, export_cap)
    heard = [m for m in group if m.heard]
    unheard = [m for m in group if not m.heard]
    at_reading = {m.pile_id: data.draw(st.integers(-reserved[m.pile_id][1],
                                                   reserved[m.pile_id][0])) for m in unheard}
    base = site_w - sum(m.power for m in heard) - sum(at_reading.values())
    most_import = base + sum(m.allow_import for m in heard) + sum(
        reserved[m.pile_id][0] for m in unheard)
    most_export = -base + sum(m.allow_export for m in heard) + sum(
        reserved[m.pile_id][1] for m in unheard)
    assert most_import <= import_cap or sum(m.allow_import for m in heard) == 0
    assert most_export <= export_cap or sum(m.allow_export for m in heard) == 0
    for m in group:  # last period's allowance is still counted next period
        assert (m.prev_import, m.prev_export) == sent[m.pile_id]
    for m in unheard:  # it is sent its fallback share
        assert (m.allow_import, m.allow_export) == (m.share_import, m.share_export)


@given(members(heard=True), SITE, CAP, CAP)
def test_max_min_fair_over_wants_then_envelopes(group, site_w, import_cap, export_cap):
    """No member is held below another's allowance (less one watt of rounding) while it
    wants more or has room, except by its own want or envelope: none starved, none idle
    while another is capped."""
    allowances(group, site_w, import_cap, export_cap)
    for direction in ("import", "export"):
        def got(m, direction=direction):
            return m.allow_import if direction == "import" else m.allow_export

        def envelope(m, direction=direction):
            return m.max_charge if direction == "import" else m.max_discharge

        def want(m, direction=direction):
            w = m.wanted if direction == "import" else -m.wanted
            return min(max(0, w), envelope(m))

        for m in group:
            if got(m) < want(m):  # short of its want: nobody has more than it
                assert all(got(o) <= got(m) + 1 for o in group)
            elif got(m) < envelope(m):  # short of its envelope: levelled with the extras
                assert all(got(o) <= max(want(o), got(m) + 1) for o in group)


RAMP_W_PER_S = 5000  # the default ramp_w_per_s
PERIOD_S = 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.booleans(), min_size=0, max_size=200), st.integers(0, 8000),
       st.integers(0, 8000))
def test_for_any_lost_messages_the_cap_is_passed_by_at_most_one_ramp_for_one_period(
        losses, load_w, later_load_w):
    """Three real firmware Piles (tests/fw/test_siteleader.py's site, deciding four times a
    period at the default ramp), any message to or from a member lost, the site's load
    stepping once: the site never exports more than its cap and one member's ramp for one
    period (5 kW)."""
    from test_siteleader import Site

    site = Site(load_w=load_w, ramp=RAMP_W_PER_S, ticks=4)
    lost = iter(losses)
    site.lost = lambda pile_id: next(lost, False)
    for period in range(16):
        if period == 8:
            site.load_w = later_load_w
        site.period()
    assert max(site.exports) <= 11000 + RAMP_W_PER_S * PERIOD_S, max(site.exports)
