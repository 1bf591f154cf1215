"""A small MQTT 3.1.1 client on asyncio streams: what the pile's broker link needs.

Clean sessions only, QoS 0 publishes and subscription, a retained last will: a broker
never holds anything for the pile across a reconnect (docs/decisions.md says why this
and not umqtt or chumicro-mqtt). Packets are built whole and handed to the caller's
writer, and read one at a time with a bound on their size, so a broker that sends a
huge message costs a skip, not the heap. `split` takes packets off bytes already
received (a host's emulated piles); both read the length with `remaining_length`.
"""

from micropython import const

_CONNECT = const(0x10)
_CONNACK = const(0x20)
PUBLISH = const(0x30)
_SUBSCRIBE = const(0x82)  # with the reserved flags bit 1 that SUBSCRIBE must carry
SUBACK = const(0x90)
PINGREQ = b"\xc0\x00"
PINGRESP = const(0xD0)
DISCONNECT = b"\xe0\x00"
_RETAIN = const(0x01)
_SKIP = const(256)  # an oversized packet is read past this much at a time
_CONNACK_WHY = ("", "the broker does not speak MQTT 3.1.1", "the client id was refused",
                "the broker is unavailable", "wrong user name or password",
                "not authorised")


class MqttError(OSError):
    pass


def _length(n):
    """The remaining-length field: 7 bits a byte, low first."""
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | 0x80 if n else b)
        if not n:
            return out


def _text(s):
    if type(s) is str:
        s = s.encode()
    return bytes((len(s) >> 8, len(s) & 0xFF)) + s


def _packet(first, body):
    return bytes((first,)) + _length(len(body)) + body


def connect_packet(client_id, keepalive_s, user=None, password=None, will=None):
    """CONNECT with a clean session; `will` is (topic, payload), sent retained at QoS 1."""
    flags = 0x02
    body = _text(client_id)
    if will is not None:
        flags |= 0x04 | 0x08 | 0x20
        body += _text(will[0]) + _text(will[1])
    if user is not None:
        flags |= 0x80
        body += _text(user)
        if password is not None:
            flags |= 0x40
            body += _text(password)
    head = b"\x00\x04MQTT\x04" + bytes((flags, keepalive_s >> 8, keepalive_s & 0xFF))
    return _packet(_CONNECT, head + body)


def publish_packet(topic, payload, retain=False):
    return _packet(PUBLISH | (_RETAIN if retain else 0), _text(topic) + payload)


def subscribe_packet(packet_id, topic):
    return _packet(_SUBSCRIBE, bytes((packet_id >> 8, packet_id & 0xFF)) + _text(topic) + b"\x00")


def check_connack(kind, body):
    """Raise MqttError unless (kind, body) is a CONNACK that accepted the connection."""
    if kind != _CONNACK or len(body) != 2:
        raise MqttError("the broker answered CONNECT with packet type %d" % (kind >> 4))
    code = body[1]
    if code:
        why = _CONNACK_WHY[code] if code < len(_CONNACK_WHY) else "code %d" % code
        raise MqttError("the broker refused the connection: %s" % why)


def check_suback(kind, body, packet_id):
    if kind != SUBACK or len(body) != 3 or (body[0] << 8 | body[1]) != packet_id:
        raise MqttError("the broker answered SUBSCRIBE with packet type %d" % (kind >> 4))
    if body[2] & 0x80:
        raise MqttError("the broker refused the subscription (its ACL)")


def split_publish(first, body):
    """(topic, payload, retained) of an incoming PUBLISH at QoS 0; MqttError otherwise (the
    pile subscribes at QoS 0, so a broker never sends it QoS 1 or 2)."""
    if first & 0x06:
        raise MqttError("a PUBLISH at QoS %d, above the subscription's 0" % (first >> 1 & 3))
    n = body[0] << 8 | body[1]
    return bytes(body[2:2 + n]), body[2 + n:], bool(first & _RETAIN)


def remaining_length(buf, at=1):
    """(n, end) of the remaining-length field that starts at `buf[at]` (7 bits a byte,
    low first): the packet's body is the `n` bytes from `end` on. None while `buf` ends
    inside the field; MqttError for a field longer than its 4 bytes."""
    n = shift = 0
    while at < len(buf):
        b = buf[at]
        at += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, at
        shift += 7
        if shift > 21:
            raise MqttError("a packet length of more than 4 bytes")
    return None


def split(buffer, limit):
    """Take every whole packet off the front of `buffer` (a bytearray of the bytes come
    in so far): a list of (first byte, body) pairs, the body None when it was longer than
    `limit`. A packet not whole yet stays in `buffer` for the bytes that follow."""
    found = []
    start = 0  # of the next packet
    while len(buffer) - start >= 2:
        field = remaining_length(buffer, start + 1)
        if field is None:
            break
        n, at = field
        if len(buffer) < at + n:
            break
        found.append((buffer[start], bytes(buffer[at:at + n]) if n <= limit else None))
        start = at + n
    buffer[:start] = b""  # MicroPython's bytearray has no `del` of a slice
    return found


async def read_packet(reader, limit):
    """(first byte, body) of the next packet on a stream; the body is None when it was
    longer than `limit` (read past and dropped, never held). MqttError at the end of the
    stream."""
    head = await reader.read(1)
    if not head:
        raise MqttError("the broker closed the connection")
    field = bytearray(head)
    found = None
    while found is None:
        field += await reader.readexactly(1)
        found = remaining_length(field)
    n = found[0]
    if n > limit:
        while n:
            n -= len(await reader.readexactly(min(n, _SKIP)))
        return head[0], None
    return head[0], (await reader.readexactly(n) if n else b"")
