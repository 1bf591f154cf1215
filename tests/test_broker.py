"""Piles and the aggregator on a real Mosquitto (127.0.0.1, a config written per test),
or with PILE_BROKER=rabbitmq on a private RabbitMQ node (make test-rabbitmq).

The broker's ACL (pilectl/aggregator/broker.py) seen from outside with aiomqtt and with the
firmware's own MQTT packets; the real firmware (unix port, virtual bench, plant and
oracle) following the aggregator's fleet target through the broker across a broker
restart; replays and retained messages refused by the pile; two aggregator processes
sharing a fleet of emulated piles and the real firmware, one of them killed.
"""

import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import time
from collections import Counter
from types import SimpleNamespace

import aiomqtt
import pytest
from pile import mqtt
from pile.surface import Session
from pilectl import cose, keys, wire
from pilectl.aggregator import brokerlink, hostcodec
from pilectl.aggregator.broker import (
    QUEUED_PER_USER,
    acl,
    broker_class,
    make_certificates,
    write_config,
)
from pilectl.aggregator.emulator import EmulatedPile, broker_users, pile_ids
from pilectl.aggregator.fleet import parse
from pilectl.aggregator.link import PileLink
from pilectl.aggregator.service import Aggregator
from pilectl.vbench import VirtualBench, free_port

pytestmark = pytest.mark.usefixtures("socat")
Broker = broker_class()  # Mosquitto; PILE_BROKER=rabbitmq (make test-rabbitmq): RabbitMQ

USERS = {"p1": "pw-p1", "p2": "pw-p2", "agg-1": "pw-agg"}
BENCH = {"name": "broker", "plant": {"capacity_kwh": 60.0, "soc": 0.7}, "load_w": [[0, 2000]],
         "config": {"site_import_limit_w": 25000, "site_export_limit_w": 11000},
         "oracle": {"site_import_limit_w": 25000, "site_export_limit_w": 11000}}


@pytest.fixture
def broker(tmp_path):
    with Broker(tmp_path / "broker", USERS, ["agg-1"]) as running:
        yield running


def client(broker, user, password=None):
    return aiomqtt.Client("127.0.0.1", broker.port, username=user,
                          password=USERS[user] if password is None else password,
                          identifier=user)


async def received(messages, seconds):
    """The messages that came within `seconds`."""
    got = []
    try:
        async with asyncio.timeout(seconds):
            async for message in messages:
                got.append((message.topic.value, bytes(message.payload)))
    except TimeoutError:
        pass
    return got


def test_the_acl_names_each_aggregator_and_matches_piles_by_user_name():
    text = acl(["agg-1", "agg-2"])
    assert text.count("topic write v2g/+/down") == 2
    assert "pattern read v2g/%u/down" in text and "pattern write v2g/%u/up" in text


