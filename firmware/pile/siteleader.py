"""A site group's leader: every period, the allowances of pile/site.py sent to the members
over the host link's machinery, and their reports taken back (docs/site-group.md).

Sans-IO: `period(now)` returns the messages to send, one per member; `received(data,
peer)` takes one that came back. To each member the leader is what a host is to a pile:
it learns the member's boot nonce and where to resume its seqs from an unsigned HELLO
(the HELLO that answers is read, not trusted: a false nonce only gets the allowances
refused, and the member falls back to its share), signs every SITE_ALLOWANCE with the
site key over that nonce at a seq above the last, and takes a SITE_REPORT only if it
verifies over the same nonce and answers the seq it waits for. A member that refuses
(ERROR 4 or 5: a reboot, another nonce) is asked for a HELLO again.

The leader's own share is computed with the others' and applied at once. Its meter's
reading is the last one its control step (pile/loop.py's ControlStep) took, while the
Pile's `site_w` says it is fresh (None once stale: then the whole group gets the no-meter
rule, site.without_meter).

The transport starts a period right after each meter reading (`period`): each member is
sent its allowance again and answers within milliseconds with its power, so the reading
(and the leader's own power as the reading took it: the step's `power_at_reading`) and those
reports see the same instant; from them the headroom is shared (`share`) and the new
allowances sent. Shared instead from a reading and reports a period apart, the site's own
load looks as much larger or smaller as the piles moved in between, and the group
see-saws (on the bench: 20 kW exported against an 11 kW cap); shared from the reading
and the reports of the period before, a change of the load waits a period more (on the
bench: 2.7 s over the cap after the load fell by 6 kW).
"""

from micropython import const

from pile import cbor
from pile.app import SLOT_SITE
from pile.cose import CoseError, mac0_open, mac0_sign
from pile.limits import MAX_POWER_W
from pile.protocol import ERR_AUTH, ERR_REPLAY, ERROR, HELLO
from pile.site import Member, allowances, site_load, without_meter
from pile.siteshare import SITE_ALLOWANCE, SITE_REPORT, peek, wanted

_HELLO_NONCE = const(4)
_HELLO_NEXT_SEQ = const(8)


class Peer:
    """One member the leader talks to: its nonce, the seqs, the report awaited."""

    def __init__(self, member, address):
        self.member = member
        self.address = address  # where its messages go: a transport's business
        self.nonce = None  # its boot nonce, from its HELLO
        self.seq = 0  # the last seq sent to it
        self.waiting = None  # the seq whose report is awaited
        self.reported = False  # a valid report came since the last period
        self.reports = 0
        self.refusals = 0


