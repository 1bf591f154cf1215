"""A pile's site group, brought up at boot: the transport its board file names.

Imported by pile/firmware.py only on a pile whose board file has a `site` part
(docs/site-group.md): a second RS485 bus (`site.bus`, pile/sitebus.py) or UDP on the site
LAN (`site.udp_port`, pile/siteudp.py).
"""

from pile.app import SLOT_SITE


def build_site_link(pile, step, board, hal):
    """The site group's transport for `pile`, whose ControlStep `step` reads the leader's
    meter, on `hal`'s site bus or the site LAN; without a site key the members keep their
    fallback shares, said at boot."""
    site = board["site"]
    if pile.keys[SLOT_SITE] is None:
        pile.problems.append("site group %s: no site key yet, so no allowances: every pile "
                             "keeps its fallback share (provision site_key over USB)"
                             % site["group"])
    if "bus" in site:
        from pile.sitebus import SiteBus

        return SiteBus(pile, step, site, hal.rs485("site.bus"))
    from pile.siteudp import SiteUdp

    return SiteUdp(pile, step, site)
