"""The pile's MQTT 3.1.1 packets (CPython and MicroPython).

The bytes are checked against the packet layouts of the MQTT 3.1.1 standard (OASIS,
sections 2 and 3) written out by hand here; tests/test_mqtt.py runs the same client
against a real Mosquitto.
"""

import asyncio

from fwtest import raises
from pile import mqtt
from pile.mqttlink import topics


class Stream:
    """A reader over fixed bytes, as asyncio's StreamReader reads them."""

    def __init__(self, data):
        self.data = data
        self.at = 0

    async def read(self, n):
        chunk = self.data[self.at:self.at + n]
        self.at += len(chunk)
        return chunk

    async def readexactly(self, n):
        chunk = await self.read(n)
        if len(chunk) < n:
            raise EOFError
        return chunk


def test_connect_asks_for_a_clean_session_with_a_retained_will_and_credentials():
    packet = mqtt.connect_packet("p1", 10, "p1", "pw", ("v2g/p1/status", b"offline"))
    body = (b"\x00\x04MQTT\x04" + bytes((0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02, 0, 10))
            + b"\x00\x02p1" + b"\x00\x0dv2g/p1/status" + b"\x00\x07offline"
            + b"\x00\x02p1" + b"\x00\x02pw")
    assert packet == bytes((0x10, len(body))) + body


def test_connect_without_credentials_or_will_is_only_a_clean_session():
    assert mqtt.connect_packet("a", 15) == b"\x10\x0d\x00\x04MQTT\x04\x02\x00\x0f\x00\x01a"


def test_publish_lengths_past_127_take_a_second_byte():
    short = mqtt.publish_packet("t/up", b"x")
    assert short == b"\x30\x07\x00\x04t/upx"
    long = mqtt.publish_packet("t/up", bytes(200))
    assert long[:3] == bytes((0x30, (206 & 0x7F) | 0x80, 206 >> 7)) and len(long) == 209
    assert mqtt.publish_packet("s", b"on", retain=True)[0] == 0x31


def test_subscribe_carries_its_id_the_topic_and_qos_0():
    assert mqtt.subscribe_packet(1, "v2g/p1/down") == b"\x82\x10\x00\x01\x00\x0bv2g/p1/down\x00"


def test_a_refused_connack_says_why():
    mqtt.check_connack(0x20, b"\x00\x00")
    with raises(mqtt.MqttError) as caught:
        mqtt.check_connack(0x20, b"\x00\x04")
    assert "wrong user name or password" in str(caught.value)
    with raises(mqtt.MqttError) as caught:
        mqtt.check_connack(0x20, b"\x00\x05")
    assert "not authorised" in str(caught.value)
    with raises(mqtt.MqttError):
        mqtt.check_connack(0x30, b"\x00\x00")


def test_a_suback_that_failed_is_an_acl_refusal():
    mqtt.check_suback(0x90, b"\x00\x01\x00", 1)
    with raises(mqtt.MqttError) as caught:
        mqtt.check_suback(0x90, b"\x00\x01\x80", 1)
    assert "ACL" in str(caught.value)
    with raises(mqtt.MqttError):
        mqtt.check_suback(0x90, b"\x00\x02\x00", 1)


def test_publishes_split_into_topic_payload_and_retain():
    packet = mqtt.publish_packet("v2g/p1/down", b"\xd1\x84", retain=True)
    first, body = asyncio.run(mqtt.read_packet(Stream(packet), 64))
    assert mqtt.split_publish(first, body) == (b"v2g/p1/down", b"\xd1\x84", True)
    with raises(mqtt.MqttError):  # QoS 1: never subscribed for
        mqtt.split_publish(0x32, body)


def test_an_oversized_packet_is_read_past_and_the_next_one_is_whole():
    big = mqtt.publish_packet("v2g/p1/down", bytes(1000))
    small = mqtt.publish_packet("v2g/p1/down", b"ok")
    stream = Stream(big + small)
    first, body = asyncio.run(mqtt.read_packet(stream, 600))
    assert first == 0x30 and body is None
    first, body = asyncio.run(mqtt.read_packet(stream, 600))
    assert mqtt.split_publish(first, body)[1] == b"ok"