class Leader:
    def __init__(self, pile, step, site, addresses):
        """`step` is the pile's ControlStep (its meter's readings), `site` the board file's
        site part; `addresses` maps each other member's pile id to its transport address."""
        self.pile = pile
        self.step = step
        self.import_cap_w = site["import_cap_w"]
        self.export_cap_w = site["export_cap_w"]
        self.period_ms = pile.ctl.inputs.share.period_ms
        self.members = []
        self.peers = []
        self.me = None
        for pile_id in sorted(site["members"]):
            share = site["members"][pile_id]
            member = Member(pile_id, share["import_w"], share["export_w"])
            self.members.append(member)
            if pile_id == pile.pile_id:
                self.me = member
            else:
                self.peers.append(Peer(member, addresses[pile_id]))
        self.periods = 0
        self.meter_lost = 0  # periods shared by the no-meter rule
        self._reading = None  # W: the meter's reading this period, None when lost
        self._power = 0  # W: the leader's own power then
        self._load = None  # W: the site's own load at the last reading shared, if known

    def period(self, now):
        """A period starts at the meter's reading: the reading and the leader's own power
        as it took them are kept, and every member is sent its allowance again (a HELLO
        while its nonce is not known), so that it answers with its power now. Returns
        [(peer, message bytes)] to send; `share` follows once `ready()`, or soon after."""
        step = self.step
        self._power = power = step.power_at_reading
        fresh = self.pile.site_w is not None and step.load is not None
        self._reading = step.load + power if fresh else None
        for peer in self.peers:
            peer.reported = False
        self.periods += 1
        return self._messages(True)

    def ready(self):
        """Every member the leader can talk to has answered this period's first message."""
        for peer in self.peers:
            if peer.waiting is not None:
                return False
        return True

    def share(self, now):
        """Share the headroom from this period's reading and the reports that answered
        its first messages, apply the leader's own allowance; return [(peer, message
        bytes)]: the new allowances."""
        pile = self.pile
        ctl = pile.ctl
        me = self.me
        me.heard = True
        me.power = self._power  # as the reading took it
        me.max_charge = ctl.inputs.share.free_charge
        me.max_discharge = ctl.inputs.share.free_discharge
        me.wanted = wanted(ctl)
        for peer in self.peers:
            peer.member.heard = peer.reported
        cfg = pile.cfg
        if pile.site_w is None or self._reading is None:
            without_meter(self.members, cfg.no_meter_charge_w)
            self.meter_lost += 1
            self._load = None
        else:
            load = site_load(self.members, self._reading)
            before = self._load
            self._load = load
            allowances(self.members, self._reading,
                       min(self.import_cap_w, cfg.site_import_limit_w),
                       min(self.export_cap_w, cfg.site_export_limit_w),
                       0 if load is None or before is None else load - before)
        ctl.inputs.share.allow(me.allow_import, me.allow_export, now)
        return self._messages(False)

    def _messages(self, hello):
        """Each member's allowance, signed; with `hello`, a HELLO to a member whose nonce
        is not known (or to all, without a site key)."""
        pile = self.pile
        key = pile.keys[SLOT_SITE]
        out = []
        for peer in self.peers:
            if peer.nonce is None or key is None:
                peer.waiting = None
                if hello:
                    # naming the member: on a bus every member hears it
                    out.append((peer, cbor.dumps({0: HELLO, 1: 0, 2: peer.member.pile_id})))
                continue
            peer.seq += 1
            peer.waiting = peer.seq
            m = peer.member
            message = cbor.dumps({0: SITE_ALLOWANCE, 1: peer.seq, 2: m.allow_import,
                                  3: m.allow_export, 4: m.pile_id, 5: self.period_ms})
            out.append((peer, mac0_sign(key, message, peer.nonce, pile.kids[SLOT_SITE])))
        return out

    def received(self, data, peer):
        """One message from `peer`: a HELLO, a SITE_REPORT or an ERROR."""
        msg = peek(data)
        if msg is None:
            return
        mtype = msg.get(0)
        if mtype == HELLO:
            nonce = msg.get(_HELLO_NONCE)
            if msg.get(2) == peer.member.pile_id and type(nonce) is bytes:
                peer.nonce = nonce
                following = msg.get(_HELLO_NEXT_SEQ)
                if type(following) is int and following - 1 > peer.seq:
                    peer.seq = following - 1
        elif mtype == ERROR and msg.get(3) in (ERR_AUTH, ERR_REPLAY):
            peer.refusals += 1
            peer.nonce = None  # ask again: the member rebooted, or the HELLO was false
        elif mtype == SITE_REPORT:
            self._report(data, peer)

    def _report(self, data, peer):
        key = self.pile.keys[SLOT_SITE]
        if key is None or peer.nonce is None or peer.waiting is None:
            return
        try:
            payload = mac0_open((key,), data, peer.nonce)[0]
            msg = cbor.loads(payload)
        except (CoseError, cbor.CBORError, ValueError):
            return
        if type(msg) is not dict or msg.get(0) != SITE_REPORT or msg.get(2) != peer.waiting:
            return
        fields = [msg.get(i) for i in (3, 4, 5, 6)]
        for value in fields:
            if type(value) is not int or not -MAX_POWER_W <= value <= MAX_POWER_W:
                return
        m = peer.member
        m.power, m.max_charge, m.max_discharge, m.wanted = fields
        peer.waiting = None
        peer.reported = True
        peer.reports += 1
