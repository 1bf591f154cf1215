"""A site group's member side: the share of the connection's caps this pile may take.

The leader's allowance (SITE_ALLOWANCE, docs/site-group.md) holds for two of the
group's periods from its arrival; without a valid one the pile takes its fallback share
from the board file at once. Either is one more input of the safety envelope
(limits.Inputs.share, reasons bit 18), so it only ever narrows what the other rules
allow, and the pile never takes more than the leader computed for it while an allowance
is valid. Time comes in as ticks_ms.

The member's end of the site link is a SiteSession: the protocol Session verifying with
the site key alone, taking SITE_ALLOWANCE alone, and answering with SITE_REPORT signed
with the site key; the host link's Sessions neither know that key nor take that type.
This module, like every site module, is loaded only by a pile whose board file has a
`site` part (`join`).
"""

from micropython import const

from pile import cbor
from pile.app import KEY_NAMES, SLOT_SITE
from pile.clock import ticks_diff
from pile.limits import MAX_POWER_W
from pile.protocol import ERR_AUTH, ERR_OUT_OF_RANGE, Refused, Session, field
from pile.siteboard import SITE_PERIOD_MS

# extension of protocol v1 (DESIGN section 5, docs/protocol.md): leader -> member, the reply
SITE_ALLOWANCE = const(19)  # 2 import W, 3 export W, 4 member pile id, 5 period ms
SITE_REPORT = const(20)  # 2 seq answered, 3 power, 4 max charge, 5 max discharge (without the
# share), 6 wanted W, 7 reasons
SITE_KEY = KEY_NAMES[SLOT_SITE]  # the site key's name in CONFIG_SET, provisioned over USB
_COSE_MAC0 = const(17)

_VALID_PERIODS = const(2)


def join(pile, board):
    """Make `pile` a member of the board file's site group: its share of the connection's
    caps becomes one more input of its envelope (pile/limits.py's Inputs.share)."""
    site = board["site"]
    mine = site["members"][board["pile_id"]]
    pile.ctl.inputs.share = SiteShare(mine["import_w"], mine["export_w"],
                                      site.get("period_ms", SITE_PERIOD_MS))


def wanted(ctl):
    """W: what the pile of Controller `ctl` would do without the site group's share (a site
    report's field): the live setpoint or the fallback, inside the envelope without it."""
    share = ctl.inputs.share
    if ctl.env.must_charge:
        return share.free_charge
    if ctl.setpoint_live:
        request = ctl.setpoint
    else:
        request = share.free_charge if ctl.cfg.fallback == "charge" else 0
    return max(-share.free_discharge, min(share.free_charge, request))


def peek(data):
    """A message's map, signed or not, read without verifying it (a HELLO or an ERROR the
    member signed with its own key, which the leader does not hold); None if it is none."""
    try:
        msg = cbor.loads(data)
        if isinstance(msg, cbor.Tag) and msg.tag == _COSE_MAC0:
            msg = cbor.loads(msg.value[2])
    except (ValueError, IndexError, TypeError, AttributeError):  # CBORError is a ValueError
        return None
    return msg if type(msg) is dict else None


class SiteShare:
    def __init__(self, share_import, share_export, period_ms):
        self.share_import = share_import  # W: the fallback shares, from the board file
        self.share_export = share_export
        self.period_ms = period_ms
        self.allow_import = 0  # W: the last allowance taken
        self.allow_export = 0
        self.import_w = share_import  # W: the share in force, one or the other (`apply`)
        self.export_w = share_export
        # W: what the envelope would allow without the share (set by limits.compute at
        # each decision): what the pile reports to its leader
        self.free_charge = 0
        self.free_discharge = 0
        self._at = None  # ticks_ms it arrived; None before the first
        self.allowances = 0  # taken since boot
        self.fallbacks = 0  # times a valid allowance ran out with none after it
        self._valid = False  # at the last `apply`

    def allow(self, import_w, export_w, now):
        """The leader's allowance (W, both >= 0, checked by the caller) arrived at `now`."""
        self.allow_import = import_w
        self.allow_export = export_w
        self._at = now
        self.allowances += 1

    def valid(self, now):
        at = self._at
        return at is not None and ticks_diff(now, at) < _VALID_PERIODS * self.period_ms

    def apply(self, now):
        """Set the share in force (`import_w`, `export_w`) for a decision at `now`."""
        valid = self.valid(now)
        if valid:
            self.import_w = self.allow_import
            self.export_w = self.allow_export
        else:
            self.import_w = self.share_import
            self.export_w = self.share_export
            if self._valid:
                self.fallbacks += 1
        self._valid = valid


class SiteSession(Session):
    """The protocol on the site link, as a member answers its leader (one per transport):
    verified with the site key alone, and every reply signed with it, which the leader
    holds (not the pile's link key)."""

    slots = (SLOT_SITE,)
    requests = (SITE_ALLOWANCE,)

    def handle(self, data):
        if self.pile.keys[SLOT_SITE] is None:  # nothing to verify with: nothing is taken
            return self.refusal(0, ERR_AUTH, "no site key: provision %s over USB" % SITE_KEY)
        return super().handle(data)

    def dispatch(self, mtype, seq, msg, slot):
        """A SITE_ALLOWANCE for this pile, taken, answered with what the leader shares the
        next one from: the power, the envelope without the share, the power wanted."""
        pile = self.pile
        import_w = field(msg, 2, "import W")
        export_w = field(msg, 3, "export W")
        if msg.get(4) != pile.pile_id:
            raise Refused(ERR_OUT_OF_RANGE, "an allowance for %r, not this pile" % (
                msg.get(4),))
        if not (0 <= import_w <= MAX_POWER_W and 0 <= export_w <= MAX_POWER_W):
            raise Refused(ERR_OUT_OF_RANGE, "an allowance is 0..%d W each way" % MAX_POWER_W)
        ctl = pile.ctl
        share = ctl.inputs.share
        share.allow(import_w, export_w, pile.now())
        return self.send(SITE_REPORT, {2: seq, 3: pile.tel.power, 4: share.free_charge,
                                       5: share.free_discharge, 6: wanted(ctl),
                                       7: ctl.reasons})