async def firmware_handshake(port, user, password):
    """The firmware's own CONNECT, from CPython against the broker: CONNACK checked."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(mqtt.connect_packet(user, 10, user, password))
        await writer.drain()
        mqtt.check_connack(*await mqtt.read_packet(reader, 4))
        writer.write(mqtt.subscribe_packet(1, f"v2g/{user}/down"))
        await writer.drain()
        mqtt.check_suback(*await mqtt.read_packet(reader, 8), 1)
    finally:
        writer.close()


async def test_wrong_credentials_are_refused(broker):
    with pytest.raises(aiomqtt.MqttError):
        async with client(broker, "p1", "not-the-password"):
            pass
    with pytest.raises(mqtt.MqttError, match="not authorised|wrong user name"):
        await firmware_handshake(broker.port, "p1", "not-the-password")
    with pytest.raises(mqtt.MqttError, match="not authorised|wrong user name"):
        await firmware_handshake(broker.port, "nobody", "pw")


async def publish_as(broker, user, topic, payload):
    """One publish on a connection of its own. A broker drops a forbidden one (Mosquitto)
    or closes the connection over it (RabbitMQ's MQTT plugin): both are a refusal, and
    what matters is checked on the receiving side."""
    try:
        async with client(broker, user) as sender:
            await sender.publish(topic, payload)
            await asyncio.sleep(0.2)
    except aiomqtt.MqttError:
        return "closed"
    return "sent"


async def test_a_pile_cannot_use_another_piles_topics(broker):
    await firmware_handshake(broker.port, "p1", USERS["p1"])  # its own: granted
    async with client(broker, "p2") as p2, client(broker, "agg-1") as agg:
        await agg.subscribe("v2g/+/up")
        await agg.subscribe("v2g/+/status")
        await p2.subscribe("v2g/p2/down")
        assert await publish_as(broker, "p1", "v2g/p1/up", b"its own") == "sent"
        for topic, forged in (("v2g/p2/up", b"forged telemetry"), ("v2g/p2/status", b"offline"),
                              ("v2g/p2/down", b"forged setpoint")):  # as if the aggregator
            await publish_as(broker, "p1", topic, forged)
        heard_by_spy, published = [], False
        try:
            async with client(broker, "p1") as spy:
                await spy.subscribe("v2g/p2/down")  # Mosquitto grants it and delivers nothing
                await spy.subscribe("v2g/+/up")
                await asyncio.sleep(0.2)
                await agg.publish("v2g/p2/down", b"the aggregator's")
                published = True
                await agg.publish("v2g/p2/up", b"not a pile's to read")
                heard_by_spy = await received(spy.messages, 0.5)
        except aiomqtt.MqttError:  # the broker closed the spy's connection over its
            if not published:  # subscription (RabbitMQ): p2 still gets the aggregator's
                await agg.publish("v2g/p2/down", b"the aggregator's")
        assert heard_by_spy == []
        assert await received(agg.messages, 1.0) == [("v2g/p1/up", b"its own")]
        assert await received(p2.messages, 0.5) == [("v2g/p2/down", b"the aggregator's")]


def bench_on_broker(tmp_path, broker, pile_id="p1", **mqtt_part):
    board = {"pile_id": pile_id, "mqtt": {"host": "127.0.0.1", "port": broker.port,
                                          "password": USERS[pile_id], "keepalive_s": 5,
                                          **mqtt_part}}
    return VirtualBench(tmp_path / "bench", dict(BENCH, board=board))


def broker_fleet(tmp_path, broker, bench, target_w, ttl_s=3):
    (tmp_path / "agg.password").write_text(USERS["agg-1"])
    keys.save(bench.key, tmp_path / "p1.key")
    return parse({"dispatch": {"period_s": 0.5, "ttl_s": ttl_s}, "target": {"power_w": target_w},
                  "broker": {"address": f"127.0.0.1:{broker.port}", "user": "agg-1",
                             "password_file": "agg.password", "keepalive_s": 5},
                  "pile": [{"id": "p1", "mqtt": True, "key_file": "p1.key"}]}, tmp_path)


async def run_until(aggregator, check, seconds):
    """Dispatch every period until `check(status)` holds; the status, or AssertionError."""
    loop = asyncio.get_running_loop()
    ends = loop.time() + seconds
    while loop.time() < ends:
        await aggregator.run(aggregator.dispatch.period_s)
        if check(aggregator.last):
            return aggregator.last
    raise AssertionError(f"not within {seconds} s: {aggregator.last}")


async def test_the_firmware_follows_the_fleet_through_the_broker_across_its_restart(
        tmp_path, broker):
    bench = bench_on_broker(tmp_path, broker)
    aggregator = None
    try:
        await bench.start()
        fleet = broker_fleet(tmp_path, broker, bench, -4000)
        aggregator = Aggregator(fleet)
        aggregator.start()
        status = await run_until(aggregator, lambda s: abs(s["delivered_w"] + 4000) <= 200, 10)
        assert status["online"] == 1
        broker.stop()  # the site's broker goes down: the setpoint runs out into the fallback
        await aggregator.run(fleet.dispatch.ttl_s + 1.5)  # dispatching on, to no one
        assert bench.sim.plant.commanded_w == 0 and abs(bench.sim.plant.power_w) < 100
        assert aggregator.last["online"] == 0
        broker.start()  # back on the same port: the pile dials again, the fleet resumes
        await run_until(aggregator, lambda s: abs(s["delivered_w"] + 4000) <= 200, 15)
        assert bench.firmware.returncode is None
        assert any("MQTT broker" in line for line in bench.firmware_output)  # said why
        assert aggregator.broker.connects == 2 and aggregator.counters["refused"] == 0
    finally:
        if aggregator is not None:
            await aggregator.stop()
        await bench.stop()
    assert bench.sim.oracle.violations == []


async def test_a_replayed_or_retained_request_is_refused_and_changes_nothing(tmp_path, broker):
    bench = bench_on_broker(tmp_path, broker)
    try:
        await bench.start()
        async with client(broker, "agg-1") as agg:
            await agg.subscribe("v2g/p1/up")
            await agg.publish("v2g/p1/down", wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: 0}))
            hello = await next_message(agg, bench, wire.HELLO)
            nonce, seq = hello[wire.HELLO_NONCE], hello[wire.HELLO_NEXT_SEQ]
            setpoint = cose.sign(bench.key, wire.encode({0: wire.SETPOINT, 1: seq, 2: 3000,
                                                         3: 30}), nonce)
            await agg.publish("v2g/p1/down", setpoint)
            ack = await next_message(agg, bench, wire.ACK, nonce)
            assert ack[2] == seq and ack[3] == 3000
            # the pile's connection taken over by its own client id: while it dials again,
            # a signed setpoint it never saw is retained on its down topic
            wired = await bench.serial(key=bench.key)
            try:
                async with client(broker, "p1"):
                    # the pile has seen its connection end (a broker may close it a moment
                    # after the takeover: RabbitMQ does), and waits at least 0.5 s to dial
                    while (await wired.diagnostics())["mqtt_failures"] < 1:
                        await asyncio.sleep(0.02)
                    held = cose.sign(bench.key, wire.encode({0: wire.SETPOINT, 1: seq + 1,
                                                             2: -5000, 3: 30}), nonce)
                    await agg.publish("v2g/p1/down", held, retain=True, qos=1)
            finally:
                await wired.close()
            hello = await next_message(agg, bench, wire.HELLO, seconds=10)  # it is back
            await agg.publish("v2g/p1/down", b"", retain=True)  # the retained one cleared
            await agg.publish("v2g/p1/down", setpoint)  # the first setpoint's bytes again
            error = await next_message(agg, bench, wire.ERROR, nonce)
            assert error[2] == seq and error[3] == wire.ERR_REPLAY
        await asyncio.sleep(1.0)
        assert bench.sim.plant.commanded_w == 3000  # neither the retained one nor the replay
        status = await bench.serial(key=bench.key)
        try:
            found = await status.diagnostics()
        finally:
            await status.close()
        assert found["mqtt_connects"] == 2 and found["frames_dropped"] == 1  # the retained
        assert found["requests_refused"] == 1  # the replay
    finally:
        await bench.stop()
    assert bench.sim.oracle.violations == []


async def next_message(agg, bench, kind, nonce=None, seconds=5):
    """The next message of `kind` the pile published on its up topic, verified."""
    async with asyncio.timeout(seconds):
        async for message in agg.messages:
            data = bytes(message.payload)
            if nonce is None:
                fields = wire.decode(cose.payload(data))
                fields = wire.decode(cose.verify(bench.key, data, fields[wire.HELLO_NONCE])) \
                    if fields[wire.TYPE] == wire.HELLO else fields
            else:
                fields = wire.decode(cose.verify(bench.key, data, nonce))
            if fields[wire.TYPE] == kind:
                return fields
    raise AssertionError(f"no message of type {kind}")


async def test_a_board_file_with_the_wrong_password_says_so_and_the_pile_runs_on(
        tmp_path, broker):
    bench = bench_on_broker(tmp_path, broker, password="wrong")
    try:
        await bench.start()
        await asyncio.sleep(1.0)
        said = [line for line in bench.firmware_output if "MQTT broker" in line]
        assert said and ("wrong user name" in said[0] or "not authorised" in said[0])
        technician = await bench.technician()  # TCP, and so the control loop, run on
        try:
            assert (await technician.telemetry())["state"] is not None
        finally:
            await technician.close()
        assert json.loads((tmp_path / "bench" / "board.json").read_text())["mqtt"]
    finally:
        await bench.stop()


async def diagnostics(bench):
    wired = await bench.serial(key=bench.key)
    try:
        return await wired.diagnostics()
    finally:
        await wired.close()


async def periods_over(bench, seconds):
    """Control periods the pile counted over `seconds` (4 a second when nothing delays them)."""
    first = (await diagnostics(bench))["periods"]
    await asyncio.sleep(seconds)
    return (await diagnostics(bench))["periods"] - first


async def test_a_broker_that_never_answers_delays_no_control_period(tmp_path):
    """A listener that takes the connection and says nothing: the handshake waits in its
    own task (a blocking client, umqtt.simple, held the loop for its whole socket timeout:
    docs/decisions.md)."""
    silent = await asyncio.start_server(lambda reader, writer: None, "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    board = {"pile_id": "p1", "mqtt": {"host": "127.0.0.1", "port": port, "password": "x"}}
    bench = VirtualBench(tmp_path / "bench", dict(BENCH, board=board))
    try:
        await bench.start()
        counted = await periods_over(bench, 4.0)
        assert counted >= 14, counted  # 16 at 250 ms
        await asyncio.sleep(8.0)  # the 10 s handshake limit passes: said, and tried again
        assert any("MQTT broker" in line and f"127.0.0.1:{port}" in line
                   for line in bench.firmware_output), bench.firmware_output
        assert (await diagnostics(bench))["mqtt_failures"] >= 1
    finally:
        await bench.stop()
        silent.close()


async def test_a_flood_on_the_down_topic_is_shed_and_delays_no_control_period(tmp_path, broker):
    bench = bench_on_broker(tmp_path, broker)
    try:
        await bench.start()
        async with client(broker, "agg-1") as agg:
            async def flood():
                for n in range(2000):
                    await agg.publish("v2g/p1/down", b"\xa2\x00\x03\x01" + bytes((n & 0x17,)))
                    if n % 100 == 0:
                        await asyncio.sleep(0.1)
            flooding = asyncio.create_task(flood())
            counted = await periods_over(bench, 3.0)
            await flooding
        assert counted >= 10, counted  # 12 at 250 ms
        found = await diagnostics(bench)
        assert found["requests_shed"] > 1000 and found["mqtt_connects"] == 1
    finally:
        await bench.stop()
    assert bench.sim.oracle.violations == []


class Worker:
    """`pile-aggregator run FLEET --worker NAME --json` as a process of its own; `latest`
    is its last period's status and `at` when that line came."""

    def __init__(self, proc):
        self.proc = proc
        self.latest = None
        self.at = None
        self._reading = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, fleet_path, name, password_file):
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "pilectl.aggregator.cli", "run", str(fleet_path), "--worker",
            name, "--password-file", str(password_file), "--json",
            stdout=asyncio.subprocess.PIPE)
        return cls(proc)

    async def _read(self):
        async for line in self.proc.stdout:
            self.latest = json.loads(line)
            self.at = time.monotonic()

    async def kill(self):
        if self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()
        self._reading.cancel()


