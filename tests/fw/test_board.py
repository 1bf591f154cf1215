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
