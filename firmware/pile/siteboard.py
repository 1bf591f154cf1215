"""The board file's `site` part: a site group (docs/site-group.md), checked.

Imported by pile/board.py's `check` only when a board file has a `site` part, so a pile
in no group never loads it (nor any other site module): the heap it leaves free is a
pile alone's. `check` takes from board.py its error and its key checks, so this module
imports nothing of board.py (no import cycle).
"""

from pile.limits import MAX_POWER_W

_INT = "an integer"  # board.py's names of the kinds of value its key checks know
_TEXT = "a text string"
# the part's keys and what each must be; the same part in every pile of the group
_SITE = {"group": _TEXT, "role": _TEXT, "leader": _TEXT, "import_cap_w": _INT,
         "export_cap_w": _INT, "period_ms": _INT, "members": dict, "udp_port": _INT,
         "bus": dict}
_MEMBER = {"import_w": _INT, "export_w": _INT, "host": _TEXT, "port": _INT}
_PIN = "a pin number or name"
# the site bus: a device on the unix port, a UART and its pins on a board (as `modbus`)
_BUS = {"device": _TEXT, "uart": _INT, "tx": _PIN, "rx": _PIN, "de": _PIN, "baud": _INT,
        "termios_baud": _INT}
SITE_PERIOD_MS = 1000  # how often a site group's leader shares the headroom, by default
_SITE_PERIOD_MS = (250, 5000)  # and its range: one control period to five meter readings
_SITE_MEMBERS = (2, 8)  # piles in a site group


def check(board, error, kinds, port, wiring):
    """Raise `error` (board.py's BoardError) naming what is wrong with the board file's
    site part: one leader, 2 to 8 piles, one transport, and fallback shares that add up
    to no more than the connection's caps, whoever of the group is lost. `kinds(values,
    spec, prefix)`, `port(part, key, prefix, kind)` and `wiring(part, name, pins)` are
    board.py's key checks."""
    site = board["site"]
    pile_id = board["pile_id"]
    kinds(site, _SITE, "site.")
    for key in ("group", "role", "leader", "import_cap_w", "export_cap_w", "members"):
        if key not in site:
            raise error("site.%s is missing (see docs/site-group.md)" % key)
    role = site["role"]
    if role not in ("leader", "member"):
        raise error("site.role must be \"leader\" or \"member\", not %r" % role)
    leads = site["leader"] == pile_id
    if leads != (role == "leader"):
        raise error("site.role is %r but site.leader is %r and this pile is %r: is this "
                    "board file another pile's?" % (role, site["leader"], pile_id))
    for cap in ("import_cap_w", "export_cap_w"):
        if not 0 <= site[cap] <= MAX_POWER_W:
            raise error("site.%s %d is outside 0..%d W" % (cap, site[cap], MAX_POWER_W))
    period = site.get("period_ms", SITE_PERIOD_MS)
    if not _SITE_PERIOD_MS[0] <= period <= _SITE_PERIOD_MS[1]:
        raise error("site.period_ms %d is outside %d..%d ms" % (
            period, _SITE_PERIOD_MS[0], _SITE_PERIOD_MS[1]))
    members = site["members"]
    if not _SITE_MEMBERS[0] <= len(members) <= _SITE_MEMBERS[1]:
        raise error("site.members has %d piles: a site group has %d to %d" % (
            len(members), _SITE_MEMBERS[0], _SITE_MEMBERS[1]))
    for who in (pile_id, site["leader"]):
        if who not in members:
            raise error("site.members does not list %r" % who)
    bus = site.get("bus")
    if (bus is None) == ("udp_port" not in site):
        raise error("site: give one transport, site.bus (the site bus) or site.udp_port "
                    "(the site LAN)")
    if bus is not None:
        kinds(bus, _BUS, "site.bus.")
        if "baud" not in bus:
            raise error("site.bus.baud is missing")
        wiring(bus, "site.bus", ("uart", "tx", "rx", "de"))
    imports = exports = 0
    for name, member in members.items():
        prefix = "site.members.%s." % name
        if type(member) is not dict:
            raise error("%s must be an object" % prefix[:-1])
        kinds(member, _MEMBER, prefix)
        for key in ("import_w", "export_w"):
            if key not in member:
                raise error("%s%s is missing: the pile's fallback share, W" % (prefix, key))
            if not 0 <= member[key] <= MAX_POWER_W:
                raise error("%s%s %d is outside 0..%d W" % (
                    prefix, key, member[key], MAX_POWER_W))
        if bus is None and "host" not in member:
            raise error("%shost is missing: the pile's address on the site LAN" % prefix)
        port(member, "port", prefix, "UDP")
        imports += member["import_w"]
        exports += member["export_w"]
    for what, total, cap in (("import", imports, "import_cap_w"),
                             ("export", exports, "export_cap_w")):
        if total > site[cap]:
            raise error("site: the fallback %s shares add up to %d W, above %s %d W: "
                        "without the leader the group could exceed its cap" % (
                            what, total, cap, site[cap]))
    port(site, "udp_port", "site.", "UDP")
    if role == "leader" and "meter_unit" not in board["modbus"]:
        raise error("site: the leader reads the site meter: give modbus.meter_unit")