async def wait_for(check, seconds, what):
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if check():
            return time.monotonic() - started
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {seconds} s: {what()}")


def within_2_pct(delivered_w, target_w):
    return abs(delivered_w - target_w) <= max(0.02 * abs(target_w), 1000)


async def test_two_workers_share_a_fleet_and_one_takes_over_when_the_other_dies(tmp_path):
    """120 emulated piles and the real firmware on one broker, two aggregator processes:
    every pile served by exactly one, the fleet total met; one killed with SIGKILL, its
    piles served again within 5 s and the total back within 2 % within 10 s."""
    ids = pile_ids(120, "m-")
    users = broker_users(tmp_path / "keys", ids)
    users.update({"p1": USERS["p1"], "agg-1": "pw-agg-1", "agg-2": "pw-agg-2"})
    for name in ("agg-1", "agg-2"):
        (tmp_path / f"{name}.password").write_text(users[name])
    target_w = -300000
    workers, emulator = [], None
    with Broker(tmp_path / "broker", users, ["agg-1", "agg-2"]) as broker:
        bench = bench_on_broker(tmp_path, broker)
        try:
            await bench.start()
            keys.save(bench.key, tmp_path / "p1.key")
            emulator = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "pilectl.aggregator.emulator", "--piles", "120", "--broker",
                f"127.0.0.1:{broker.port}", "--keys", str(tmp_path / "keys"), "--prefix", "m-",
                "--fleet", str(tmp_path / "emu.toml"), stdout=asyncio.subprocess.PIPE)
            assert (await asyncio.wait_for(emulator.stdout.readline(), 30)).startswith(b"ready")
            fleet = tmp_path / "fleet.toml"
            fleet.write_text(
                f"[dispatch]\nttl_s = 5\n\n[target]\npower_w = {target_w}\n\n[broker]\n"
                f'address = "127.0.0.1:{broker.port}"\nuser = "agg-1"\n'
                f'password_file = "agg-1.password"\nkeepalive_s = 3\n\n'
                f'[[pile]]\nid = "p1"\nmqtt = true\nkey_file = "p1.key"\ngroup = "real"\n\n'
                + (tmp_path / "emu.toml").read_text())
            workers = [await Worker.start(fleet, name, tmp_path / f"{name}.password")
                       for name in ("agg-1", "agg-2")]

            def fleet_now():
                return [w.latest for w in workers if w.latest is not None]

            def shared_and_met():
                found = fleet_now()
                return len(found) == 2 and all(s["workers"] == 2 for s in found) and \
                    sum(s["online"] for s in found) == 121 and \
                    sum(s["piles"] for s in found) == 121 and \
                    within_2_pct(sum(s["delivered_w"] for s in found), target_w)

            await wait_for(shared_and_met, 30, fleet_now)
            assert all(s["online"] > 30 for s in fleet_now())  # both serve a part
            doomed, survivor = sorted(workers, key=lambda w: w.latest["online"])
            await doomed.kill()
            served_s = await wait_for(lambda: survivor.latest["online"] == 121, 5,
                                      lambda: survivor.latest)
            met_s = await wait_for(lambda: within_2_pct(survivor.latest["delivered_w"],
                                                        target_w), 10, lambda: survivor.latest)
            print(f"served again after {served_s:.1f} s, total back after {met_s:.1f} s")
            assert survivor.latest["groups"]["real"]["delivered_w"] < 0  # the firmware too
        finally:
            for worker in workers:
                await worker.kill()
            if emulator is not None:
                emulator.kill()
                await emulator.wait()
            await bench.stop()
    assert bench.sim.oracle.violations == []


