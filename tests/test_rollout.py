"""Rollouts: a signed update package put on a fleet in waves by the aggregator
(pilectl/aggregator/rollout.py), over real TCP and a real Mosquitto, onto emulated piles
that run the firmware's own Updater (pilectl/aggregator/emulator.py --release-key), with
packages made by pilectl.release and a real release key pair.

The whole fleet's waves; a planted bad version halting the rollout at the canary wave,
every canary back on the old version and no other pile offered the package; piles
without a technician's key skipped and reported (through the CLI); a refusal halting it
(through the HTTP API, with its token). The 1,000-pile rollout with a real firmware is
bench/rollout_bench.py's.
"""

import asyncio
import json
import random
import subprocess
import sys
import urllib.request

import bootstage
import pytest
from helpers import stop_serving
from pile.surface import UPDATE_IDLE, VERSION
from pilectl import keys, release, wire
from pilectl.aggregator.api import Metrics, application, serve
from pilectl.aggregator.broker import broker_class
from pilectl.aggregator.emulator import broker_users, pile_ids
from pilectl.aggregator.emuupdate import BootStage
from pilectl.aggregator.fleet import PileEntry, load, technician_key
from pilectl.aggregator.rollout import Rollout, Settings
from pilectl.aggregator.service import Aggregator
from pilectl.vbench import free_port

NEW = "2.0.0"
BAD = "6.6.6"
MPY = 6 | 3 << 8  # the .mpy version the emulated piles load (pile-emulator --mpy 6.3)


@pytest.fixture(scope="module")
def maker(tmp_path_factory):
    """The pile maker's release key pair: (private key, public key hex)."""
    path = tmp_path_factory.mktemp("maker") / "release.pem"
    public = release.keygen(path)
    return release.load_private(path), public


def package(maker, version, arch="xtensawin"):
    """A small signed package (about 20 chunks) made as `pilectl release build` makes one."""
    rng = random.Random(version)
    files = {"pile/__init__.mpy": rng.randbytes(300), "pile/app.mpy": rng.randbytes(6000),
             "profiles/generic-v2g.json": b'{"name": "generic"}'}
    return release.make(files, version, arch, MPY, maker[0])


class Emulator:
    """`pile-emulator` with field updates on, as a process of its own; `fleet` holds its
    [[pile]] entries. On TCP its ports lie below the ephemeral range (others at random
    when one is taken); with `broker` its piles dial it."""

    def __init__(self, directory, piles, public, *more, prefix="emu-", broker=None):
        self.fleet = directory / f"{prefix}piles.toml"
        base = [sys.executable, "-m", "pilectl.aggregator.emulator", "--piles", str(piles),
                "--keys", str(directory / "keys"), "--prefix", prefix, "--fleet",
                str(self.fleet), "--state", str(directory / f"{prefix}state"),
                "--release-key", public, "--trial-s", "3", "--confirm-periods", "2", *more]
        for _ in range(5):
            where = ["--broker", f"127.0.0.1:{broker}"] if broker else \
                ["--port", str(random.randrange(20000, 30000))]
            self.proc = subprocess.Popen(base + where, stdout=subprocess.PIPE,
                                         stderr=subprocess.PIPE, text=True)
            if self.proc.stdout.readline().startswith("ready"):
                return
            self.proc.kill()
            self.proc.wait()
        raise AssertionError(f"the emulator did not start: {self.proc.stderr.read()}")

    def stop(self):
        self.proc.kill()
        self.proc.wait()


def fleet_file(directory, entries, extra=""):
    path = directory / "fleet.toml"
    path.write_text(f"[dispatch]\nttl_s = 4\n\n[target]\npower_w = -20000\n{extra}\n"
                    + "".join(entries))
    return path


async def rolled_out(aggregator, package, settings, within_s=50):
    """Dispatch while `package` is rolled out; the Rollout once it ended."""
    dispatching = asyncio.create_task(aggregator.run())
    try:
        rollout = aggregator.start_rollout(package, settings)
        await asyncio.wait_for(aggregator.rollout_ended(), within_s)
        return rollout
    finally:
        dispatching.cancel()
        await asyncio.gather(dispatching, return_exceptions=True)


async def where_update_stands(link):
    """The pile's own UPDATE_STATUS, asked under the link key."""
    return await asyncio.wait_for(link.update_request(wire.UPDATE_GET, {}), 5)


def firmware(link):
    return link.hello[wire.HELLO_FIRMWARE]


