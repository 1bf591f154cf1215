"""A site group's member side (pile/siteshare.py): the leader's allowance, taken by the
member's SiteSession, as one more input of the envelope with its own reason bit, the
fallback share after two periods without one, never more than the leader computed;
allowances replayed, forged or sent with another key refused, the site key taken by the
site link alone and the allowance by nothing else (CPython and MicroPython)."""

from fwtest import RATED, Host, telemetry
from pile import limits
from pile.app import SLOT_SITE, Pile
from pile.cbor import loads
from pile.cose import mac0_verify
from pile.meter import NEVER
from pile.protocol import (
    ERR_AUTH,
    ERR_OUT_OF_RANGE,
    ERR_REPLAY,
    ERR_UNKNOWN_TYPE,
    ERROR,
    SETPOINT,
)
from pile.siteshare import SITE_ALLOWANCE, SITE_REPORT, SiteSession, SiteShare

SITE = b"S" * 32
LINK = b"L" * 32
PERIOD_MS = 1000


class Member:
    """pile-b of docs/site-group.md: no meter, fallback shares 13 kW in and 3.5 kW out,
    an EV that takes 11 kW both ways, a converter that does what it is told, the clock
    driven by the test."""

    def __init__(self, group=True):
        pile = Pile("pile-b")
        pile.set_key(LINK)
        pile.set_key(SITE, SLOT_SITE)
        pile.tel = telemetry()
        pile.set_config({"ramp_w_per_s": 1000000})
        if group:
            pile.ctl.inputs.share = SiteShare(13000, 3500, PERIOD_MS)
        self.clock = 1000
        pile.now = lambda: self.clock
        self.pile = pile
        self.host = Host(pile, LINK)  # the host link: the aggregator
        self.site = SiteSession(pile)  # the site link: the leader
        self.decide()

    def decide(self, after_ms=0):
        self.clock += after_ms
        pile = self.pile
        pile.tel.power = pile.ctl.decide(self.clock, pile.tel, True, None, NEVER)  # no meter

    def allowance(self, import_w, export_w, key=SITE, seq=None, pile_id="pile-b",
                  session=None):
        """SITE_ALLOWANCE as the leader sends it, to the site link (or `session`); the
        reply, verified with the key that session signs with."""
        data = self.host.request(SITE_ALLOWANCE, {2: import_w, 3: export_w, 4: pile_id,
                                                  5: PERIOD_MS}, seq, key)
        return self.reply((session or self.site).handle(data), session)

    def reply(self, data, session=None):
        if data[:1] != b"\xd1":
            return loads(data)
        return loads(mac0_verify(LINK if session is self.host.session else SITE, data,
                                 self.pile.nonce))

    def envelope(self):
        env = self.pile.ctl.env
        return env.max_charge, env.max_discharge


def test_without_an_allowance_the_fallback_share_stands_for_the_meter():
    member = Member()
    assert member.envelope() == (RATED, 3500)
    reasons = member.pile.ctl.reasons
    assert reasons & limits.REASON_SITE_SHARE and not reasons & limits.REASON_METER_LOST
    alone = Member(group=False)  # a pile alone without a meter: the no-meter rule, as before
    assert alone.envelope() == (3680, 0)
    assert alone.pile.ctl.reasons & limits.REASON_METER_LOST
    assert not alone.pile.ctl.reasons & limits.REASON_SITE_SHARE


def test_the_allowance_is_an_envelope_input_and_is_answered_with_a_report():
    member = Member()
    member.host.send(SETPOINT, {2: -9000, 3: 60})
    member.decide(250)
    report = member.allowance(2000, 4333)
    assert report[0] == SITE_REPORT and report[2] == member.host.seq  # the seq answered
    member.decide(250)
    assert member.envelope() == (2000, 4333)
    assert member.pile.ctl.applied == -4333  # never more than the leader computed
    report = member.allowance(2000, 9500)
    assert report[0] == SITE_REPORT
    assert (report[3], report[4], report[5], report[6]) == (-4333, RATED, RATED, -9000)
    member.decide(250)
    assert member.pile.ctl.applied == -9000  # within the allowance: what was asked


def test_no_valid_allowance_for_two_periods_falls_back_to_the_share_at_once():
    member = Member()
    member.host.send(SETPOINT, {2: -11000, 3: 600})
    member.allowance(11000, 8000)
    member.decide(250)
    assert member.pile.ctl.applied == -8000
    member.decide(2 * PERIOD_MS - 250 - 1)  # still valid: two periods from its arrival
    assert member.pile.ctl.applied == -8000
    member.decide(1)
    assert member.pile.ctl.applied == -3500 and member.envelope() == (RATED, 3500)
    assert member.pile.ctl.inputs.share.fallbacks == 1
    member.allowance(11000, 8000)  # the leader is back
    member.decide(250)
    assert member.pile.ctl.applied == -8000


