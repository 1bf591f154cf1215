"""A site group's allowances: the leader shares the connection's caps among its piles.

Pure logic, no I/O (docs/site-group.md). Every period the leader takes the site meter's
reading and what each member (itself included) last reported, and gives each an
allowance: the most it may import (charge) and export (discharge) until it hears again.

- The load the piles cannot move is the meter's reading less the piles' powers. The
  import headroom is the import cap less that load, the export headroom that load plus
  the export cap (none below 0).
- A member heard from this period gets a max-min fair part of the headroom within its
  envelope (the one it reported, without the site rule): first up to the power it wants,
  then what is left levelled up to its envelope (pile/share.py's water filling).
- A member not heard from may hold an allowance sent in either of the last two periods
  (one is valid for two periods from its arrival) or, after that, its fallback share:
  it is counted at the largest of these in both directions, **as if it could be anywhere
  between its largest export and its largest import**, because its power at the meter's
  reading is not known. Only the rest is shared. It is sent its fallback share.

So the heard members' allowances, whatever powers within them the members then take and
whatever the members not heard do within theirs, keep the site inside its caps for the
meter's reading, whenever the headroom covers what the members not heard may take
(tests/test_site_properties.py). Sums stay below 2**30 for 8 piles of up to 1 MW.
"""

from pile.share import fill


class Member:
    """One pile of the group as the leader sees it. `heard` and the reported fields are
    the caller's to set each period; `allow_*` are the allowance computed for it, and
    `sent_*`/`prev_*` the ones of this period and the one before."""

    def __init__(self, pile_id, share_import, share_export):
        self.pile_id = pile_id
        self.share_import = share_import  # W: the fallback shares, from the board file
        self.share_export = share_export
        self.heard = False  # a valid report came in the last period
        self.power = 0  # W, + charge: the last report's
        self.max_charge = 0  # W >= 0: its envelope without the site rule
        self.max_discharge = 0
        self.wanted = 0  # W, + charge: what it would do without the site rule
        self.allow_import = 0  # W >= 0: this period's allowance
        self.allow_export = 0
        self.prev_import = 0  # the allowance of the period before (it may still hold it)
        self.prev_export = 0

    def reserved(self):
        """(import W, export W): the most a member not heard from may take."""
        return (max(self.share_import, self.allow_import, self.prev_import),
                max(self.share_export, self.allow_export, self.prev_export))


def allowances(members, site_w, import_cap_w, export_cap_w, load_change_w=0):
    """Give every member of `members` its allowance for this period (in place), from the
    meter's reading `site_w` (W, + import) and the caps. Returns (import, export)
    headroom shared among the members heard from, W.

    `load_change_w` is how far the site's own load moved between the last two readings:
    the load is taken to go on moving as far again, where that costs headroom (a falling
    load, export headroom; a rising one, import headroom), so a load that falls over a
    second or two is met by the reading that shows its start, not the one after its end.
    """
    heard = [m for m in members if m.heard]
    load = site_w
    for m in heard:
        load -= m.power
    unheard_w = 0
    for m in members:
        if not m.heard:
            imp, exp = m.reserved()
            unheard_w += imp + exp
    import_w = max(0, import_cap_w - load - max(0, load_change_w) - unheard_w)
    export_w = max(0, load + min(0, load_change_w) + export_cap_w - unheard_w)
    imports = _shared(import_w, [m.max_charge for m in heard],
                      [max(0, m.wanted) for m in heard])
    exports = _shared(export_w, [m.max_discharge for m in heard],
                      [max(0, -m.wanted) for m in heard])
    for m in members:
        m.prev_import, m.prev_export = m.allow_import, m.allow_export
        if not m.heard:
            m.allow_import, m.allow_export = m.share_import, m.share_export
    for i in range(len(heard)):
        heard[i].allow_import = imports[i]
        heard[i].allow_export = exports[i]
    return import_w, export_w


def site_load(members, site_w):
    """The site's own load (W, + import) at the meter's reading `site_w`: the reading less
    every member's power then; None while a member is not heard (its power is unknown)."""
    for m in members:
        if not m.heard:
            return None
        site_w -= m.power
    return site_w


def without_meter(members, no_meter_charge_w):
    """The no-meter rule for the whole group (the leader's meter is lost): no export, and
    imports within the fallback shares and `no_meter_charge_w`, as a pile alone."""
    for m in members:
        m.prev_import, m.prev_export = m.allow_import, m.allow_export
        m.allow_import = min(m.share_import, no_meter_charge_w)
        m.allow_export = 0


def _shared(amount, envelopes, wants):
    """`amount` W max-min fair: first up to each want (within its envelope), then the rest
    levelled up to each envelope."""
    n = len(envelopes)
    for i in range(n):
        envelopes[i] = max(0, envelopes[i])
        wants[i] = min(wants[i], envelopes[i])
    first = fill(min(amount, sum(wants)), wants, [0] * n)
    room = [envelopes[i] - first[i] for i in range(n)]
    more = fill(min(amount - sum(first), sum(room)), room, first)
    return [first[i] + more[i] for i in range(n)]