async def test_a_fleet_is_updated_in_waves_each_after_the_last_confirmed(tmp_path, maker):
    emulator = Emulator(tmp_path, 24, maker[1])
    aggregator = Aggregator(load(fleet_file(tmp_path, [emulator.fleet.read_text()])))
    aggregator.start()
    try:
        rollout = await rolled_out(aggregator, package(maker, NEW),
                                   Settings(canary_percent=5, wave_percent=50, parallel=8))
        summary = rollout.summary()
        assert summary["state"] == "done" and summary["updated"] == 24, summary
        assert summary["wave_sizes"] == [2, 12, 10] and len(summary["wave_seconds"]) == 3
        piles = rollout.piles.values()
        for wave in (1, 2):  # a wave starts once every pile of the one before confirmed
            done = max(p.finished for p in piles if p.wave == wave)
            assert done <= min(p.started for p in piles if p.wave == wave + 1)
        assert all(firmware(link) == NEW for link in aggregator.links)
        assert aggregator.counters["refused"] == 0
        status = aggregator.dispatch_once()
        assert status["rollout"]["updated"] == 24 and status["online"] >= 20
        metrics = Metrics()
        metrics.record(status)
        from prometheus_client import generate_latest

        text = generate_latest(metrics.registry).decode()
        assert 'aggregator_rollout_piles{state="updated"} 24.0' in text
        assert 'aggregator_rollout_state{aggregator_rollout_state="done"} 1.0' in text
        assert "aggregator_rollout_wave 3.0" in text
    finally:
        await aggregator.stop()
        emulator.stop()


async def test_a_bad_version_halts_at_the_canary_wave_every_canary_rolled_back(
        tmp_path, maker):
    emulator = Emulator(tmp_path, 20, maker[1], "--bad-version", BAD)
    aggregator = Aggregator(load(fleet_file(tmp_path, [emulator.fleet.read_text()])))
    aggregator.start()
    try:
        rollout = await rolled_out(aggregator, package(maker, BAD),
                                   Settings(canary_percent=10, parallel=4))
        summary = rollout.summary()
        canaries = summary["canaries"]
        assert summary["state"] == "halted" and summary["wave"] == 1 and len(canaries) == 2
        assert sorted(f["pile"] for f in summary["failures"]) == sorted(canaries)
        for failure in summary["failures"]:
            assert failure["kind"] == "rolled back"
            assert "did not confirm itself within 3 s" in failure["reason"], failure
        assert summary["pending"] == 18 and summary["updated"] == 0
        assert aggregator.live.fleet()["rolled_back"] == 2  # as the live page shows them
        for pile_id in canaries:
            detail = aggregator.live.detail(pile_id)
            assert detail["pile"]["rollout"] == "rolled back"
            assert f"HELLO: firmware {VERSION} (was {BAD})" in [
                event["text"] for event in detail["events"]], detail["events"]
        links = {link.entry.pile_id: link for link in aggregator.links}
        for pile_id in canaries:  # back on the old version, and saying why in its HELLO
            link = links[pile_id]
            assert firmware(link) == VERSION
            assert link.hello[wire.HELLO_ROLLBACK][:1] == [BAD]
        for pile_id, link in links.items():
            if pile_id not in canaries:  # never offered: nothing under way, nothing refused
                status = await where_update_stands(link)
                assert status[2] == UPDATE_IDLE and status[10] is None, status
                assert firmware(link) == VERSION
    finally:
        await aggregator.stop()
        emulator.stop()


def test_piles_without_a_technicians_key_are_skipped_and_reported_by_the_cli(tmp_path, maker):
    """Through `pile-aggregator rollout`: one pile's technician_key_file left out, one
    pointing at its link key (which never installs firmware); both skipped, never offered
    the package, the rest updated, exit status 3."""
    emulator = Emulator(tmp_path, 6, maker[1])
    try:
        entries = emulator.fleet.read_text().split("[[pile]]\n")[1:]
        no_key = entries[0].split('"')[1]
        entries[0] = "".join(line + "\n" for line in entries[0].splitlines()
                             if not line.startswith("technician_key_file"))
        linked = entries[1].split('"')[1]
        entries[1] = entries[1].replace(".technician.key", ".key")
        fleet = fleet_file(tmp_path, ["[[pile]]\n" + e for e in entries])
        package(maker, NEW).save(tmp_path / "new.pkg")
        result = subprocess.run(
            [sys.executable, "-m", "pilectl.aggregator.cli", "rollout", str(fleet),
             str(tmp_path / "new.pkg"), "--canary-percent", "20", "--wave-percent", "50",
             "--json"], capture_output=True, text=True, timeout=60)
        assert result.returncode == 3, result.stderr
        summary = json.loads(result.stdout)
        assert summary["state"] == "done" and summary["updated"] == 4
        skips = {s["pile"]: s["reason"] for s in summary["skips"]}
        assert skips[no_key].startswith("no technician key (give technician_key_file")
        assert "holds the pile's link key, which never installs firmware" in skips[linked]
        assert all(s["wave"] == 0 for s in summary["skips"])
        assert "Traceback" not in result.stderr
    finally:
        emulator.stop()