async def test_a_pile_on_tls_verifies_the_broker_and_a_wrong_ca_is_refused(tmp_path):
    """The pile dials the broker's TLS listener with the CA of the board file's ca_file;
    the aggregator on the plain listener of the same broker gets its ACK. A CA that did
    not sign the broker's certificate: no connection, and the pile says why."""
    with Broker(tmp_path / "broker", USERS, ["agg-1"], tls=True) as broker:
        ca = tmp_path / "broker" / "tls" / "ca.der"
        bench = bench_on_broker(tmp_path, broker, port=broker.tls_port, ca_file=str(ca),
                                tls_hostname="localhost")
        try:
            await bench.start()
            async with client(broker, "agg-1") as agg:
                await agg.subscribe("v2g/p1/up")
                await agg.publish("v2g/p1/down", wire.encode({wire.TYPE: wire.HELLO,
                                                              wire.SEQ: 0}))
                hello = await next_message(agg, bench, wire.HELLO)
                nonce, seq = hello[wire.HELLO_NONCE], hello[wire.HELLO_NEXT_SEQ]
                await agg.publish("v2g/p1/down", cose.sign(bench.key, wire.encode(
                    {0: wire.SETPOINT, 1: seq, 2: 2500, 3: 30}), nonce))
                ack = await next_message(agg, bench, wire.ACK, nonce)
                assert ack[3] == 2500
        finally:
            await bench.stop()
        other = make_certificates(tmp_path / "other")[1]  # a CA the broker never used
        bench = bench_on_broker(tmp_path / "b", broker, port=broker.tls_port,
                                ca_file=str(other), tls_hostname="localhost")
        try:
            await bench.start()
            await asyncio.sleep(1.5)
            said = [line for line in bench.firmware_output if "MQTT broker" in line]
            assert said, bench.firmware_output
            assert (await diagnostics(bench))["mqtt_connects"] == 0
        finally:
            await bench.stop()


