"""The board file is checked before anything is built from it (CPython and MicroPython)."""

import json

from fwtest import raises
from pile.board import BoardError, check

_BOARDS = __file__.rsplit("/", 1)[0] + "/../../boards/"


def board(name):
    with open(_BOARDS + name + ".json") as f:
        return json.load(f)


def test_the_reference_boards_pass():
    for name in ("unix_sim", "esp32_devkitc", "pico_w"):
        check(board(name))


def test_a_typo_is_named_with_what_was_meant():
    spec = board("unix_sim")
    spec["modbus"]["baudd"] = spec["modbus"].pop("baud")
    with raises(BoardError) as caught:
        check(spec)
    assert "modbus.baudd" in str(caught.value) and "baud" in str(caught.value)


def test_missing_and_wrong_kinds_are_named():
    cases = (({"board": "x", "pile_id": "p"}, "modbus is missing"),
             ({"board": "x", "pile_id": 7, "modbus": {}}, "pile_id must be a text string"),
             ({"board": "x", "pile_id": "p", "modbus": {"device": "/dev/x"}}, "modbus.baud"),
             ({"board": "x", "pile_id": "p", "modbus": {"uart": 1, "baud": 9600}}, "modbus.tx"),
             ({"board": "x", "pile_id": "p", "modbus": {"device": "d", "baud": 9600},
               "link": {"tcp_port": 99999}}, "link.tcp_port"),
             ({"board": "x", "pile_id": "p", "modbus": {"device": "d", "baud": 9600},
               "insecure": "yes"}, "insecure must be true or false"),
             ([], "JSON object"))
    for spec, named in cases:
        with raises(BoardError) as caught:
            check(spec)
        assert named in str(caught.value), (named, str(caught.value))


def test_the_mqtt_part_is_checked():
    spec = board("unix_sim")
    spec["mqtt"] = {"host": "10.0.0.5", "password": "pw", "keepalive_s": 15}
    check(spec)
    cases = (({"password": "pw"}, "mqtt.host is missing"),
             ({"host": "h", "keepalive_s": 30}, "keepalive_s 30 is not 5..15"),
             ({"host": "h", "port": 0}, "mqtt.port 0 is not a TCP port"),
             ({"host": "h", "topic_prefix": "v2g/#"}, "without wildcards"),
             ({"host": "h", "tls": True}, "mqtt.tls is not a board file key"),
             ({"host": "h", "tls_hostname": "broker"}, "give mqtt.ca_file"),
             ({"host": 5}, "mqtt.host must be a text string"))
    for part, named in cases:
        spec["mqtt"] = part
        with raises(BoardError) as caught:
            check(spec)
        assert named in str(caught.value), (named, str(caught.value))
    spec["mqtt"] = {"host": "h"}
    spec["pile_id"] = "site/pile-1"
    with raises(BoardError) as caught:
        check(spec)
    assert "one topic level" in str(caught.value)


def test_the_release_key_part_is_checked():
    from pile.board import RELEASE_KEY_BYTES
    from pile.signature import PUBLIC_KEY_BYTES

    assert RELEASE_KEY_BYTES == PUBLIC_KEY_BYTES
    good = {"release_key": "ab" * PUBLIC_KEY_BYTES, "trial_s": 60}
    check(dict(_BOARD_FOR_UPDATE, update=good))
    for bad, said in (({"release_key": "ab" * 32}, "hex digits"),
                      ({"release_key": "zz" * 64}, "hex digits"),
                      ({"trial_s": 5}, "trial_s"), ({"key": 1}, "update.key")):
        try:
            check(dict(_BOARD_FOR_UPDATE, update=bad))
        except BoardError as exc:
            assert said in str(exc), str(exc)
        else:
            raise AssertionError("accepted %r" % (bad,))


_BOARD_FOR_UPDATE = {"board": "unix_sim", "pile_id": "u-001",
                     "modbus": {"device": "/dev/null", "baud": 115200}}


def site_group(**changes):
    """A group of three behind 40 kW import and 11 kW export, its shares adding up to both
    caps (docs/site-group.md's example), seen from pile-b's board file."""
    site = {"group": "depot-1", "role": "member", "leader": "pile-a",
            "import_cap_w": 40000, "export_cap_w": 11000, "period_ms": 1000,
            "members": {"pile-a": {"import_w": 14000, "export_w": 4000, "host": "10.0.0.11"},
                        "pile-b": {"import_w": 13000, "export_w": 3500, "host": "10.0.0.12"},
                        "pile-c": {"import_w": 13000, "export_w": 3500, "host": "10.0.0.13"}},
            "udp_port": 7710}
    site.update(changes)
    return dict(_BOARD_FOR_UPDATE, pile_id="pile-b", site=site)