async def test_a_refusal_halts_the_rollout_through_the_api_with_its_token(tmp_path, maker):
    """A package for another architecture, POSTed to the API: refused by the first canary,
    the rollout halted with the pile's words; a write without the token is refused."""
    emulator = Emulator(tmp_path, 8, maker[1])
    (tmp_path / "api.token").write_text("t" * 32)
    port = free_port()
    fleet = load(fleet_file(tmp_path, [emulator.fleet.read_text()],
                            f'http = "127.0.0.1:{port}"\nhttp_token_file = "api.token"\n'))
    aggregator = Aggregator(fleet)
    metrics = Metrics()
    aggregator.on_status = metrics.record
    runner = await serve(application(aggregator, metrics, fleet.http_token), *fleet.http)
    aggregator.start()
    dispatching = asyncio.create_task(aggregator.run())
    wrong = package(maker, NEW, arch="armv6m")
    wrong.save(tmp_path / "wrong.pkg")
    body = (tmp_path / "wrong.pkg").read_bytes()

    def call(method, path, data=None, token="t" * 32):
        request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method,
                                         data=data, headers={"Authorization": f"Bearer {token}"})
        try:
            with urllib.request.urlopen(request, timeout=5) as reply:
                return reply.status, json.loads(reply.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    loop = asyncio.get_running_loop()
    try:
        code, found = await loop.run_in_executor(None, call, "POST", "/rollout", body, "nope")
        assert code == 401 and "Bearer" in found["error"] and aggregator.rollout is None
        code, found = await loop.run_in_executor(None, call, "POST", "/rollout", b"not one")
        assert code == 400 and "update package" in found["error"]
        code, found = await loop.run_in_executor(None, call, "POST",
                                                 "/rollout?parallel=0", body)
        assert code == 400 and "parallel" in found["error"]
        code, found = await loop.run_in_executor(None, call, "POST", "/rollout", body)
        assert code == 202 and found["state"] == "running", found
        await asyncio.wait_for(aggregator.rollout_ended(), 20)
        code, found = await loop.run_in_executor(None, call, "GET", "/rollout?piles=1")
        assert found["state"] == "halted" and found["pending"] == 7, found
        (failure,) = found["failures"]
        assert failure["kind"] == "refused" and "this pile runs xtensawin" in failure["reason"]
        assert found["halted_because"].startswith(f"{failure['pile']} refused")
        assert len(found["pile_list"]) == 8
        await asyncio.sleep(1.2)  # a period: the metrics follow
        text = await loop.run_in_executor(None, lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode())
        assert 'aggregator_rollout_state{aggregator_rollout_state="halted"} 1.0' in text
        assert 'aggregator_rollout_piles{state="failed"} 1.0' in text
    finally:
        await stop_serving(dispatching, aggregator, runner, emulator)


async def test_a_technicians_key_the_pile_does_not_know_is_a_refusal_at_once(
        tmp_path, maker):
    """The pile cannot verify the offer's MAC (its ERROR names no seq): the rollout halts
    with the pile's words, instead of asking again until its deadline."""
    emulator = Emulator(tmp_path, 3, maker[1])
    stranger = keys.save(keys.new_key(), tmp_path / "stranger.technician.key")
    entries = emulator.fleet.read_text().split("[[pile]]\n")[1:]
    wrong = entries[0].split('"')[1]
    entries[0] = "".join(f'technician_key_file = "{stranger}"\n'
                         if line.startswith("technician_key_file") else line + "\n"
                         for line in entries[0].splitlines())
    aggregator = Aggregator(load(fleet_file(tmp_path, ["[[pile]]\n" + e for e in entries])))
    aggregator.start()
    try:
        rollout = await rolled_out(aggregator, package(maker, NEW),
                                   Settings(canaries=(wrong,), confirm_s=30), within_s=15)
        (failure,) = rollout.summary()["failures"]
        assert failure["pile"] == wrong and failure["kind"] == "refused", failure
        assert "technician's key the aggregator holds" in failure["reason"]
        assert rollout.summary()["pending"] == 2
    finally:
        await aggregator.stop()
        emulator.stop()


async def test_a_fleet_on_the_broker_is_updated_in_waves(tmp_path, maker):
    ids = pile_ids(12, "m-")
    users = broker_users(tmp_path / "keys", ids)
    users["agg-1"] = "pw-agg-1"
    (tmp_path / "agg-1.password").write_text(users["agg-1"])
    with broker_class()(tmp_path / "broker", users, ["agg-1"]) as broker:
        emulator = Emulator(tmp_path, 12, maker[1], prefix="m-", broker=broker.port)
        broker_part = (f'[broker]\naddress = "127.0.0.1:{broker.port}"\nuser = "agg-1"\n'
                       'password_file = "agg-1.password"\nkeepalive_s = 3\n\n')
        aggregator = Aggregator(load(fleet_file(tmp_path, [broker_part,
                                                           emulator.fleet.read_text()])))
        aggregator.start()
        try:
            while not aggregator.broker.joined:
                await asyncio.sleep(0.1)
            rollout = await rolled_out(aggregator, package(maker, NEW),
                                       Settings(canary_percent=10, wave_percent=50))
            summary = rollout.summary()
            assert summary["state"] == "done" and summary["updated"] == 12, summary
            assert summary["wave_sizes"] == [2, 6, 4]
            assert all(firmware(link) == NEW for link in aggregator.links)
        finally:
            await aggregator.stop()
            emulator.stop()


# -- the parts, without I/O --------------------------------------------------------------

class _Link:
    def __init__(self, pile_id):
        self.entry = PileEntry(pile_id, b"L" * 32)


def test_the_waves_a_canary_share_then_the_rest_named_canaries_first(maker):
    links = {f"p{i:03d}": _Link(f"p{i:03d}") for i in range(100)}
    found = {pile_id: b"T" * 32 for pile_id in links}
    found["p007"] = "no technician key"
    rollout = Rollout(links, package(maker, NEW), found,
                      Settings(canary_percent=5, wave_percent=30, canaries=("p042",)))
    sizes = [len(wave) for wave in rollout.waves]
    assert sizes == [5, 30, 30, 30, 4] and rollout.waves[0][0] == "p042"
    assert "p007" not in sum(rollout.waves, []) and rollout.piles["p007"].state == "skipped"
    again = Rollout(links, package(maker, NEW), found, Settings(canaries=("p042",)))
    assert again.waves[0] == rollout.waves[0]  # the order is the package's and the ids'


class _BrokenLink(_Link):
    """A link whose write fails as uvloop's does on a transport closed under it."""

    connected = True

    def update_request(self, mtype, fields, signer=None):
        raise RuntimeError("unable to perform operation on <TCPTransport closed=True>")


async def test_a_fault_of_ours_on_one_pile_halts_the_rollout_never_ends_it_done(maker):
    links = {f"p{i}": _BrokenLink(f"p{i}") for i in range(4)}
    rollout = Rollout(links, package(maker, NEW), {p: b"T" * 32 for p in links},
                      Settings(canary_percent=50, wave_percent=50))
    await asyncio.wait_for(rollout.run(), 10)
    summary = rollout.summary()
    assert summary["state"] == "halted" and "RuntimeError" in summary["halted_because"]
    assert summary["updated"] == 0 and len(rollout.waves) == 2
    assert {p.state for p in rollout.piles.values() if p.wave == 2} == {"pending"}


def test_a_technicians_key_is_never_the_link_key(tmp_path):
    link = keys.save(b"L" * 32, tmp_path / "p1.key")
    entry = PileEntry("p1", b"L" * 32, technician_key_file=link)
    assert "never installs firmware" in technician_key(entry)
    keys.save(b"T" * 32, tmp_path / "p1.technician.key")
    assert technician_key(PileEntry("p1", b"L" * 32), tmp_path) == b"T" * 32
    assert technician_key(PileEntry("p2", b"L" * 32), tmp_path).startswith("no technician key")


def test_the_emulated_boot_stage_keeps_the_firmwares_record(tmp_path):
    """The same commits, boots, confirmations and rollbacks on firmware/bootstage.py (on a
    folder) and on the emulator's model: the same records, step by step."""
    bootstage.init(str(tmp_path))
    model = BootStage(tmp_path / "model", "1.0.0")

    def boot():
        bootstage.init(str(tmp_path))
        assert bootstage.choose() == model.choose()
        assert bootstage.trial == model.trial

    def same():
        ours, theirs = dict(model.record()), dict(bootstage.record())
        ours["versions"] = {k: v for k, v in ours["versions"].items() if k != "" or
                            "" in theirs["versions"]}
        assert ours == theirs

    for slot in ("a", "b"):
        assert bootstage.other() == model.other() == slot
        bootstage.commit(slot, f"2.{slot}", 60, "1.0.0")
        model.commit(slot, f"2.{slot}", 60, "1.0.0")
        same()
        boot()
        same()
        assert bootstage.confirm() == model.confirm() is True
        same()
    bootstage.commit("a", "3.0", 60, "2.b")
    model.commit("a", "3.0", 60, "2.b")
    boot()  # the trial, then a reset before it confirmed: rolled back at the next boot
    boot()
    same()
    assert model.record()["rollback"]["count"] == 1 and model.running == "b"
    assert model.take_news() is bootstage.take_news() is True
    same()
