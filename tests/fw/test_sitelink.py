"""A member's answer to one message of its site link (pile/sitelink.py): HELLO and
SITE_ALLOWANCE only, 20 a second at most; on a bus (`addressed`), which carries every
member's messages and replies, only what is asked of this pile, so that no two members
talk at once (CPython and MicroPython)."""

from fwtest import telemetry
from pile.app import SLOT_SITE, Pile
from pile.cbor import dumps, loads
from pile.cose import mac0_sign, mac0_verify
from pile.protocol import ERR_OUT_OF_RANGE, ERROR, HELLO, SETPOINT
from pile.sitelink import SiteLink
from pile.siteshare import SITE_ALLOWANCE, SITE_REPORT, SiteShare, peek

SITE = b"S" * 32
GROUP = {"group": "depot-1", "role": "member", "leader": "pile-a", "import_cap_w": 40000,
         "export_cap_w": 11000, "members": {"pile-a": {"import_w": 14000, "export_w": 4000},
                                            "pile-b": {"import_w": 13000, "export_w": 3500},
                                            "pile-c": {"import_w": 13000, "export_w": 3500}},
         "bus": {"device": "/dev/null", "baud": 115200}}


def member():
    pile = Pile("pile-b")
    pile.set_key(SITE, SLOT_SITE)
    pile.tel = telemetry()
    pile.ctl.inputs.share = SiteShare(13000, 3500, 1000)
    return pile, SiteLink(pile, None, GROUP)


def allowance(pile, seq, to="pile-b"):
    message = dumps({0: SITE_ALLOWANCE, 1: seq, 2: 5000, 3: 2000, 4: to, 5: 1000})
    return mac0_sign(SITE, message, pile.nonce)


def test_on_a_bus_a_member_answers_only_what_is_asked_of_it():
    pile, link = member()
    assert link.answer(dumps({0: HELLO, 1: 0, 2: "pile-c"}), addressed=True) is None
    hello = peek(link.answer(dumps({0: HELLO, 1: 0, 2: "pile-b"}), addressed=True))
    assert hello[0] == HELLO and hello[4] == pile.nonce
    other = dumps({0: HELLO, 1: 3, 2: "pile-c", 4: b"n" * 8})  # pile-c's reply, heard
    assert link.answer(other, addressed=True) is None
    mine_echoed = dumps({0: HELLO, 1: 3, 2: "pile-b", 4: b"n" * 8})  # a reply, not asked
    assert link.answer(mine_echoed, addressed=True) is None
    assert link.answer(allowance(pile, 5, to="pile-c"), addressed=True) is None
    report = mac0_sign(SITE, dumps({0: SITE_REPORT, 1: 9, 2: 5, 3: 0, 4: 1, 5: 1, 6: 0}),
                       pile.nonce)
    assert link.answer(report, addressed=True) is None  # another member's reply
    reply = loads(mac0_verify(SITE, link.answer(allowance(pile, 6), addressed=True),
                              pile.nonce))
    assert reply[0] == SITE_REPORT and reply[2] == 6
    assert pile.ctl.inputs.share.allowances == 1
    assert link.received == 2 and link.dropped == 0  # what was not its own is not counted


def test_on_the_site_lan_a_misdirected_allowance_is_answered_with_an_error():
    pile, link = member()
    reply = loads(mac0_verify(SITE, link.answer(allowance(pile, 5, to="pile-c")),
                              pile.nonce))
    assert reply[0] == ERROR and reply[3] == ERR_OUT_OF_RANGE
    assert pile.ctl.inputs.share.allowances == 0


def test_a_member_takes_hello_and_allowances_only_and_twenty_a_second():
    pile, link = member()
    assert link.answer(dumps({0: SETPOINT, 1: 1, 2: -11000, 3: 60})) is None
    assert link.dropped == 1 and not pile.ctl.setpoint_live
    answered = [link.answer(dumps({0: HELLO, 1: 0, 2: "pile-b"})) for _ in range(25)]
    assert sum(1 for reply in answered if reply is not None) == 20
    assert link.dropped == 1 + 5
