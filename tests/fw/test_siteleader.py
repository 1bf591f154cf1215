"""A site group's leader (pile/siteleader.py) with two members, each a real Pile with its
own SiteSession (pile/siteshare.py), signing and verifying as on the site LAN, the leader's
meter read by its real ControlStep (pile/loop.py), the transport left out
(tests/test_site_link.py has it over UDP): HELLO then allowances, the members' envelopes
following them, a member lost, a member rebooted, the meter lost, forged and replayed
reports (CPython and MicroPython)."""

from fwtest import RATED, telemetry
from pile.app import SLOT_SITE, Pile
from pile.cbor import dumps
from pile.cose import mac0_sign
from pile.loop import ControlStep
from pile.meter import NEVER
from pile.siteleader import Leader
from pile.siteshare import SITE_REPORT, SiteSession, SiteShare

SITE = b"S" * 32
PERIOD_MS = 1000
GROUP = {"group": "depot-1", "role": "leader", "leader": "pile-a", "import_cap_w": 40000,
         "export_cap_w": 11000, "period_ms": PERIOD_MS, "udp_port": 7710,
         "members": {"pile-a": {"import_w": 14000, "export_w": 4000, "host": "10.0.0.11"},
                     "pile-b": {"import_w": 13000, "export_w": 3500, "host": "10.0.0.12"},
                     "pile-c": {"import_w": 13000, "export_w": 3500, "host": "10.0.0.13"}}}


def a_pile(pile_id, clock, ramp=1000000):
    pile = Pile(pile_id)
    pile.set_key(SITE, SLOT_SITE)
    pile.tel = telemetry()
    pile.set_config({"ramp_w_per_s": ramp, "site_export_limit_w": 11000,
                     "site_import_limit_w": 40000})
    share = GROUP["members"][pile_id]
    pile.ctl.inputs.share = SiteShare(share["import_w"], share["export_w"], PERIOD_MS)
    pile.now = lambda: clock[0]
    return pile


class Site:
    """pile-a leads pile-b and pile-c behind a site drawing `load_w` of its own; every pile
    is asked to discharge 11 kW and its converter does what it is told, deciding `ticks`
    times a period. `lost(pile_id)` says whether a message to or from a member is lost."""

    def __init__(self, load_w=2000, ramp=1000000, ticks=1):
        self.clock = [1000]
        self.load_w = load_w
        self.ticks = ticks
        self.lost = lambda pile_id: False
        self.exports = []  # W the site exported at each decision
        self.piles = {p: a_pile(p, self.clock, ramp) for p in GROUP["members"]}
        self.sessions = {p: SiteSession(self.piles[p]) for p in ("pile-b", "pile-c")}
        self.step = ControlStep(self.piles["pile-a"])  # its meter's readings
        self.leader = Leader(self.piles["pile-a"], self.step, GROUP,
                             {"pile-b": "b", "pile-c": "c"})
        self.alive = {"pile-b": True, "pile-c": True}
        self.meter = True
        self.decide()
        for pile in self.piles.values():
            pile.ctl.set_setpoint(-11000, 3600, self.clock[0])
        self.clock[0] += 250
        self.decide()

    def site_w(self):
        return self.load_w + sum(p.tel.power for p in self.piles.values())

    def decide(self):
        leader = self.piles["pile-a"]
        for pile in self.piles.values():
            if pile is leader:
                site_w, age = (self.site_w(), 0) if self.meter else (None, NEVER)
                pile.tel.power = pile.ctl.decide(self.clock[0], pile.tel, True, site_w, age)
                pile.site_w = site_w
            else:
                pile.tel.power = pile.ctl.decide(self.clock[0], pile.tel, True, None, NEVER)
        self.exports.append(-self.site_w())

    def period(self):
        """One period: the meter is read, the members answer the leader's first messages
        with their powers as the meter saw them, the leader shares, then every pile
        decides."""
        if self.meter:
            leader = self.piles["pile-a"]
            leader.site_w = self.site_w()
            self.step.meter_polled(self.clock[0], leader.site_w, leader.tel.power)
        for messages in (self.leader.period, self.leader.share):  # the poll, then the share
            for peer, data in messages(self.clock[0]):
                pile_id = peer.member.pile_id
                if self.alive[pile_id] and not self.lost(pile_id):
                    reply = self.sessions[pile_id].handle(data)
                    if not self.lost(pile_id):
                        self.leader.received(reply, peer)
        for _ in range(self.ticks):
            self.decide()
            self.clock[0] += PERIOD_MS // self.ticks

    def powers(self):
        return [self.piles[p].tel.power for p in sorted(self.piles)]


