"""The host end of protocol v1 on one connection, without I/O (sans-IO, as h11).

Every host program that talks to a pile holds one `Session` per connection and moves
bytes itself: `pilectl.client.Client` (asyncio streams over TCP or a serial line, one
request at a time, for the technician and the OCPP bridge) and `aggregator.link.PileLink`
(callbacks on thousands of connections, TCP, serial or a broker). The session knows
the protocol: it asks for the HELLO, takes the pile's nonce from it and goes on above
the seqs the pile has seen (HELLO key 8), checks that the pile is the one expected,
signs each request with the key of the role (the technician's when it has one, else the
link key; none on an unkeyed pile), verifies and decodes what comes back, matches a
reply to its request and says which request fetches the next page of a listing.
Messages are bytes here; framing (COBS and CRC on a stream, MQTT on a broker) is the
transport's.
"""

import time

from pilectl import cborhead, cose, wire
from pilectl.wire import WireError


class PileError(Exception):
    """The pile refused a request with ERROR: `code` and its `detail` text."""

    def __init__(self, code, detail):
        name = wire.ERRORS.get(code, f"code {code}")
        super().__init__(f"pile refused ({name}): {detail}")
        self.code = code
        self.detail = detail


class KeyMismatch(WireError):
    """The pile's HELLO cannot be trusted: signed with a key this session does not have,
    or from another pile than the one expected. The connection is of no use."""


class BeforeHello(WireError):
    """A signed message before the HELLO (TELEMETRY still in a serial line): no nonce
    to check it with yet. Not the pile's fault; it says HELLO next."""


class Unexpected(WireError):
    """A reply of another type than the request asks for."""


def _microseconds():
    return time.time_ns() // 1000