def test_replayed_forged_and_misdirected_allowances_change_nothing():
    member = Member()
    member.host.send(SETPOINT, {2: -11000, 3: 600})
    sent = member.host.request(SITE_ALLOWANCE, {2: 0, 3: 1000, 4: "pile-b"}, key=SITE)
    member.site.handle(sent)
    member.decide(250)
    assert member.envelope() == (0, 1000)

    def refused(reply, code):
        assert reply[0] == ERROR and reply[3] == code, reply
        member.decide(0)
        assert member.envelope() == (0, 1000)  # the valid allowance still stands

    refused(member.reply(member.site.handle(sent)), ERR_REPLAY)
    refused(member.allowance(20000, 20000, key=b"X" * 32), ERR_AUTH)  # forged
    refused(member.allowance(20000, 20000, key=LINK), ERR_AUTH)  # the aggregator's key
    refused(member.allowance(20000, 20000, key=None), ERR_AUTH)  # unsigned
    refused(member.allowance(20000, 20000, pile_id="pile-c"), ERR_OUT_OF_RANGE)
    refused(member.allowance(-1, 20000), ERR_OUT_OF_RANGE)
    refused(member.allowance(20000, 1000001), ERR_OUT_OF_RANGE)
    host = member.host.session
    refused(member.allowance(20000, 20000, key=LINK, session=host), ERR_UNKNOWN_TYPE)
    refused(member.allowance(20000, 20000, session=host), ERR_AUTH)  # the host link: no
    setpoint = member.host.request(SETPOINT, {2: 11000, 3: 60}, key=SITE)  # site key there
    refused(member.reply(host.handle(setpoint), host), ERR_AUTH)  # the site key asks for
    setpoint = member.host.request(SETPOINT, {2: 11000, 3: 60}, key=SITE)  # nothing else
    refused(member.reply(member.site.handle(setpoint)), ERR_UNKNOWN_TYPE)
    member.decide(2 * PERIOD_MS)  # the replay did not renew it: it runs out on time
    assert member.envelope() == (RATED, 3500)
    assert member.pile.ctl.inputs.share.allowances == 1


def test_a_pile_in_no_group_refuses_an_allowance():
    member = Member(group=False)  # no site link: only its host link could hear one
    host = member.host.session
    assert member.allowance(5000, 5000, session=host)[3] == ERR_AUTH
    assert member.allowance(5000, 5000, key=LINK, session=host)[3] == ERR_UNKNOWN_TYPE
    assert member.envelope() == (3680, 0)


def test_without_a_site_key_the_site_link_takes_nothing():
    member = Member()
    member.pile.set_key(None, SLOT_SITE)
    for key in (None, SITE):
        reply = member.allowance(5000, 5000, key=key)
        assert reply[0] == ERROR and reply[3] == ERR_AUTH, reply
    assert member.pile.seqs[0] == -1  # not even the unsigned slot's seq moved
    assert member.pile.ctl.inputs.share.allowances == 0


def test_the_share_only_narrows_the_envelope():
    member = Member()
    member.pile.tel.soc = 150  # below the SOC floor: no discharge, whatever the allowance
    member.allowance(20000, 20000)
    member.decide(250)
    assert member.envelope() == (RATED, 0)
    assert not member.pile.ctl.reasons & limits.REASON_SITE_SHARE  # not what limits it


def test_a_board_file_with_a_site_part_builds_a_member_with_its_share():
    from fwtest import FreshState
    from pile.firmware import build_pile

    site = {"group": "depot-1", "role": "member", "leader": "pile-a", "import_cap_w": 40000,
            "export_cap_w": 11000, "period_ms": 500, "udp_port": 7710,
            "members": {"pile-a": {"import_w": 14000, "export_w": 4000, "host": "10.0.0.11"},
                        "pile-b": {"import_w": 9000, "export_w": 3500, "host": "10.0.0.12"}}}
    with FreshState() as state:
        board = {"board": "unix_sim", "pile_id": "pile-b", "state_dir": state,
                 "modbus": {"device": "/dev/null", "baud": 115200}}
        assert build_pile(board).ctl.inputs.share is None  # no group: as before
        board["site"] = site
        share = build_pile(board).ctl.inputs.share
        assert (share.share_import, share.share_export, share.period_ms) == (9000, 3500, 500)


def test_the_leader_takes_its_share_for_the_caps_and_the_no_meter_rule_when_stale():
    member = Member()
    pile = member.pile
    pile.ctl.inputs.share.allow(11000, 6000, member.clock)
    member.clock += 250
    # a fresh reading of 9 kW exported: alone with a 0 W export cap it could give nothing
    pile.tel.power = pile.ctl.decide(member.clock, pile.tel, True, -9000, 0)
    assert member.envelope() == (RATED, 6000)
    assert not pile.ctl.reasons & (limits.REASON_SITE_EXPORT_CAP | limits.REASON_METER_LOST)
    member.clock += 250
    pile.ctl.decide(member.clock, pile.tel, True, -9000, 3001)  # stale: the no-meter rule
    assert member.envelope() == (3680, 0)
    assert pile.ctl.reasons & limits.REASON_METER_LOST