def test_broker_config_writes_a_sites_mosquitto_files_that_let_each_pile_in(tmp_path):
    keys.save(keys.new_key(), tmp_path / "k.key")
    (tmp_path / "agg.password").write_text("pw-agg\n")
    (tmp_path / "fleet.toml").write_text(
        '[broker]\naddress = "127.0.0.1:1883"\nuser = "agg-1"\npassword_file = "agg.password"\n'
        + "".join(f'[[pile]]\nid = "{p}"\nmqtt = true\nkey_file = "k.key"\n'
                  for p in ("p1", "p2"))
        + '[[pile]]\nid = "t1"\ntcp = "127.0.0.1:7700"\nkey_file = "k.key"\n')
    port = free_port()

    def run(*more):
        return subprocess.run([sys.executable, "-m", "pilectl.aggregator.cli", "broker-config",
                               str(tmp_path / "fleet.toml"), str(tmp_path / "site"), "--port",
                               str(port), "--host", "127.0.0.1", *more],
                              capture_output=True, text=True)

    done = run()
    assert done.returncode == 0, done.stderr
    assert "2 piles, workers agg-1" in done.stdout and "mosquitto -c" in done.stdout
    password = (tmp_path / "site" / "piles" / "p1.password").read_text().strip()
    assert not (tmp_path / "site" / "piles" / "t1.password").exists()  # on TCP
    assert run("--worker", "agg-1", "--worker", "agg-2").returncode == 0  # a second worker
    assert (tmp_path / "site" / "piles" / "p1.password").read_text().strip() == password
    assert "pw-p1" not in (tmp_path / "site" / "passwd").read_text()  # hashed
    conf = (tmp_path / "site" / "mosquitto.conf").read_text()
    if os.geteuid() == 0:  # a site runs it as the mosquitto user from /etc; here, as root
        (tmp_path / "site" / "mosquitto.conf").write_text(conf + "user root\n")
    binary = shutil.which("mosquitto", path=os.environ["PATH"] + ":/usr/sbin")
    broker = subprocess.Popen([binary, "-c", str(tmp_path / "site" / "mosquitto.conf")],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        asyncio.run(connects_as(port, "p1", password))
        asyncio.run(connects_as(port, "agg-2", (tmp_path / "site" / "workers" /
                                                "agg-2.password").read_text().strip()))
        with pytest.raises(mqtt.MqttError):
            asyncio.run(connects_as(port, "p2", password))  # p1's password is p1's only
    finally:
        broker.terminate()
        broker.wait()
    failed = subprocess.run([sys.executable, "-m", "pilectl.aggregator.cli", "broker-config",
                             str(tmp_path / "nope.toml"), str(tmp_path / "x")],
                            capture_output=True, text=True)
    assert failed.returncode == 2 and "Traceback" not in failed.stderr



def test_a_workers_broker_holds_seconds_of_its_fleet_before_dropping(tmp_path):
    """Mosquitto 2.0 drops QoS 0 for a client once max_queued_messages packets wait for
    its socket: at 100, two workers starting on 10,000 piles lost the HELLOs of about 250
    (docs/performance.md). The config leaves room for QUEUED_PER_USER a user."""
    users = {f"p{i}": "pw" for i in range(400)} | {"agg-1": "pw-agg"}
    conf = write_config(tmp_path, free_port(), users, ["agg-1"]).read_text()
    queued = [int(line.split()[1]) for line in conf.splitlines()
              if line.startswith("max_queued_messages ")]
    assert queued and queued[0] >= QUEUED_PER_USER * len(users) >= 2000, conf


def worker_on_one_pile(tmp_path, sent):
    """A worker's BrokerLink serving pile p1 (its link, owned and subscribed), its QoS 0
    publishes recorded in `sent`, and the emulated pile p1 with its protocol session."""
    key = keys.new_key()
    keys.save(key, tmp_path / "p1.key")
    (tmp_path / "agg.password").write_text("pw")
    fleet = parse({"broker": {"address": "127.0.0.1:1", "user": "agg-1",
                              "password_file": "agg.password"},
                   "pile": [{"id": "p1", "mqtt": True, "key_file": "p1.key"}]}, tmp_path)
    counters = Counter()
    worker = brokerlink.BrokerLink(fleet.broker, [PileLink(fleet.piles[0], counters)],
                                   counters)
    paho = SimpleNamespace(publish=lambda topic, payload, retain=False: (
        sent.append((topic, payload)), SimpleNamespace(rc=0))[1])
    worker._client = SimpleNamespace(_client=paho)
    worker._joined, worker.workers, worker.owned = True, {"agg-1"}, {"p1"}
    pile = EmulatedPile("p1", key, None, random.Random(1))
    return worker, Session(pile.pile, codec=hostcodec)


def test_a_pile_that_speaks_without_answering_its_hello_is_asked_again(tmp_path,
                                                                        monkeypatch):
    """QoS 0 is lost when a broker drops it (above): a pile whose HELLO request or answer
    was lost sent TELEMETRY its worker could not check, and was never served. Asked again
    (after _HELLO_AGAIN_S, then twice as long each time), it is."""
    clock = [100.0]
    monkeypatch.setattr(brokerlink, "time", SimpleNamespace(monotonic=lambda: clock[0],
                                                            time=time.time))
    sent = []
    worker, pile = worker_on_one_pile(tmp_path, sent)
    worker._subscribed = {"p1"}
    link = worker.links["p1"]
    worker._route("v2g/p1/status", b"online")  # attached: its HELLO asked for...
    assert [topic for topic, _ in sent] == ["v2g/p1/down"] and link.attached
    worker._route("v2g/p1/up", pile.telemetry())  # ...and lost: it speaks unchecked
    assert len(sent) == 1 and not link.connected  # asked a moment ago: not yet again
    clock[0] += brokerlink._HELLO_AGAIN_S
    worker._route("v2g/p1/up", pile.telemetry())
    assert len(sent) == 2 and worker.counters["hellos_asked_again"] == 1
    clock[0] += brokerlink._HELLO_AGAIN_S  # then twice as long: a late answer is not
    worker._route("v2g/p1/up", pile.telemetry())  # asked for over and over
    assert len(sent) == 2
    clock[0] += brokerlink._HELLO_AGAIN_S
    worker._route("v2g/p1/up", pile.telemetry())
    assert len(sent) == 3 and worker.counters["hellos_asked_again"] == 2
    worker._route("v2g/p1/up", pile.handle(sent[-1][1]))  # this time its HELLO comes
    worker._route("v2g/p1/up", pile.telemetry())
    assert link.connected and link.heard_at is not None


def test_a_subscribe_unacknowledged_in_time_is_sent_again(tmp_path, monkeypatch):
    """A worker behind thousands of messages at a fleet's start read a SUBACK after
    aiomqtt's 10 s: the batch was given up on, and its piles (1,787 of one worker's 5,019
    at 10,000 piles) never served. The batch is sent again until acknowledged."""
    monkeypatch.setattr(brokerlink, "_SUBSCRIBE_AGAIN_S", 0, raising=False)
    sent, calls = [], []
    worker, _ = worker_on_one_pile(tmp_path, sent)

    async def subscribe(topics, timeout=None):
        calls.append(topics)
        if len(calls) == 1:
            raise aiomqtt.MqttError("Operation timed out")
        return (0,) * len(topics)

    worker._client.subscribe = subscribe
    worker.online = {"p1"}
    asyncio.run(worker._resubscribe())
    assert len(calls) == 2 and calls[1] == [("v2g/p1/up", 0)]
    assert worker._subscribed == {"p1"} and worker.links["p1"].attached
    assert worker.counters["subscribes_again"] == 1



async def test_a_worker_that_loses_piles_unsubscribes_them_at_once(tmp_path):
    """A worker that served a whole fleet until another joined sent its UNSUBSCRIBEs one
    batch at a time, each after the last one's UNSUBACK, which comes behind everything the
    broker queued for it: at 10,000 piles on two workers, behind seconds of TELEMETRY it
    was still reading at twice its share, so the UNSUBACKs came later still (some after
    30 s), and a target change behind that backlog reached it more than 20 s late
    (docs/performance.md). Every batch now goes at once, before any UNSUBACK."""
    piles = 3 * brokerlink._SUBSCRIBE_BATCH
    users = {"agg-1": "pw-agg-1", "agg-2": "pw-agg-2"}
    keys.save(keys.new_key(), tmp_path / "p.key")
    (tmp_path / "agg.password").write_text(users["agg-1"])
    with Broker(tmp_path / "broker", users, list(users)) as broker:
        fleet = parse({"broker": {"address": f"127.0.0.1:{broker.port}", "user": "agg-1",
                                  "password_file": "agg.password"},
                       "pile": [{"id": f"p{i:04d}", "mqtt": True, "key_file": "p.key"}
                                for i in range(piles)]}, tmp_path)
        counters = Counter()
        worker = brokerlink.BrokerLink(fleet.broker, [PileLink(e, counters) for e in fleet.piles],
                                       counters)
        running = asyncio.create_task(worker.run())
        try:
            await wait_for(lambda: len(worker._subscribed) == piles, 20,
                           lambda: len(worker._subscribed))  # alone: every pile
            mqtt_client = worker._client
            sent, acks = [], []  # (topics, UNSUBACKs come by then) per UNSUBSCRIBE
            unsubscribe, on_unsubscribe = mqtt_client.unsubscribe, \
                mqtt_client._client.on_unsubscribe

            async def unsubscribing(topics, **kwargs):
                sent.append((len(topics), len(acks)))
                return await unsubscribe(topics, **kwargs)

            def unsubscribed(*args):
                acks.append(args)
                on_unsubscribe(*args)

            mqtt_client.unsubscribe = unsubscribing
            mqtt_client._client.on_unsubscribe = unsubscribed
            async with aiomqtt.Client("127.0.0.1", broker.port, username="agg-2",
                                      password=users["agg-2"], identifier="agg-2") as other:
                await other.publish("v2g-agg/workers/agg-2", b"up", qos=1, retain=True)
                await wait_for(lambda: worker.workers == {"agg-1", "agg-2"} and
                               worker._subscribed == worker.owned and len(acks) == len(sent),
                               20, lambda: (sorted(worker.workers), len(sent), len(acks)))
            lost = piles - len(worker.owned)
            assert lost > brokerlink._SUBSCRIBE_BATCH and sum(n for n, _ in sent) == lost
            assert [before for _, before in sent] == [0] * len(sent), sent
            assert counters["subscribes_again"] == 0
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)


