"""Host link protocol v1 (DESIGN section 5): messages, seq tracking, authentication, roles.

One Session per connection. `handle(data)` takes one deframed message and
returns the one reply to send; nothing the host sends raises out of it, and a
refused message changes nothing but the counters. With a key every message in
both directions is a COSE_Mac0 over the boot nonce. Seqs are tracked per key for
the whole boot (on the Pile), not per connection, so a signed message is
accepted at most once whatever the connection or transport; and only request
types are accepted, so the pile's own messages reflected back change nothing.
The link key makes an aggregator (setpoints, reads, stop, and the owner's settings
within the technician's bounds: config.OWNER_KEYS); the technician's key (or the USB
serial link while the pile has none) makes a technician, who alone may change the rest
of the config and the keys, release a stop, reset a fault or reboot. A site group's
leader talks to a member over the site link through a subclass of `Session`
(pile/siteshare.py's SiteSession), which verifies with the site key alone and takes
SITE_ALLOWANCE alone; the Session of the host link neither knows the site key nor takes
SITE_ALLOWANCE (docs/site-group.md).
docs/protocol.md has the design and its threat model.
"""

from micropython import const

from pile import cbor
from pile.app import KEY_LENGTHS, KEY_NAMES, SLOT_LINK, SLOT_TECHNICIAN, SLOT_UNSIGNED
from pile.config import CHOICES, INTEGERS, KEY_NUMBERS, NO_BUDGET, OWNER_KEYS, ConfigError
from pile.control import NotReady
from pile.cose import CoseError, mac0_open, mac0_sign

PROTOCOL_VERSION = const(1)

HELLO = const(1)
TELEMETRY = const(2)
SETPOINT = const(3)
ACK = const(4)
CONFIG_GET = const(5)
CONFIG_SET = const(6)
CONFIG = const(7)
EVENTS_GET = const(8)
EVENTS = const(9)
COMMAND = const(10)
ERROR = const(11)
DIAGNOSTICS_GET = const(12)  # extension: host asks for the firmware's counters (2 part)
DIAGNOSTICS = const(13)  # extension: 2 map of counter name to value, 3 number of parts
# extension: field updates (docs/field-update.md), each answered by UPDATE_STATUS
UPDATE_OFFER = const(14)  # 2 signed head bstr, 3 signature bstr, 4 optional downgrade (1)
UPDATE_CHUNK = const(15)  # 2 offset, 3 bytes, 4 the next link of the hash chain (32 bytes)
UPDATE_GET = const(16)  # no fields: where the update stands
UPDATE_COMMIT = const(17)  # 2 package id (sha256 of the head)
UPDATE_STATUS = const(18)  # pile.update.Updater.status(): 2 state, 3 bytes held, 4 size, ...
# 19 and 20: SITE_ALLOWANCE and SITE_REPORT, a site group's (pile/siteshare.py), which only
# a pile in a group loads

ERR_MALFORMED = const(1)
ERR_UNKNOWN_TYPE = const(2)
ERR_BAD_FIELD = const(3)
ERR_AUTH = const(4)
ERR_REPLAY = const(5)
ERR_OUT_OF_RANGE = const(6)
ERR_BUSY = const(7)

CMD_RESET_FAULT = const(1)
CMD_REBOOT = const(2)
CMD_STOP = const(3)
CMD_RELEASE = const(4)

# the write-only secrets in CONFIG_SET, by key slot (Pile.keys): the aggregator's key, the
# technician's, and a site group's ("site_key", pile/siteshare.py)
KEY = KEY_NAMES[SLOT_LINK]
TECHNICIAN_KEY = KEY_NAMES[SLOT_TECHNICIAN]
_REQUESTS = (SETPOINT, CONFIG_GET, CONFIG_SET, EVENTS_GET, COMMAND, DIAGNOSTICS_GET,
             UPDATE_OFFER, UPDATE_CHUNK, UPDATE_GET, UPDATE_COMMIT)
