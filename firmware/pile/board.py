"""The board file (DESIGN section 3), checked before anything is built from it.

A typo must not deploy and then stop the pile at boot with a bare KeyError: `check`
names the key and says what it should be. `pilectl deploy` runs the same check on
the host before it touches the board.
"""

from binascii import unhexlify

_INT = "an integer"
_TEXT = "a text string"
_FLAG = "true or false"
_PIN = "a pin number or name"

# key: what it must be; the required keys of each part are in _REQUIRED
_TOP = {"board": _TEXT, "pile_id": _TEXT, "modbus": dict, "link": dict, "wifi": dict,
        "estop_pin": _PIN, "estop_file": _TEXT, "contactor_pin": _PIN, "status_led_pin": _PIN,
        "state_dir": _TEXT, "insecure": _FLAG, "limits": dict, "mqtt": dict, "update": dict,
        "site": dict}
_MODBUS = {"device": _TEXT, "uart": _INT, "tx": _PIN, "rx": _PIN, "de": _PIN, "baud": _INT,
           "termios_baud": _INT, "converter_unit": _INT, "meter_unit": _INT,
           "converter_profile": _TEXT, "meter_profile": _TEXT}
_LINK = {"device": _TEXT, "uart": _INT, "tx": _PIN, "rx": _PIN, "baud": _INT, "tcp_port": _INT,
         "tcp_host": _TEXT}
_WIFI = {"ssid": _TEXT, "password": _TEXT}
_MQTT = {"host": _TEXT, "port": _INT, "user": _TEXT, "password": _TEXT, "keepalive_s": _INT,
         "topic_prefix": _TEXT, "ca_file": _TEXT, "tls_hostname": _TEXT}
_UPDATE = {"release_key": _TEXT, "trial_s": _INT}
_PARTS = {"modbus": _MODBUS, "link": _LINK, "wifi": _WIFI, "mqtt": _MQTT, "update": _UPDATE}
_TRIAL_S = (10, 3600)  # what a trial boot may take to confirm itself (update.trial_s)
TRIAL_S = 120  # and its default
RELEASE_KEY_BYTES = 64  # pile/signature.py's PUBLIC_KEY_BYTES (tests/fw/test_board.py)


class BoardError(ValueError):
    pass


def check(board):
    """Raise BoardError naming the first key that is unknown, missing or of the wrong kind."""
    if type(board) is not dict:
        raise BoardError("a board file is a JSON object (see boards/*.json)")
    _kinds(board, _TOP, "")
    for key in ("board", "pile_id", "modbus"):
        if key not in board:
            raise BoardError("%s is missing (see boards/*.json)" % key)
    for part, spec in _PARTS.items():
        if part in board:
            _kinds(board[part], spec, part + ".")
    bus = board["modbus"]
    if "baud" not in bus:
        raise BoardError("modbus.baud is missing")
    _wiring(bus, "modbus", ("uart", "tx", "rx", "de"))
    link = board.get("link", {})
    if "device" in link or "uart" in link:
        if "baud" not in link:
            raise BoardError("link.baud is missing")
        _wiring(link, "link", ("uart", "tx", "rx"))
    _port(link, "tcp_port", "link.")
    if "mqtt" in board:
        _broker(board["mqtt"], board["pile_id"])
    if "update" in board:
        _update(board["update"])
    if "site" in board:  # a site group (pile/siteboard.py), loaded by a pile in one only
        from pile.siteboard import check as check_site

        check_site(board, BoardError, _kinds, _port, _wiring)


def _update(update):
    """The field-update part: the pile maker's release key, the trial boot's time."""
    key = update.get("release_key")
    if key is not None:
        try:
            if len(unhexlify(key)) != RELEASE_KEY_BYTES:
                raise ValueError
        except ValueError:
            raise BoardError("update.release_key must be %d hex digits: the public key "
                             "`pilectl release keygen` printed" % (2 * RELEASE_KEY_BYTES))
    trial_s = update.get("trial_s", TRIAL_S)
    if not _TRIAL_S[0] <= trial_s <= _TRIAL_S[1]:
        raise BoardError("update.trial_s %d is outside %d..%d s" % (
            trial_s, _TRIAL_S[0], _TRIAL_S[1]))


def _port(part, key, prefix, kind="TCP"):
    port = part.get(key)
    if port is not None and not 1 <= port <= 65535:
        raise BoardError("%s%s %d is not a %s port (1..65535)" % (prefix, key, port, kind))


def _broker(mqtt, pile_id):
    """The MQTT part: a broker to dial, a keepalive the aggregators can rely on."""
    for c in "/+#":
        if c in pile_id:
            raise BoardError("pile_id %r has %s: on MQTT a pile id is one topic level" % (
                pile_id, c))
    if "host" not in mqtt:
        raise BoardError("mqtt.host is missing: the broker's address")
    _port(mqtt, "port", "mqtt.")
    keepalive = mqtt.get("keepalive_s", 10)
    if not 5 <= keepalive <= 15:
        raise BoardError("mqtt.keepalive_s %d is not 5..15 s (an aggregator sees a pile "
                         "gone within 1.5 keepalives)" % keepalive)
    if "tls_hostname" in mqtt and "ca_file" not in mqtt:
        raise BoardError("mqtt.tls_hostname is for TLS: give mqtt.ca_file, the broker's CA "
                         "certificate (DER)")
    prefix = mqtt.get("topic_prefix", "v2g")
    if not prefix or "+" in prefix or "#" in prefix:
        raise BoardError("mqtt.topic_prefix %r must be a topic without wildcards" % prefix)


def _kinds(values, spec, prefix):
    for key, value in values.items():
        kind = spec.get(key)
        if kind is None:
            close = [k for k in spec if k[:3] == key[:3]]
            hint = " (did you mean %s?)" % close[0] if close else ""
            raise BoardError("%s%s is not a board file key%s" % (prefix, key, hint))
        if not _is(value, kind):
            what = "an object" if kind is dict else kind
            raise BoardError("%s%s must be %s, not %r" % (prefix, key, what, value))


def _is(value, kind):
    if kind is dict:
        return type(value) is dict
    if kind == _INT:
        return type(value) is int
    if kind == _TEXT:
        return type(value) is str
    if kind == _FLAG:
        return type(value) is bool
    return type(value) in (int, str)  # a pin


def _wiring(part, name, pins):
    """A part is wired by `device` (the unix port) or by a UART and its pins (a board)."""
    if "device" in part:
        return
    for pin in pins:
        if pin not in part:
            raise BoardError("%s.%s is missing (or give %s.device on the unix port)" % (
                name, pin, name))
