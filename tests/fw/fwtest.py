"""Helpers for firmware tests that run under CPython (pytest) and MicroPython alike."""

from pile import limits
from pile.app import Pile, key_id
from pile.cbor import dumps, loads
from pile.config import Config
from pile.cose import mac0_sign, mac0_verify
from pile.protocol import Session
from pile.telemetry import STATUS_EV_CONNECTED, STATUS_READY, Telemetry

RATED = 11000


def telemetry(**fields):
    """A healthy, plugged-in EV at 60 % and 25 degC on a 50 Hz grid unless `fields` say
    otherwise."""
    tel = Telemetry()
    tel.status = STATUS_READY | STATUS_EV_CONNECTED
    tel.soc = 600
    tel.battery_temp = 250
    tel.converter_temp = 400
    tel.ev_max_charge = RATED
    tel.ev_max_discharge = RATED
    tel.rated_charge = RATED
    tel.rated_discharge = RATED
    tel.grid_freq = 5000  # 0.01 Hz
    for name, value in fields.items():
        setattr(tel, name, value)
    return tel


SITE_LIMIT = 16000  # with the default 5 kW load, exactly leaves the rating free to charge


def config(**changes):
    """Defaults, but a 16 kW site connection unless `changes` say otherwise."""
    values = {"site_import_limit_w": SITE_LIMIT}
    values.update(changes)
    return Config(values)


def envelope(tel=None, cfg=None, site_w=5000, meter_age_ms=0, reserve_x10=limits.NO_DEPARTURE,
             departure_left_s=0, stopped=False, lost=False, env=None):
    """Compute an envelope; the default site imports 5 kW with the pile idle."""
    env = env or limits.Envelope()
    inputs = limits.Inputs()
    named = {"site_w": site_w, "meter_age_ms": meter_age_ms, "reserve_x10": reserve_x10,
             "departure_left_s": departure_left_s, "stopped": stopped, "converter_lost": lost}
    for name, value in named.items():
        setattr(inputs, name, value)
    limits.compute(env, tel or telemetry(), cfg or config(), inputs)
    return env


class raises:
    """`with raises(ValueError) as caught:` — fails unless the block raises that type."""

    def __init__(self, kind):
        self.kind = kind
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            raise AssertionError("%s was not raised" % self.kind.__name__)
        if not issubclass(kind, self.kind):
            return False
        self.value = value
        return True


class RecordingPin:
    """An output pin that remembers its level."""

    def __init__(self):
        self.level = None

    def value(self, level):
        self.level = level


class SilentBus:
    """An RS485 port with nothing on it; tests that use it send nothing."""

    def readinto(self, buf):
        return None

    def start_send(self, frame):
        return 0

    def sent(self):
        return True

    def drain_input(self):
        pass


class QuietWlan:
    """A WLAN on a site whose access point is always there."""

    def active(self, on=None):
        return True

    def isconnected(self):
        return True

    def connect(self, ssid, key):
        pass


class CountingWatchdog:
    def __init__(self):
        self.feeds = 0

    def feed(self):
        self.feeds += 1


class RecordingHal:
    """A HAL with nothing behind it, for the firmware's own factories in tests: the bus is
    silent, outputs record their level, resets are counted."""

    profiles = __file__.rsplit("/", 1)[0] + "/../../firmware/profiles"

    def __init__(self):
        self.outputs = {}
        self.resets = 0

    def rs485(self, name="modbus"):
        return SilentBus()

    def link_stream(self):
        return None

    def estop(self):
        return None

    def output(self, name):
        self.outputs[name] = RecordingPin()
        return self.outputs[name]

    def watchdog(self, timeout_ms, on_expiry=None):
        return CountingWatchdog()

    def reset_cause(self):
        from pile.events import RESET_POWER_ON

        return RESET_POWER_ON

    def wifi(self):
        from pile.wifi import Station

        return Station(QuietWlan, "test-site")

    def service_mode(self, wdt):
        pass

    def reset(self):
        self.resets += 1


def recording_board(pile_id="test-001"):
    """A board file for RecordingHal; its state lives in a fresh folder under /tmp."""
    from binascii import hexlify
    from os import urandom

    return {"board": "test", "pile_id": pile_id,
            "modbus": {"baud": 9600, "converter_unit": 1, "meter_unit": 2},
            "link": {}, "state_dir": "/tmp/pile-fwtest-" + hexlify(urandom(6)).decode()}


class Host:
    """Builds what a host sends and opens what the pile answers, on one Session (a new
    one, serial unless `may_provision` is False, or `session`)."""

    def __init__(self, pile, key=None, may_provision=True, session=None):
        self.pile = pile
        self.key = key
        self.seq = 0
        self.session = session or Session(pile, may_provision)
        self.replies = []

    def raw(self, data):
        reply = self.session.handle(data)
        self.replies.append(reply)
        if self.pile.key is not None and reply[:1] == b"\xd1":
            reply = mac0_verify(self.pile.key, reply, self.pile.nonce)
        return loads(reply)

    def request(self, mtype, fields=None, seq=None, key=None):
        """The bytes of one request signed with `key` (unsigned when None), at `seq` or
        above every seq this boot has seen, as HELLO key 8 tells a client."""
        if seq is None:
            self.seq = max(self.seq, max(self.pile.seqs)) + 1
            seq = self.seq
        message = {0: mtype, 1: seq}
        message.update(fields or {})
        data = dumps(message)
        return data if key is None else mac0_sign(key, data, self.pile.nonce, key_id(key))

    def send(self, mtype, fields=None, seq=None, sign=True):
        return self.raw(self.request(mtype, fields, seq, self.key if sign else None))


def pile_with_ev():
    pile = Pile("test-001")
    tel = pile.tel
    tel.status = STATUS_READY | STATUS_EV_CONNECTED
    tel.soc = 600
    tel.battery_temp = 250
    tel.converter_temp = 400
    tel.ev_max_charge = tel.ev_max_discharge = RATED
    tel.rated_charge = tel.rated_discharge = RATED
    tel.grid_freq = 5000
    pile.ctl.decide(pile.now(), tel, True, 5000, 0)
    return pile


def snapshot(pile):
    """What a refused request must leave as it was (it may log an EVENT_AUTH_FAILED)."""
    ctl = pile.ctl
    return (dict(pile.cfg.values), ctl.setpoint, ctl.setpoint_live, ctl.stopped, pile.key,
            logged_apart_from_refusals(pile), pile.actions)


def logged_apart_from_refusals(pile):
    from pile.events import EVENT_AUTH_FAILED

    return [entry for entry in logged(pile) if entry[2] != EVENT_AUTH_FAILED]


def logged(pile, first=0, limit=100):
    """The pile's event log from `first`, as an EVENTS reply has it: flushed first."""
    pile.flush_events()
    return pile.events.since(first, limit)


class FreshState:
    """`with FreshState() as path:` a new, empty state folder beside the tests, removed
    with everything in it afterwards (MicroPython has no tempfile)."""

    def __enter__(self):
        import os
        from binascii import hexlify
        from os import urandom

        self.path = __file__.rsplit("/", 1)[0] + "/.state-" + hexlify(urandom(4)).decode()
        os.mkdir(self.path)
        return self.path

    def __exit__(self, *failure):
        remove_tree(self.path)


def remove_tree(path):
    """Remove the folder at `path` and everything in it."""
    import os

    for name in os.listdir(path):
        inner = path + "/" + name
        if os.stat(inner)[0] & 0x4000:
            remove_tree(inner)
        else:
            os.remove(inner)
    os.rmdir(path)