_UPDATES = (UPDATE_OFFER, UPDATE_CHUNK, UPDATE_COMMIT)  # the technician's alone
_NEEDS_TECHNICIAN = ("needs the technician's key (pilectl provision-key --technician, over "
                     "USB), or the USB serial link while the pile has none")
_COSE_MAC0 = const(17)
_DETAIL = const(4)  # ERROR field: a short text for the technician (ignored by v1 readers)
_NEXT_SEQ = const(8)  # HELLO field: the lowest seq accepted next, so a restarted host resumes
_TEL_FREQ = const(17)  # TELEMETRY extension: grid frequency, mHz
_TEL_FREQ_W = const(18)  # and the frequency response in the applied power, W
_TEL_ROLLBACK = const(19)  # TELEMETRY and HELLO (9) extension: [version, reason, count] of
_HELLO_ROLLBACK = const(9)  # the last trial that rolled back, while what it returned to runs
_TEL_BUDGET_LEFT = const(20)  # TELEMETRY extension: Wh the owner's V2G budget still allows
_TEL_DAY_OUT = const(21)  # Wh discharged over the rolling day the budget counts
_TEL_WEEK_OUT = const(22)  # and over the rolling week
_FREQ_MODE = const(6)  # SETPOINT extensions: 1 droop, 2 curve (docs/grid-services.md)
_FREQ_CURVE = const(7)  # [[mHz, W], ...] for mode 2
_FREQ_REVERT = const(8)  # s: the response reverts to the config's sooner than the ttl
_EVENTS_PER_REPLY = const(24)  # keeps an EVENTS reply well under 512 bytes
_CONFIG_NEXT = const(3)  # CONFIG_GET and CONFIG extension: where a full listing goes on
PAGE_BYTES = const(440)  # of a listing in one reply (config, counters): signed, under 510 B
_MAX_SEQ = 0xFFFFFFFFFFFFFFFF


class Refused(Exception):
    def __init__(self, code, detail):
        super().__init__(detail)
        self.code = code
        self.detail = detail