class Session:
    def __init__(self, key=None, technician_key=None, keyring=None, pile_id=None,
                 clock=_microseconds):
        """`key` is the pile's link key (the aggregator's role), `technician_key` the
        technician's: with it every request is the technician's. A `keyring` (see
        pilectl.keys) finds both by the pile id of a signed HELLO. With `pile_id`, a HELLO
        from any other pile is refused.

        Seqs: a pile takes a signed message only with a seq above the last it accepted
        under that key in this boot (DESIGN section 5), and two tools may share a key (an
        aggregator and the OCPP bridge both hold the link key). So a seq is the next one
        and at least `clock()`, microseconds since the epoch: tools sharing a key take
        seqs in time order, and one that comes back after the other sent need not be
        refused and resume first. A refused seq still resumes from the pile's HELLO."""
        self._clock = clock
        self.key = key
        self.technician_key = technician_key
        self.keyring = keyring
        self.pile_id = pile_id
        self.seq = 0  # the last seq this host used
        self.hello = None  # the pile's latest HELLO, by wire number
        self.nonce = None  # its boot nonce: the external_aad of every MAC
        self.pending = ()  # a key being provisioned, until the pile signs with it
        self.rejected = 0  # messages from the pile that failed the MAC check or decoding
        self.last_rejection = ""
        self._kids = {}

    @property
    def greeted(self):
        """A HELLO came on this connection: requests can be signed."""
        return self.hello is not None

    def restart(self):
        """A new connection: wait for its HELLO. The seq goes on, the pile's window too."""
        self.hello = self.nonce = None

    # -- to the pile ----------------------------------------------------------------

    def ask_hello(self):
        """An unsigned HELLO: the pile answers with its own, its nonce and next seq. A
        serial line or a broker has no connect event, so the host asks."""
        return wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: self._next_seq()})

    def request(self, mtype, fields):
        """The message bytes for one request with the next seq, signed for the role."""
        return self.sign(wire.encode({wire.TYPE: mtype, wire.SEQ: self._next_seq(), **fields}))

    def setpoint(self, power_w, ttl_s):
        """A plain SETPOINT (power and ttl only), built directly: an aggregator's hot path
        (pilectl/cborhead.py makes wire.encode's bytes faster)."""
        return self.sign(cborhead.setpoint(self._next_seq(), power_w, ttl_s))

    def _next_seq(self):
        self.seq = max(self.seq + 1, self._clock())
        return self.seq

    def sign(self, message):
        """`message` signed with the technician's key when there is one, else with the link
        key; as it is when neither (a pile with no key takes unsigned requests)."""
        key = self.technician_key or self.key
        if key is None:
            return message
        kid = self._kids.get(key)
        if kid is None:
            kid = self._kids[key] = cose.key_id(key)
        return cose.sign(key, message, self.nonce or b"", kid)

    # -- from the pile --------------------------------------------------------------

    def receive(self, data):
        """The fields of one message from the pile, verified; a HELLO is taken in (nonce,
        seq). WireError (counted in `rejected`) for anything that is not a good message
        of this pile, KeyMismatch when its HELLO cannot be trusted."""
        try:
            fields = self._open(data)
            if fields[wire.TYPE] == wire.HELLO:
                self._take_hello(fields)
        except WireError as exc:
            self.rejected += 1
            self.last_rejection = str(exc)
            raise
        return fields

    def _open(self, data):
        if not cose.is_signed(data):
            fields = wire.decode(data)
            if self.pending == (None,):  # the key was just removed: its reply is unsigned
                self.key = None
            before_hello = self.hello is None and fields[wire.TYPE] == wire.ERROR  # busy
            if self.key is not None and not before_hello:
                raise WireError("the pile sent an unsigned message but this tool has a "
                                "key: provision the key on the pile")
            return fields
        mac = cose.Mac0(data)
        fields = wire.decode(mac.payload)
        is_hello = fields[wire.TYPE] == wire.HELLO
        if self.hello is None and not is_hello:  # e.g. TELEMETRY still in a serial line:
            raise BeforeHello("a signed message before the HELLO")  # no nonce to check it
        pile_id = fields.get(wire.HELLO_PILE_ID, "?")
        if is_hello and self.key is None and self.keyring is not None:
            try:
                self.key, found = self.keyring(fields.get(wire.HELLO_PILE_ID))
            except ValueError as exc:  # a damaged key file: say so instead of timing out
                raise KeyMismatch(str(exc)) from exc
            self.technician_key = self.technician_key or found
        candidates = [k for k in (self.key, self.technician_key, *self.pending) if k is not None]
        if not candidates:
            raise KeyMismatch(f"pile {pile_id} signs its messages and this tool has no key "
                              "for it: give --key-file, or provision a key over USB serial "
                              "(pilectl provision-key)")
        nonce = fields.get(wire.HELLO_NONCE, b"") if is_hello else self.nonce  # its own
        for key in candidates:
            if mac.made_with(key, nonce):
                if key is not self.technician_key:
                    self.key = key  # a provisioned key takes over once the pile signs with it
                return fields
        mismatch = mac.mismatch(candidates[0])
        if is_hello:
            raise KeyMismatch(f"{mismatch}: use the key provisioned on pile {pile_id} "
                              "(--key-file), or provision it again over USB serial")
        raise WireError(mismatch)

    def _take_hello(self, fields):
        pile_id = fields.get(wire.HELLO_PILE_ID)
        if self.pile_id is not None and pile_id != self.pile_id:
            raise KeyMismatch(f"{self.pile_id}: the pile says it is {pile_id!r}")
        self.hello = fields
        self.nonce = fields.get(wire.HELLO_NONCE, b"")
        self.resume(fields)

    def resume(self, hello):
        """Go on above every seq the pile has seen (HELLO key 8)."""
        self.seq = max(self.seq, hello.get(wire.HELLO_NEXT_SEQ, 0) - 1)

    # -- replies --------------------------------------------------------------------

    @staticmethod
    def reply(fields, expected, seq=None):
        """`fields` when they are the reply of type `expected` (None: any) to the request
        of `seq` (None: any); None when they are not, and the reply is still to come: a
        HELLO that came meanwhile (an earlier greeting still in the line, or the pile
        booted again), or an ACK or ERROR naming another seq (the answer to something
        sent before, such as a malformed frame's ERROR). PileError for an ERROR."""
        kind = fields[wire.TYPE]
        if kind == wire.HELLO and expected not in (wire.HELLO, None):
            return None
        if seq is not None and kind in (wire.ACK, wire.ERROR) and fields.get(
                wire.ACK_SEQ if kind == wire.ACK else wire.ERROR_SEQ) != seq:
            return None
        if kind == wire.ERROR:
            raise PileError(fields.get(wire.ERROR_CODE), fields.get(wire.ERROR_DETAIL, ""))
        if expected is not None and kind != expected:
            raise Unexpected(f"expected message type {expected}, got {kind}")
        return fields

    @staticmethod
    def next_page(request, reply):
        """(type, fields) of the request for the next page of a listing, or None when
        `reply` (to `request`'s fields) was its last: CONFIG goes on where it says,
        DIAGNOSTICS part by part up to its count (a pile before parts sends one)."""
        kind = reply[wire.TYPE]
        if kind == wire.CONFIG and wire.CONFIG_NEXT in reply:
            return wire.CONFIG_GET, {wire.CONFIG_NEXT: reply[wire.CONFIG_NEXT]}
        if kind == wire.DIAGNOSTICS:
            part = request.get(wire.BODY, 0) + 1
            if part < reply.get(wire.DIAGNOSTIC_PARTS, 1):
                return wire.DIAGNOSTICS_GET, {wire.BODY: part}
        return None