def refused(spec, said):
    with raises(BoardError) as caught:
        check(spec)
    assert said in str(caught.value), (said, str(caught.value))


def test_a_site_group_whose_shares_fit_the_caps_passes():
    check(site_group())
    leader = site_group(role="leader")
    leader["pile_id"] = "pile-a"
    refused(leader, "the leader reads the site meter: give modbus.meter_unit")
    leader["modbus"] = dict(leader["modbus"], meter_unit=2)
    check(leader)
    leader["site"]["members"]["pile-a"]["port"] = 7711  # piles sharing one host
    check(leader)
    leader["site"]["members"]["pile-a"]["port"] = 0
    refused(leader, "site.members.pile-a.port 0 is not a UDP port")


def test_a_group_that_could_exceed_its_caps_is_refused_with_the_sums():
    spec = site_group()
    spec["site"]["members"]["pile-c"]["export_w"] = 4500  # 4000 + 3500 + 4500 = 12000
    refused(spec, "the fallback export shares add up to 12000 W, above export_cap_w 11000 W")
    spec = site_group(import_cap_w=39999)
    refused(spec, "the fallback import shares add up to 40000 W, above import_cap_w 39999 W")
    check(site_group(import_cap_w=40000, export_cap_w=11000))  # equal is within


def test_the_site_part_names_each_mistake():
    members = site_group()["site"]["members"]
    two = {k: members[k] for k in ("pile-a", "pile-b")}
    nine = dict(members, **{"p%d" % i: {"import_w": 0, "export_w": 0, "host": "h"}
                            for i in range(6)})
    cases = ((site_group(role="leader"), "another pile's"),
             (site_group(role="boss"), "site.role must be"),
             (site_group(leader="pile-x"), "does not list 'pile-x'"),
             (site_group(members={"pile-a": two["pile-a"], "pile-c": members["pile-c"]}),
              "does not list 'pile-b'"),
             (site_group(members=nine), "has 9 piles"),
             (site_group(members=dict(two, **{"pile-c": {"import_w": 1}})),
              "site.members.pile-c.export_w is missing"),
             (site_group(members=dict(two, **{"pile-c": {"import_w": -1, "export_w": 0,
                                                          "host": "h"}})),
              "import_w -1 is outside"),
             (site_group(members=dict(two, **{"pile-c": {"import_w": 1, "export_w": 0}})),
              "pile-c.host is missing"),
             (site_group(members=dict(two, **{"pile-c": {"import_w": 1, "export_w": 0,
                                                          "hots": "h"}})),
              "site.members.pile-c.hots is not a board file key"),
             (site_group(period_ms=100), "site.period_ms 100"),
             (site_group(export_cap_w=2000000), "export_cap_w 2000000 is outside"),
             (site_group(udp_port=0), "site.udp_port 0"),
             (site_group(bus={"device": "/dev/pts/4", "baud": 9600}),
              "give one transport, site.bus (the site bus) or site.udp_port"),
             (site_group(leaders="pile-a"), "site.leaders is not a board file key"),
             (site_group(import_cap_w="40 kW"), "site.import_cap_w must be an integer"))
    for spec, said in cases:
        refused(spec, said)
    spec = site_group()
    del spec["site"]["export_cap_w"]
    refused(spec, "site.export_cap_w is missing")
    spec = site_group()
    del spec["site"]["udp_port"]
    refused(spec, "give one transport, site.bus (the site bus) or site.udp_port")


def on_the_bus(bus):
    """site_group() on the site bus `bus` instead of the site LAN, its members without
    addresses."""
    spec = site_group(bus=bus)
    del spec["site"]["udp_port"]
    for member in spec["site"]["members"].values():
        del member["host"]
    return spec


def test_a_group_on_the_site_bus():
    check(on_the_bus({"device": "/dev/pts/4", "baud": 115200}))  # the unix port
    check(on_the_bus({"uart": 1, "tx": 4, "rx": 5, "de": 6, "baud": 115200}))  # a board
    cases = ((on_the_bus({"device": "/dev/pts/4"}), "site.bus.baud is missing"),
             (on_the_bus({"uart": 1, "tx": 4, "rx": 5, "baud": 115200}),
              "site.bus.de is missing (or give site.bus.device on the unix port)"),
             (on_the_bus({"device": "/dev/pts/4", "baud": 115200, "baudd": 1}),
              "site.bus.baudd is not a board file key"),
             (on_the_bus({"uart": "one", "tx": 4, "rx": 5, "de": 6, "baud": 115200}),
              "site.bus.uart must be an integer"))
    for spec, said in cases:
        refused(spec, said)
    spec = site_group()
    del spec["site"]["members"]["pile-c"]["host"]
    refused(spec, "site.members.pile-c.host is missing")  # on the site LAN it is needed