def test_the_end_of_the_stream_and_a_runaway_length_are_errors():
    with raises(mqtt.MqttError):
        asyncio.run(mqtt.read_packet(Stream(b""), 64))
    with raises(mqtt.MqttError):
        asyncio.run(mqtt.read_packet(Stream(b"\x30\xff\xff\xff\xff\x01"), 64))
    first, body = asyncio.run(mqtt.read_packet(Stream(b"\xd0\x00"), 64))
    assert (first, body) == (mqtt.PINGRESP, b"")


def test_a_piles_topics():
    assert topics("v2g", "p-7") == ("v2g/p-7/up", "v2g/p-7/down", "v2g/p-7/status")


def test_the_remaining_length_is_read_from_bytes_or_waits_for_more():
    for n, field in ((0, b"\x00"), (127, b"\x7f"), (128, b"\x80\x01"), (16383, b"\xff\x7f"),
                     (16384, b"\x80\x80\x01"), (268435455, b"\xff\xff\xff\x7f")):
        packet = b"\x30" + field
        assert mqtt.remaining_length(packet) == (n, len(packet)), n
        assert mqtt.remaining_length(packet[:-1]) is None  # the field is not all here yet
    assert mqtt.remaining_length(b"xx\x05", 2) == (5, 3)
    with raises(mqtt.MqttError):  # a fifth byte would be needed: never a valid packet
        mqtt.remaining_length(b"\x30\xff\xff\xff\xff")


def test_packets_split_off_bytes_arriving_one_at_a_time():
    wire = (mqtt.publish_packet("v2g/p1/down", bytes(200)) + b"\xd0\x00"
            + mqtt.publish_packet("v2g/p1/down", b"ok", retain=True))
    buffer = bytearray()
    found = []
    for i in range(len(wire)):
        buffer += wire[i:i + 1]
        found += mqtt.split(buffer, 640)
    assert len(buffer) == 0 and len(found) == 3
    assert mqtt.split_publish(*found[0]) == (b"v2g/p1/down", bytes(200), False)
    assert found[1] == (mqtt.PINGRESP, b"")
    assert mqtt.split_publish(*found[2]) == (b"v2g/p1/down", b"ok", True)


def test_several_packets_in_one_buffer_and_a_partial_one_left_for_later():
    one = mqtt.publish_packet("t", b"1")
    two = mqtt.publish_packet("t", b"2")
    three = mqtt.publish_packet("t", bytes(300))
    buffer = bytearray(one + two + three[:5])
    assert [mqtt.split_publish(*p)[1] for p in mqtt.split(buffer, 640)] == [b"1", b"2"]
    assert bytes(buffer) == three[:5]
    buffer += three[5:]
    assert [mqtt.split_publish(*p)[1] for p in mqtt.split(buffer, 640)] == [bytes(300)]
    assert mqtt.split(buffer, 640) == [] and len(buffer) == 0


def test_an_oversized_body_is_split_off_as_none_and_the_next_packet_is_whole():
    buffer = bytearray(mqtt.publish_packet("t", bytes(1000)) + mqtt.publish_packet("t", b"ok"))
    (first, body), (_, small) = mqtt.split(buffer, 640)
    assert first == mqtt.PUBLISH and body is None
    assert mqtt.split_publish(first, small)[1] == b"ok" and len(buffer) == 0


def test_a_five_byte_length_is_an_error_split_or_streamed():
    with raises(mqtt.MqttError):
        mqtt.split(bytearray(b"\x30\xff\xff\xff\xff\x01"), 640)
    with raises(mqtt.MqttError):  # as soon as the fourth byte says more follow
        mqtt.split(bytearray(b"\x30\x80\x80\x80\x80"), 640)
    with raises(mqtt.MqttError):
        asyncio.run(mqtt.read_packet(Stream(b"\x30\x80\x80\x80\x80\x01"), 64))