def test_hello_first_then_allowances_that_hold_the_export_cap():
    site = Site()
    assert site.powers() == [-4000, -3500, -3500]  # the fallback shares: 11 kW in all
    site.period()  # HELLOs only: the leader learns the nonces
    assert [p.nonce for p in site.leader.peers] == [site.piles["pile-b"].nonce,
                                                    site.piles["pile-c"].nonce]
    for _ in range(4):
        site.period()
        assert -site.site_w() <= 11000  # never above the export cap at the connection
    assert sum(site.powers()) == -13000 and max(site.powers()) - min(site.powers()) <= 1
    assert all(p.reports for p in site.leader.peers)


def test_a_member_lost_is_counted_over_its_range_and_the_cap_holds():
    site = Site(load_w=30000)  # room for all three: 30 + 11 kW of export headroom
    for _ in range(4):
        site.period()
    assert site.powers() == [-RATED] * 3
    site.alive["pile-c"] = False
    for _ in range(4):
        site.period()
        assert -site.site_w() <= 11000
    # pile-c holds its last allowance for two periods, then its share
    assert site.piles["pile-c"].tel.power == -3500
    assert site.leader.peers[1].member.heard is False
    site.alive["pile-c"] = True
    for _ in range(3):
        site.period()
    assert site.powers() == [-RATED] * 3


def test_a_rebooted_member_is_asked_for_its_new_nonce():
    site = Site()
    for _ in range(3):
        site.period()
    reborn = a_pile("pile-b", site.clock)
    site.piles["pile-b"] = reborn
    site.decide()
    reborn.ctl.set_setpoint(-11000, 3600, site.clock[0])
    site.sessions["pile-b"] = SiteSession(reborn)
    site.period()  # refused: signed over the old nonce
    assert site.leader.peers[0].refusals == 1 and site.leader.peers[0].nonce is None
    site.period()  # HELLO
    site.period()  # an allowance again
    assert site.leader.peers[0].nonce == reborn.nonce
    assert reborn.ctl.inputs.share.allowances >= 1


def test_the_meter_lost_cuts_the_group_to_the_no_meter_rule():
    site = Site()
    for _ in range(3):
        site.period()
    site.meter = False
    site.decide()
    site.period()
    site.period()
    assert site.powers() == [0, 0, 0]  # no export at all
    assert all(p.ctl.env.max_charge == 3680 for p in site.piles.values())
    assert site.leader.meter_lost == 2


def test_forged_and_replayed_reports_are_not_taken():
    site = Site()
    site.period()
    site.period()
    peer = site.leader.peers[0]
    heard = peer.reports
    site.leader.period(site.clock[0])  # sent; its report not in yet
    seq = peer.waiting
    lie = dumps({0: SITE_REPORT, 1: 99, 2: seq, 3: 0, 4: RATED, 5: RATED, 6: -RATED})
    site.leader.received(mac0_sign(b"X" * 32, lie, peer.nonce), peer)  # forged
    assert peer.reports == heard and peer.waiting == seq
    old = mac0_sign(SITE, dumps({0: SITE_REPORT, 1: 99, 2: seq - 1, 3: 0, 4: RATED,
                                 5: RATED, 6: -RATED}), peer.nonce)
    site.leader.received(old, peer)  # answers an earlier seq: a replay
    assert peer.reports == heard
    good = mac0_sign(SITE, dumps({0: SITE_REPORT, 1: 99, 2: seq, 3: 0, 4: RATED, 5: RATED,
                                  6: -RATED}), peer.nonce)
    site.leader.received(good, peer)  # the one awaited: taken
    assert peer.reports == heard + 1 and peer.waiting is None


def test_without_a_site_key_the_leader_only_says_hello():
    site = Site()
    site.piles["pile-a"].set_key(None, SLOT_SITE)
    for _ in range(3):
        site.period()
    # the members keep their fallback shares; the leader, hearing from neither, counts
    # each over its whole range (13 + 3.5 kW) and leaves itself no export
    assert site.powers() == [0, -3500, -3500]
    assert all(p.ctl.inputs.share.allowances == 0
               for p in site.piles.values() if p.pile_id != "pile-a")