class Session:
    """One connection: our seq, the peer's last accepted seq, and what was refused.

    `codec` is what encodes and decodes CBOR: `dumps`, `loads`, `Tag` and `CBORError`,
    pile.cbor on a board; a host emulator hands its C codec (pilectl/aggregator/hostcodec.py).
    A subclass (a site group's, pile/siteshare.py) names the keys it verifies and signs
    with (`slots`) and the types it takes (`requests`), and answers them (`dispatch`).
    """

    slots = (SLOT_LINK, SLOT_TECHNICIAN)  # the keys the peer may sign with, and we sign with
    requests = _REQUESTS

    def __init__(self, pile, may_provision=False, codec=cbor):
        self.pile = pile
        self.may_provision = may_provision  # only the wired serial link may set keys
        self.codec = codec
        self.seq = 0
        self.accepted = 0
        self.verified = False  # a request of this connection was accepted under a key
        self.errors = [0] * 8  # ERROR replies by code (index 0 unused)

    def refused(self):
        return sum(self.errors)

    # -- messages from the pile ---------------------------------------------------

    def hello(self):
        pile = self.pile
        tel = pile.tel
        fields = {2: pile.pile_id, 3: pile.version, 4: pile.nonce, 5: tel.rated_charge,
                  6: tel.rated_discharge, 7: PROTOCOL_VERSION, _NEXT_SEQ: max(pile.seqs) + 1}
        if pile.rolled_back:
            fields[_HELLO_ROLLBACK] = pile.rollback
        return self.send(HELLO, fields)

    def telemetry(self):
        pile = self.pile
        ctl = pile.ctl
        tel = pile.tel
        env = ctl.env
        budget = ctl.budget
        left = budget.left_wh(pile.cfg)
        fields = {2: ctl.state, 3: tel.power, 4: tel.soc, 5: tel.battery_temp,
                  6: tel.converter_temp, 7: env.max_charge, 8: env.max_discharge,
                  9: ctl.reasons, 10: ctl.applied, 11: ctl.ttl_left_s(pile.now()),
                  12: pile.site_w, 13: tel.fault_code, 14: ctl.uptime_s,
                  15: tel.energy_in, 16: tel.energy_out, _TEL_FREQ: tel.grid_freq * 10,
                  _TEL_FREQ_W: ctl.freq_w,
                  _TEL_BUDGET_LEFT: None if left == NO_BUDGET else left,
                  _TEL_DAY_OUT: budget.day_wh(), _TEL_WEEK_OUT: budget.week_wh()}
        if pile.rolled_back:
            fields[_TEL_ROLLBACK] = pile.rollback
        return self.send(TELEMETRY, fields)

    def send(self, mtype, fields):
        """A message of ours (wire bytes), signed with the first key of `slots` the pile
        has (on the host link: the link key, else the technician's), as it is without."""
        self.seq += 1
        fields[0] = mtype
        fields[1] = self.seq
        message = self.codec.dumps(fields)
        pile = self.pile
        for slot in self.slots:
            key = pile.keys[slot]
            if key is not None:
                return mac0_sign(key, message, pile.nonce, pile.kids[slot], self.codec)
        return message

    # -- messages from the host ---------------------------------------------------

    def handle(self, data):
        """The reply (wire bytes) to one message from the host."""
        seq = 0
        try:
            msg, slot = self._open(data)
            seq = msg[1]
            mtype = msg[0]
            if mtype == HELLO:  # a serial line has no connect event: the host asks
                self.accepted += 1
                return self.hello()
            if mtype not in self.requests:  # before anything counts: reflections change nothing
                raise Refused(ERR_UNKNOWN_TYPE, "type %d is not a request" % mtype)
            if slot is None:
                raise Refused(ERR_AUTH, "this pile has a link key: sign with it")
            seqs = self.pile.seqs
            if seq <= seqs[slot]:
                raise Refused(ERR_REPLAY, "seq %d is not above %d" % (seq, seqs[slot]))
            seqs[slot] = seq
            self.verified = True
            reply = self.dispatch(mtype, seq, msg, slot)
        except Refused as refusal:
            return self.refusal(seq, refusal.code, refusal.detail)
        self.accepted += 1
        return reply

    def _is_technician(self, slot):
        """The technician's key, or the wired link while the pile has no technician key."""
        return slot == SLOT_TECHNICIAN or (
            self.may_provision and self.pile.keys[SLOT_TECHNICIAN] is None)

    def refusal(self, seq, code, detail):
        """An ERROR reply, counted (and logged, rate-limited, when it is about a key)."""
        self.errors[code] += 1
        if code == ERR_AUTH or code == ERR_REPLAY:
            self.pile.auth_refused()
        return self.send(ERROR, {2: seq, 3: code, _DETAIL: detail})

    def _open(self, data):
        """Verify and decode; return (message map, the key slot it was made with, or None
        when the pile has keys and the message is unsigned)."""
        pile = self.pile
        slots = [slot for slot in self.slots if pile.keys[slot] is not None]
        slot = SLOT_UNSIGNED if not slots else None
        if slots and data[:1] == b"\xd1":  # tag 17: a COSE_Mac0
            try:
                data, index = mac0_open([pile.keys[s] for s in slots], data, pile.nonce,
                                        self.codec)
            except CoseError as exc:
                raise Refused(ERR_AUTH, "not authenticated: %s" % exc)
            slot = slots[index]
        codec = self.codec
        try:
            msg = codec.loads(data)
        except codec.CBORError as exc:
            raise Refused(ERR_MALFORMED, "not CBOR: %s" % exc)
        if not slots and isinstance(msg, codec.Tag) and msg.tag == _COSE_MAC0:
            raise Refused(ERR_AUTH, "signed, but this pile has no link key: provision one first")
        if type(msg) is not dict:
            raise Refused(ERR_MALFORMED, "a message is a CBOR map")
        mtype = msg.get(0)
        seq = msg.get(1)
        if type(mtype) is not int or type(seq) is not int or not 0 <= seq <= _MAX_SEQ:
            raise Refused(ERR_MALFORMED, "key 0 (type) and key 1 (seq, unsigned) are required")
        return msg, slot

    def dispatch(self, mtype, seq, msg, slot):
        """The reply to one of `requests` (`handle` refused every other type), to a
        request made with the key of `slot`."""
        technician = self._is_technician(slot)
        if mtype == SETPOINT:
            return self._setpoint(seq, msg)
        if mtype == CONFIG_GET:
            if msg.get(2) is None:
                return self._config_all(field(msg, _CONFIG_NEXT, "next", optional=True) or 0)
            return self._config_get(msg.get(2))
        if mtype == CONFIG_SET:
            return self._config_set(msg.get(2), technician, slot)
        if mtype == EVENTS_GET:
            first = field(msg, 2, "first index", optional=True) or 0
            self.pile.flush_events()
            return self.send(EVENTS, {2: self.pile.events.since(first, _EVENTS_PER_REPLY)})
        if mtype == COMMAND:
            return self._command(seq, field(msg, 2, "command code"), technician)
        if mtype >= UPDATE_OFFER:
            return self._update(mtype, msg, technician)
        return self._diagnostics(field(msg, 2, "part", optional=True) or 0)  # DIAGNOSTICS_GET

    def _diagnostics(self, part):
        """One part of the firmware's counters, and how many parts there are."""
        parts = self.pile.diagnostic_parts
        if not 0 <= part < parts:
            raise Refused(ERR_OUT_OF_RANGE, "diagnostics part must be 0..%d" % (parts - 1))
        return self.send(DIAGNOSTICS, {2: self.pile.diagnostics(part), 3: parts})

    def _update(self, mtype, msg, technician):
        """A field-update request: the technician's key, and a package the pile maker
        signed, install firmware; anyone may ask how an update stands."""
        updater = self.pile.updates()
        if updater is None:
            raise Refused(ERR_UNKNOWN_TYPE, "this firmware takes no field updates")
        if mtype in _UPDATES and not technician:
            raise Refused(ERR_AUTH, "a firmware update " + _NEEDS_TECHNICIAN)
        from pile.update import UpdateError

        try:
            if mtype == UPDATE_OFFER:
                updater.offer(msg.get(2), msg.get(3), msg.get(4) == 1)
            elif mtype == UPDATE_CHUNK:
                updater.chunk(field(msg, 2, "offset"), msg.get(3), msg.get(4))
            elif mtype == UPDATE_COMMIT:
                updater.commit(msg.get(2))
        except UpdateError as exc:
            raise Refused(exc.code, exc.detail)
        return self.send(UPDATE_STATUS, updater.status())

    def _ack(self, seq, target, reasons):
        return self.send(ACK, {2: seq, 3: target, 4: reasons})

    def _setpoint(self, seq, msg):
        power = field(msg, 2, "power")
        ttl = field(msg, 3, "ttl")
        departure = field(msg, 4, "departure", optional=True)
        reserve = field(msg, 5, "reserve SOC", optional=True)
        mode = field(msg, _FREQ_MODE, "frequency mode", optional=True)
        revert = field(msg, _FREQ_REVERT, "frequency reversion", optional=True)
        try:
            target, reasons = self.pile.setpoint(power, ttl, departure, reserve, mode,
                                                 msg.get(_FREQ_CURVE), revert)
        except ValueError as exc:
            raise Refused(ERR_OUT_OF_RANGE, str(exc))
        except NotReady as exc:
            raise Refused(ERR_BUSY, str(exc))
        return self._ack(seq, target, reasons)

    def _config_get(self, keys):
        values = self.pile.cfg.values
        if type(keys) is not list:
            raise Refused(ERR_BAD_FIELD, "field 2 must be a list of keys")
        for key in keys:
            if key not in values:  # also refuses the link key: it is never read back
                raise Refused(ERR_BAD_FIELD, "unknown config key %r" % (key,))
        return self.send(CONFIG, {2: {key: values[key] for key in keys}})

    def _config_set(self, changes, technician, slot):
        if type(changes) is not dict or not changes:
            raise Refused(ERR_BAD_FIELD, "field 2 must be a non-empty map of key to value")
        for key_slot in range(SLOT_LINK, len(KEY_NAMES)):
            key = KEY_NAMES[key_slot]
            if key in changes:
                if not self.may_provision:
                    raise Refused(ERR_AUTH, "keys are set over the USB serial link only")
                if not technician:
                    raise Refused(ERR_AUTH, "a key change " + _NEEDS_TECHNICIAN)
                return self._provision(changes, key, key_slot)
        if not technician:  # the link key: the owner's settings only (docs/protocol.md)
            others = [key for key in changes if key not in OWNER_KEYS]
            if others:
                raise Refused(ERR_AUTH, "CONFIG_SET of %s %s; the link key sets the owner's "
                              "keys only (%s)" % (", ".join(sorted(others)), _NEEDS_TECHNICIAN,
                                                  ", ".join(OWNER_KEYS)))
        for key, value in changes.items():
            kind = int if key in INTEGERS else str if key in CHOICES else None
            if kind is None:
                raise Refused(ERR_BAD_FIELD, "unknown config key %r" % (key,))
            if type(value) is not kind:
                raise Refused(ERR_BAD_FIELD, "%s must be %s" % (key, "an integer" if kind is int
                                                                   else "a text string"))
        try:
            self.pile.set_config(changes, slot)
        except ConfigError as exc:
            raise Refused(ERR_OUT_OF_RANGE, str(exc))
        return self._config_all()

    def _config_all(self, first=0):
        """The keys from number `first` on that fit one frame, in the order keys were added
        (so a host that knows only the older keys gets them all at once), and where the
        listing goes on when some are left."""
        if not 0 <= first < len(KEY_NUMBERS):
            raise Refused(ERR_OUT_OF_RANGE, "next must be 0..%d" % (len(KEY_NUMBERS) - 1))
        values = self.pile.cfg.values
        dumps = self.codec.dumps
        shown = {}
        size = 0
        for index in range(first, len(KEY_NUMBERS)):
            key = KEY_NUMBERS[index]
            size += len(dumps(key)) + len(dumps(values[key]))
            if size > PAGE_BYTES:
                return self.send(CONFIG, {2: shown, _CONFIG_NEXT: index})
            shown[key] = values[key]
        return self.send(CONFIG, {2: shown})

    def _provision(self, changes, name, slot):
        if len(changes) != 1:
            raise Refused(ERR_BAD_FIELD, "set a key on its own")
        key = changes[name]
        if key is not None and (type(key) is not bytes or len(key) not in KEY_LENGTHS):
            raise Refused(ERR_OUT_OF_RANGE, "%s: 16, 24 or 32 bytes, or null to remove" % name)
        self.pile.set_key(key, slot)
        return self.send(CONFIG, {2: {}})  # signed with the pile's key now: proof it took

    def _command(self, seq, code, technician):
        pile = self.pile
        if code == CMD_STOP:  # anyone who may ask for power may ask for none
            pile.stop()
        elif code not in (CMD_RESET_FAULT, CMD_REBOOT, CMD_RELEASE):
            raise Refused(ERR_OUT_OF_RANGE, "command code must be 1..4")
        elif not technician:
            raise Refused(ERR_AUTH, "COMMAND %d %s" % (code, _NEEDS_TECHNICIAN))
        elif code == CMD_RESET_FAULT:
            pile.reset_fault()
        elif code == CMD_REBOOT:
            pile.request_reboot()
        elif not pile.release():
            raise Refused(ERR_BUSY, "the E-stop input is still active: clear it, then release")
        return self._ack(seq, pile.ctl.target, pile.ctl.reasons)


def field(msg, key, name, optional=False):
    """The integer of `msg` at `key` (None if `optional` and absent); Refused if it is no
    integer (`name` says what it is)."""
    value = msg.get(key)
    if value is None and optional:
        return None
    if type(value) is not int:
        raise Refused(ERR_BAD_FIELD, "field %d (%s) must be an integer" % (key, name))
    return value
