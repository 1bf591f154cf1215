"""The aggregator end to end: emulated piles (pilectl/aggregator/emulator.py, the firmware's own
core under CPython) and real firmwares on virtual benches, over TCP on 127.0.0.1."""

import asyncio
import json
import random
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime

import pytest
from pile.surface import REASON_V2G_BUDGET
from pilectl import cose, keys, wire
from pilectl.aggregator.api import Metrics, application, serve
from pilectl.aggregator.fleet import FleetError, PileEntry, load, parse
from pilectl.aggregator.link import PileLink
from pilectl.aggregator.service import Aggregator
from pilectl.client import Client
from pilectl.vbench import VirtualBench, free_port
from prometheus_client import generate_latest

_TOKEN = "operator-token-0123456789"  # the fleet file's http_token_file

pytestmark = pytest.mark.usefixtures("socat")

BENCH = {"name": "fleet", "plant": {"capacity_kwh": 60.0, "soc": 0.7}, "load_w": [[0, 2000]],
         "config": {"site_import_limit_w": 25000, "site_export_limit_w": 11000},
         "oracle": {"site_import_limit_w": 25000, "site_export_limit_w": 11000}}


class Emulator:
    """`pile-emulator` as a process of its own; `fleet` holds its [[pile]] entries. Its
    ports lie below the ephemeral range (another port at random when one is taken)."""

    def __init__(self, directory, piles, prefix="emu-"):
        self.fleet = directory / f"{prefix}piles.toml"
        for _ in range(5):
            self.port = random.randrange(20000, 30000)
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "pilectl.aggregator.emulator", "--piles", str(piles),
                 "--port", str(self.port), "--keys", str(directory / "keys"), "--prefix", prefix,
                 "--fleet", str(self.fleet), "--groups", "2"], stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
            line = self.proc.stdout.readline()
            if line.startswith("ready"):
                return
            self.proc.wait()
        raise AssertionError(f"the emulator did not start: {self.proc.stderr.read()}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def fleet_file(directory, entries, target_w=0, ttl_s=4, schedule=None):
    """The fleet file DIRECTORY/fleet.toml for these [[pile]] entries, loaded: a fixed
    target, or a schedule file."""
    path = directory / "fleet.toml"
    target = f'schedule = "{schedule}"' if schedule else f"power_w = {target_w}"
    path.write_text(f"[dispatch]\nttl_s = {ttl_s}\n\n[target]\n{target}\n\n" + "".join(entries))
    return load(path)


async def settle(aggregator, seconds):
    """Dispatch for `seconds` (every period), as the service's own loop does."""
    await aggregator.run(seconds)
    return aggregator.last


def tolerance(target_w):
    return max(0.02 * abs(target_w), 1000)


async def test_emulated_piles_follow_targets_and_a_silent_pile_is_redistributed(tmp_path):
    main, doomed = Emulator(tmp_path, 40), Emulator(tmp_path, 4, prefix="cut-")
    aggregator = Aggregator(fleet_file(tmp_path, [main.fleet.read_text(),
                                                  doomed.fleet.read_text()], -150000))
    aggregator.start()
    try:
        status = await settle(aggregator, 6)
        assert status["online"] == 44 and status["shortfall_w"] == 0
        assert abs(status["delivered_w"] - -150000) <= tolerance(-150000), status
        aggregator.target.set(80000)  # absorb 80 kW
        status = await settle(aggregator, 5)
        assert abs(status["delivered_w"] - 80000) <= tolerance(80000), status
        doomed.stop()  # four piles gone: the rest take their share
        aggregator.target.set(-300000)
        status = await settle(aggregator, 5)
        assert status["online"] == 40 and status["excluded"] == 4
        assert abs(status["delivered_w"] - -300000) <= tolerance(-300000), status
        aggregator.target.set(-600000)  # beyond the envelopes: clipped, the shortfall said
        status = await settle(aggregator, 4)
        assert status["planned_w"] == status["envelope_low_w"] == -440000
        assert status["shortfall_w"] == -160000
        assert aggregator.counters["refused"] == 0
    finally:
        await aggregator.stop()
        main.stop()
        doomed.stop()


async def test_an_aggregator_restart_resumes_without_replays_or_a_gap(tmp_path):
    emulator = Emulator(tmp_path, 10)
    fleet = fleet_file(tmp_path, [emulator.fleet.read_text()], -50000, ttl_s=4)
    first = Aggregator(fleet)
    first.start()
    try:
        await settle(first, 4)
        await first.stop()  # killed: its piles hold the setpoint until the ttl ends
        stopped = time.monotonic()
        second = Aggregator(fleet)
        second.start()
        await settle(second, 3)
        assert time.monotonic() - stopped < fleet.dispatch.ttl_s
        status = second.last
        assert second.counters["refused"] == 0  # no replay: HELLO key 8 told the seq
        assert abs(status["delivered_w"] - -50000) <= tolerance(-50000), status
        await second.stop()
    finally:
        emulator.stop()


async def test_the_http_api_and_metrics(tmp_path):
    emulator = Emulator(tmp_path, 5)
    aggregator = Aggregator(fleet_file(tmp_path, [emulator.fleet.read_text()]))
    metrics = Metrics()
    aggregator.on_status = metrics.record
    port, bare = free_port(), free_port()
    runner = await serve(application(aggregator, metrics, _TOKEN), "127.0.0.1", port)
    tokenless = await serve(application(aggregator, metrics), "127.0.0.1", bare)
    aggregator.start()

    def call(method, path, body=None, token=_TOKEN, to=port):
        request = urllib.request.Request(f"http://127.0.0.1:{to}{path}", method=method,
                                         data=None if body is None else body.encode(),
                                         headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, reply.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    try:
        await settle(aggregator, 2)
        loop = asyncio.get_running_loop()
        status, body = await loop.run_in_executor(None, call, "PUT", "/target",
                                                  '{"power_w": -20000, "for_s": 60}')
        assert status == 200 and json.loads(body) == {"power_w": -20000, "source": "api"}
        status, body = await loop.run_in_executor(None, call, "PUT", "/target", '{"power": 1}')
        assert status == 400 and "power_w must be whole watts" in json.loads(body)["error"]
        status, body = await loop.run_in_executor(None, call, "PUT", "/target", "not json")
        assert status == 400 and "send JSON" in json.loads(body)["error"]
        for endless in ("NaN", "Infinity", "true"):  # JSON as Python reads it
            status, body = await loop.run_in_executor(
                None, call, "PUT", "/target", f'{{"power_w": -3000, "for_s": {endless}}}')
            assert status == 400 and "for_s must be seconds" in json.loads(body)["error"]
        for token, to, code in (("wrong-token-of-16-chars", port, 401), (_TOKEN, bare, 403)):
            status, body = await loop.run_in_executor(None, call, "DELETE", "/target", None,
                                                      token, to)
            assert status == code and "http_token_file" in json.loads(body)["error"]
        assert aggregator.target.now()[1] == "api"  # neither write changed the target
        await settle(aggregator, 4)
        status, body = await loop.run_in_executor(None, call, "GET", "/status?piles=1")
        found = json.loads(body)
        assert found["target_w"] == -20000 and len(found["pile_list"]) == 5
        assert abs(found["delivered_w"] - -20000) <= tolerance(-20000)
        status, body = await loop.run_in_executor(None, call, "GET", "/metrics")
        assert "aggregator_piles_online 5.0" in body
        assert "aggregator_dispatch_seconds_count" in body
        # a total is a counter, so Prometheus's rate() takes an aggregator restart in stride
        assert "# TYPE aggregator_setpoints_sent_total counter" in body
        sent = float(body.split("\naggregator_setpoints_sent_total ")[1].split()[0])
        assert 0 < sent <= aggregator.counters["setpoints_sent"]
        status, body = await loop.run_in_executor(None, call, "DELETE", "/target")
        assert json.loads(body) == {"power_w": 0, "source": "default"}
    finally:
        await aggregator.stop()
        await runner.cleanup()
        await tokenless.cleanup()
        emulator.stop()


async def test_a_pile_whose_owners_budget_is_spent_discharges_no_more(tmp_path):
    emulator = Emulator(tmp_path, 4)
    fleet = fleet_file(tmp_path, [emulator.fleet.read_text()], -24000)
    aggregator = Aggregator(fleet)
    metrics = Metrics()
    aggregator.on_status = metrics.record
    aggregator.start()
    owner = None
    try:
        status = await settle(aggregator, 4)
        assert status["budget_piles"] == 0 and status["budget_spent"] == 0
        spent = fleet.piles[0]
        owner = await Client.tcp(*spent.tcp, key=spent.key)  # the owner's tool: the link key
        await owner.config_set({"budget_wh_day": 0})  # no V2G today
        await owner.close()
        owner = None
        status = await settle(aggregator, 4)
        assert status["budget_piles"] == 1 and status["budget_spent"] == 1
        assert status["budget_left_wh"] == 0 and status["shortfall_w"] == 0
        assert abs(status["delivered_w"] - -24000) <= tolerance(-24000), status
        piles = {p["id"]: p for p in aggregator.pile_status()}
        mine = piles[spent.pile_id]
        assert mine["budget_spent"] and mine["budget_left_wh"] == 0
        assert mine["setpoint_w"] == 0 and mine["applied_w"] == 0
        assert mine["reasons"] & REASON_V2G_BUDGET and mine["max_discharge_w"] == 0
        assert all(p["setpoint_w"] == -8000 for p in piles.values() if p is not mine)
        assert "aggregator_piles_budget_spent 1.0" in generate_latest(metrics.registry).decode()
        from pilectl.aggregator.cli import _table
        from rich.console import Console

        console = Console(record=True, width=160)
        console.print(_table(status))
        assert "V2G budgets: 1 of 1 spent, 0.0 kWh left" in console.export_text()
    finally:
        if owner is not None:
            await owner.close()
        await aggregator.stop()
        emulator.stop()


async def test_real_firmwares_and_emulated_piles_follow_one_schedule(tmp_path):
    """Three firmwares on virtual benches (two on TCP, one on its serial link) and 200
    emulated piles: a schedule followed, a group of piles cut off and redistributed, the
    aggregator killed and restarted."""
    benches = [VirtualBench(tmp_path / f"bench{i}", dict(BENCH, board={"pile_id": f"real-{i}"}))
               for i in range(3)]
    emulator, doomed = Emulator(tmp_path, 200), Emulator(tmp_path, 10, prefix="cut-")
    aggregator = None
    try:
        for bench in benches:
            await bench.start()
        entries = [emulator.fleet.read_text(), doomed.fleet.read_text()]
        for i, bench in enumerate(benches):  # the last one on its serial link
            key_file = keys.save(bench.key, tmp_path / f"real-{i}.key")
            link = f'serial = "{bench.serial_device}"' if i == 2 else \
                f'tcp = "127.0.0.1:{bench.tcp_port}"'
            entries.append(f'[[pile]]\nid = "real-{i}"\n{link}\n'
                           f'key_file = "{key_file}"\ngroup = "real"\n\n')
        schedule = tmp_path / "schedule.toml"
        start = datetime.now(UTC).isoformat(timespec="seconds")
        schedule.write_text(f"start = {start}\n\n[[step]]\nat_s = 0\npower_w = -400000\n\n"
                            "[[step]]\nat_s = 13\npower_w = 250000\n")
        fleet = fleet_file(tmp_path, entries, schedule=schedule)
        aggregator = Aggregator(fleet)
        trace = []
        aggregator.on_status = trace.append
        aggregator.start()
        status = await settle(aggregator, 8)
        assert status["online"] == 213, status
        assert abs(status["delivered_w"] - -400000) <= tolerance(-400000), status
        real = status["groups"]["real"]
        assert real["online"] == 3 and real["delivered_w"] < 0  # the firmwares take part
        doomed.stop()  # ten piles cut off: excluded within 3 periods, their share moved
        status = await settle(aggregator, 4)
        assert status["online"] == 203 and status["excluded"] == 10
        assert abs(status["delivered_w"] - -400000) <= tolerance(-400000), status
        first = next(s for s in trace if s["excluded"] == 10)  # the period they left in
        assert first["planned_w"] == -400000  # their share already went to the others
        await aggregator.stop()  # the aggregator killed mid-run, and started again: the
        aggregator = Aggregator(fleet)  # schedule's start keeps it where it was
        aggregator.on_status = trace.append
        aggregator.start()
        status = await settle(aggregator, 8)
        assert status["target_w"] == 250000 and status["source"] == "schedule"
        assert abs(status["delivered_w"] - 250000) <= tolerance(250000), status
        assert aggregator.counters["refused"] == 0  # no replay after the restart
        gap = max(b["t"] - a["t"] for a, b in zip(trace, trace[1:], strict=False))
        assert gap < fleet.dispatch.ttl_s  # setpoints never lapsed across the restart
    finally:
        if aggregator is not None:
            await aggregator.stop()
        emulator.stop()
        doomed.stop()
        for bench in benches:
            await bench.stop()
    for bench in benches:
        assert bench.sim.oracle.violations == []
    trace_file = tmp_path / "trace.jsonl"
    trace_file.write_text("".join(json.dumps(s) + "\n" for s in trace))
    plotted = subprocess.run([sys.executable, "-m", "pilectl.aggregator.cli", "plot",
                              str(trace_file), str(tmp_path / "fleet.png")],
                             capture_output=True, text=True)
    assert plotted.returncode == 0 and (tmp_path / "fleet.png").stat().st_size > 10000


async def test_an_emulated_pile_keeps_two_clients_as_the_firmware_does(tmp_path, monkeypatch):
    # a link sent away stays away
    monkeypatch.setattr("pilectl.aggregator.link._FIRST_RETRY_MS", 30000)
    emulator = Emulator(tmp_path, 1)
    pile_id = "emu-00000"
    entry = PileEntry(pile_id, keys.read(tmp_path / "keys" / f"{pile_id}.key"),
                      ("127.0.0.1", emulator.port))
    counters = Counter()
    links = [PileLink(entry, counters) for _ in range(3)]
    tasks = []
    try:
        for link in links:  # one after the other: the oldest is the first
            tasks.append(asyncio.create_task(link.run()))
            for _ in range(100):
                if link.heard_at is not None:
                    break
                await asyncio.sleep(0.05)
            assert link.heard_at is not None, "no TELEMETRY after an accepted request"
        await asyncio.sleep(0.3)
        assert [link.connected for link in links] == [False, True, True]
        assert counters["refused"] == 0
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        emulator.stop()


async def test_a_garbled_pile_is_dropped_and_dialled_again(tmp_path):
    """Frames with a good CRC but no protocol inside: the link says so, drops the
    connection and dials again, and a callback never raises into the event loop."""
    connections = []

    async def garble(reader, writer):
        connections.append(writer)
        bad = [b"\xff\xfe", b"\xd1\x84\xff", wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: 0}),
               cose.sign(bytes(32), wire.encode({wire.TYPE: wire.HELLO, wire.SEQ: 1,
                                                          wire.HELLO_PILE_ID: "other",
                                                          wire.HELLO_NONCE: b"n"}), b"n")]
        writer.write(wire.frame(bad[(len(connections) - 1) % len(bad)]))
        await writer.drain()
        await reader.read()  # until the link hangs up

    loop = asyncio.get_running_loop()
    errors = []
    loop.set_exception_handler(lambda _, context: errors.append(context))
    server = await asyncio.start_server(garble, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    counters = Counter()
    link = PileLink(PileEntry("p1", bytes(32), ("127.0.0.1", port)), counters)
    task = asyncio.create_task(link.run())
    try:
        for _ in range(150):
            if counters["link_errors"] >= 3:
                break
            await asyncio.sleep(0.1)
        assert counters["link_errors"] >= 3 and not task.done() and not errors
        assert len(connections) >= 3 and link.hello is None
    finally:
        task.cancel()
        server.close()
        loop.set_exception_handler(None)


def test_fleet_file_mistakes_say_what_to_do(tmp_path):
    key_file = keys.save(keys.new_key(), tmp_path / "k.key")
    pile = {"id": "a", "tcp": "127.0.0.1:7700", "key_file": str(key_file)}
    assert parse({"pile": [pile]}, tmp_path).piles[0].tcp == ("127.0.0.1", 7700)
    cases = [({"pile": []}, "no [[pile]] entries"),
             ({"pile": [pile, pile]}, "listed twice"),
             ({"pile": [dict(pile, tcp="nowhere")]}, "is not HOST:PORT"),
             ({"pile": [dict(pile, key_file="missing.key")]}, "no key file"),
             ({"pile": [{"id": "a", "key_file": str(key_file)}]},
              'give one of tcp = "HOST:PORT"'),
             ({"pile": [dict(pile, mqtt=True)]}, "give one of tcp"),
             ({"pile": [{"id": "a", "mqtt": True, "key_file": str(key_file)}]},
              "need a [broker] section"),
             ({"pile": [{"id": "a/b", "mqtt": True, "key_file": str(key_file)}]},
              "one topic level"),
             ({"pile": [pile], "broker": {"address": "127.0.0.1:1883", "user": "agg",
                                          "password_file": "nope"}}, "cannot read password_file"),
             ({"pile": [pile], "broker": {"address": "127.0.0.1:1883", "user": "agg",
                                          "password_file": str(key_file), "keepalive_s": 0}},
              "keepalive_s must be"),
             ({"pile": [pile], "dispatch": {"ttl_s": 1}}, "cover two periods"),
             ({"pile": [pile], "dispatch": {"period": 1}}, "unknown key 'period'"),
             ({"pile": [pile], "target": {"power_w": 1.5}}, "must be whole watts"),
             ({"piles": []}, "unknown section 'piles'")]
    for data, message in cases:
        with pytest.raises(FleetError, match=message.replace("[", r"\[").replace("]", r"\]")):
            parse(data, tmp_path)


def test_the_command_line_says_what_is_wrong_without_a_traceback(tmp_path):
    bad = tmp_path / "fleet.toml"
    bad.write_text("[[pile]]\nid = 3\n")
    result = subprocess.run([sys.executable, "-m", "pilectl.aggregator.cli", "run", str(bad)],
                            capture_output=True, text=True)
    assert result.returncode == 2 and "id (text) is required" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_operator_runs_it_from_the_command_line(tmp_path):
    emulator = Emulator(tmp_path, 6)
    try:
        fleet_file(tmp_path, [emulator.fleet.read_text()], -30000)
        fleet = tmp_path / "fleet.toml"
        trace = tmp_path / "trace.jsonl"
        result = subprocess.run([sys.executable, "-m", "pilectl.aggregator.cli", "run", str(fleet),
                                 "--json", "--duration", "5", "--trace", str(trace)],
                                capture_output=True, text=True, timeout=60)
    finally:
        emulator.stop()
    assert result.returncode == 0, result.stderr
    periods = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(periods) == 5 and trace.read_text().count("\n") == 5
    last = periods[-1]
    assert last["online"] == 6 and abs(last["delivered_w"] - -30000) <= tolerance(-30000)
    from pilectl.aggregator.cli import _table
    from rich.console import Console

    console = Console(record=True, width=120)
    console.print(_table(last))
    shown = console.export_text()
    assert "6 of 6 piles heard" in shown and "-30.0 kW" in shown and "group g0" in shown
