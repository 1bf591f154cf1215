"""The fleet target split into per-pile setpoints: max-min fair inside every envelope.

Pure and deterministic (ties go by pile id), in whole watts, + charge / - discharge as
on the wire. Piles are filled tier by tier (tier 0 first); within a tier by water
filling: every pile gets the same power unless its envelope stops it lower, so no pile
could get more without one that has less getting less. With `wear_fair`, discharge
evens out instead the energy each pile gave over the wear window: a pile that gave less
gives more now, until the fleet's wear is level. A pile forced to charge (its departure
reserve) is load the fleet cannot move: its power is counted and the rest is split. A
pile whose owner's V2G budget is spent cannot discharge, whatever its envelope says.
The water filling itself is the firmware's (pile/share.py), which a site group's leader
shares its headroom with too.
"""

from dataclasses import dataclass, field

from pile.surface import fill


@dataclass(slots=True)
class Share:
    """One pile as the split sees it, from its last TELEMETRY."""

    pile_id: str
    max_charge_w: int  # >= 0
    max_discharge_w: int  # >= 0
    tier: int = 0  # filled before higher tiers
    wear_w: float = 0.0  # energy discharged over the wear window, as mean power over it
    forced_w: int | None = None  # a charge the pile makes whatever it is asked (reserve)
    budget_left_wh: int | None = None  # the owner's V2G budget left; None: no budget

    @property
    def discharge_w(self):
        """The most discharge the split may ask of the pile: none once its budget is
        spent."""
        return 0 if self.budget_left_wh == 0 else self.max_discharge_w


@dataclass
class Split:
    setpoints: dict  # pile id -> W, for every pile not forced
    target_w: int  # what was asked of the fleet
    planned_w: int  # what the setpoints and the forced charges add up to
    low_w: int  # the most discharge the fleet's envelopes allow (with the forced load)
    high_w: int  # the most charge
    forced_w: int = 0
    tiers: dict = field(default_factory=dict)  # tier -> planned W

    @property
    def shortfall_w(self):
        """Target minus plan: nonzero only when the envelopes cannot meet the target."""
        return self.target_w - self.planned_w


def reach(shares):
    """(low_w, high_w): the most discharge and the most charge `shares` can make together,
    with the forced charges counted."""
    forced_w = sum(s.forced_w for s in shares if s.forced_w is not None)
    free = [s for s in shares if s.forced_w is None]
    return (forced_w - sum(s.discharge_w for s in free),
            forced_w + sum(s.max_charge_w for s in free))


def split(target_w, shares, wear_fair=False):
    """Setpoints for `shares` that add up to `target_w` clipped to what they allow."""
    forced = [s for s in shares if s.forced_w is not None]
    free = sorted((s for s in shares if s.forced_w is None), key=lambda s: s.pile_id)
    forced_w = sum(s.forced_w for s in forced)
    low, high = reach(shares)
    wanted = min(high, max(low, int(target_w))) - forced_w
    setpoints = dict.fromkeys((s.pile_id for s in free), 0)
    tiers = {}
    sign = 1 if wanted > 0 else -1
    left = abs(wanted)
    for tier in sorted({s.tier for s in free}):
        members = [s for s in free if s.tier == tier]
        caps = [s.max_charge_w if sign > 0 else s.discharge_w for s in members]
        amount = min(left, sum(caps))
        bases = [s.wear_w if wear_fair and sign < 0 else 0.0 for s in members]
        for share, watts in zip(members, fill(amount, caps, bases), strict=True):
            setpoints[share.pile_id] = sign * watts
        tiers[tier] = sign * amount
        left -= amount
    planned = forced_w + sum(setpoints.values())
    return Split(setpoints, int(target_w), planned, low, high, forced_w, tiers)