async def test_an_emulated_pile_whose_broker_never_answers_dials_again(tmp_path, monkeypatch):
    """A broker that takes the connection and never sends CONNACK (or SUBACK) held the
    emulated pile's handshake, and its place in the emulator's gate, for ever: the pile
    never came online and, with the gate's 64 places held so, no later pile dialled.
    Within _HANDSHAKE_S it gives up, frees its place and dials again."""
    from pilectl.aggregator import mqttpile

    monkeypatch.setattr(mqttpile, "_HANDSHAKE_S", 0.5, raising=False)
    connections = []

    async def broker(reader, writer):
        connections.append(writer)
        if len(connections) == 1:
            await reader.read(1024)  # the CONNECT, never answered
            return
        buffer = bytearray()
        while data := await reader.read(1024):
            buffer += data
            for first, body in mqtt.split(buffer, 1024):
                if first >> 4 == 1:  # CONNECT
                    writer.write(b"\x20\x02\x00\x00")
                elif first >> 4 == 8:  # SUBSCRIBE: packet id in the first two bytes
                    writer.write(b"\x90\x03" + body[:2] + b"\x00")

    server = await asyncio.start_server(broker, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    emulated = EmulatedPile("p1", keys.new_key(), None, random.Random(1))
    pile = mqttpile.BrokerPile(emulated, ("127.0.0.1", port), "pw")
    gate = asyncio.Semaphore(1)
    dialling = asyncio.create_task(pile.run(gate))
    try:
        async with asyncio.timeout(5):
            while not pile.ready:
                await asyncio.sleep(0.05)
        assert len(connections) == 2 and not gate.locked()
    finally:
        dialling.cancel()
        server.close()
        for writer in connections:
            writer.close()


async def connects_as(port, user, password):
    for _ in range(50):  # the broker just started
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            break
        except OSError:
            await asyncio.sleep(0.1)
    try:
        writer.write(mqtt.connect_packet(user, 10, user, password))
        await writer.drain()
        mqtt.check_connack(*await mqtt.read_packet(reader, 4))
    finally:
        writer.close()
