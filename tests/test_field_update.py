"""Field updates as a technician runs them: `pilectl release` and `pilectl update` as
subprocesses against a fresh unix-port board (pilectl.unixboard: main.py and the boot
stage run at every boot, a reboot or a watchdog reset starts them again) deployed over
its USB pty, updated over its serial link and over TCP, the plant simulated on its bus.

Every refusal leaves the pile as it was; every broken firmware rolls back by itself.
"""

import concurrent.futures
import hashlib
import json
import shutil
import time
from pathlib import Path

import cbor2
import pytest
from helpers import FIRMWARE, Field
from pile import VERSION
from pilectl import release
from pilectl.sim.harness import free_port
from pilectl.sim.run import load_scenario
from pilectl.unixboard import BoardBench

pytestmark = pytest.mark.usefixtures("socat")

_TRIAL_S = 12


class Updates(Field):
    """A Field with a release key, a TCP port and the technician's and link keys."""

    def release(self, *args):
        result = self.run("release", *args, link=False)
        assert result.returncode == 0, result.stderr
        return result

    def package(self, version, source=None, arch="local", key=None):
        out = self.bench.dir / f"pile-{version}-{arch}.pkg"
        more = ["--source", str(source)] if source else []
        self.release("build", "--key", str(key or self.key_file), "--arch", arch,
                     "--version", version, "-o", str(out), *more)
        return out

    def update(self, package, *extra, tcp=False):
        where = ["--tcp", f"127.0.0.1:{self.tcp_port}"] if tcp else []
        return self.run("update", str(package), "--json", *where, *extra, link=not tcp)

    def slots(self):
        return self.json("status")["firmware_slots"]

    def flash_state(self):
        """What a refusal must not change: the slot record and the running slot's files
        (the other slot is the update's scratch space)."""
        flash = self.bench.board.flash
        record = flash / "slots.json"
        slot = json.loads(record.read_text())["boot"] if record.exists() else ""
        files = sorted((flash / slot / "pile").glob("*.mpy"))
        return (record.read_bytes() if record.exists() else None,
                hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest())


@pytest.fixture(scope="module")
def field(tmp_path_factory):
    directory = tmp_path_factory.mktemp("update")
    home = directory / "home"
    key_file = directory / "maker.pem"
    public = release.keygen(key_file)
    tcp_port = free_port()
    bench = BoardBench(directory / "board", load_scenario("steady"), tcp_port=tcp_port,
                       update={"release_key": public, "trial_s": _TRIAL_S})
    try:
        field = Updates(bench, home)
        field.key_file, field.public, field.tcp_port = key_file, public, tcp_port
        assert field.deploy("--link", bench.link_host).returncode == 0
        for technician in (False, True):  # over the USB serial link, as a technician does
            args = ["provision-key", "--json"] + (["--technician"] if technician else [])
            result = field.run(*args)
            assert result.returncode == 0, result.stderr
        yield field
    finally:
        assert bench.sim.oracle.violations == []
        bench.close()


def subprocess_run(field, *args):
    result = field.run(*args, link=False)
    assert result.returncode == 0, result.stderr
    return result


def planted(tmp_path, name, change):
    """A copy of the firmware with `change(text)` applied to pile/`name`."""
    source = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, source, ignore=shutil.ignore_patterns("__pycache__"))
    path = source / "pile" / name
    path.write_text(change(path.read_text()))
    return source


def test_an_update_over_serial_then_one_over_tcp_each_boot_on_trial_and_confirm(field):
    assert field.slots()["running"] == VERSION
    result = field.update(field.package("0.2.0"))
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["version"] == "0.2.0" and report["chunks_sent"] >= 100
    slots = field.slots()
    assert slots == {"running": "0.2.0", "slot": "a", "other_slot": VERSION,
                     "update": "idle", "last_rollback": None}

    result = field.update(field.package("0.3.0"), tcp=True)
    assert result.returncode == 0, result.stderr
    slots = field.slots()
    assert slots["running"] == "0.3.0" and slots["slot"] == "b"
    assert slots["other_slot"] == "0.2.0"
    events = [e for e in field.json("events") if e["event"] == "field update"]
    assert [e["value"] for e in events[-6:]] == [0, 1, 2, 0, 1, 2]


@pytest.mark.parametrize("how, said", [
    ("chunk", "does not match the signed package"),
    ("head", "not signed by this pile's release key"),
    ("other key", "not signed by this pile's release key"),
    ("arch", "this pile runs"),
    ("downgrade", "ask for a downgrade explicitly"),
    ("aggregator", "technician"),
])
def test_a_bad_update_is_refused_with_its_reason_and_nothing_changed(field, how, said, tmp_path):
    running = field.slots()["running"]
    cases = ["chunk", "head", "other key", "arch", "downgrade", "aggregator"]
    version = f"9.{cases.index(how)}.0"
    if how == "other key":
        other = tmp_path / "other.pem"
        made = json.loads(subprocess_run(field, "release", "keygen", str(other), "--json").stdout)
        assert made["public_key"] != field.public and other.stat().st_mode & 0o077 == 0
        package = field.package(version, key=other)
    else:
        package = field.package("0.0.1" if how == "downgrade" else version,
                                arch="armv6m" if how == "arch" else "local")
    if how in ("chunk", "head"):
        found = cbor2.loads(package.read_bytes())
        if how == "chunk":
            stream = bytearray(found["stream"])
            stream[len(stream) // 2] ^= 0x01
            found["stream"] = bytes(stream)
        else:
            head = cbor2.loads(found["head"])
            head["boot"] = 0
            found["head"] = cbor2.dumps(head, canonical=True)
        package.write_bytes(cbor2.dumps(found))
    before = field.flash_state()
    if how == "aggregator":  # the link key alone, as the aggregator holds it
        home = field.bench.dir / "aggregator-home"
        (home / "keys").mkdir(parents=True, exist_ok=True)
        keys = Path(field.env["PILECTL_HOME"]) / "keys"
        link_key = next(p for p in keys.glob("*.key") if ".technician." not in p.name)
        shutil.copy(link_key, home / "keys" / link_key.name)
        result = field.run("update", str(package), "--tcp", f"127.0.0.1:{field.tcp_port}",
                           home=home, link=False)
    else:
        result = field.update(package, tcp=how == "head")
    assert result.returncode == 1, result.stdout
    assert said in result.stderr and "Traceback" not in result.stderr
    assert field.flash_state() == before
    assert field.slots()["running"] == running


def test_a_firmware_that_raises_at_import_rolls_back_by_itself(field, tmp_path):
    running = field.slots()["running"]
    source = planted(tmp_path, "firmware.py",
                     lambda text: text + '\nraise ImportError("planted at import")\n')
    result = field.update(field.package("7.1.0", source))
    assert result.returncode == 1
    assert "rolled back" in result.stderr and "planted at import" in result.stderr
    slots = field.slots()
    assert slots["running"] == running and "7.1.0" in slots["last_rollback"]


def test_a_firmware_that_hangs_its_control_loop_is_reset_and_rolled_back(field, tmp_path):
    running = field.slots()["running"]
    source = planted(tmp_path, "firmware.py", lambda text: text.replace(
        "            await self.loop.period()\n",
        "            await self.loop.period()\n"
        "            if self.loop.periods > 3:\n"
        "                import time\n"
        "                time.sleep(60)  # planted: the control loop hangs\n"))
    result = field.update(field.package("7.2.0", source))
    assert result.returncode == 1 and "rolled back" in result.stderr
    slots = field.slots()
    assert slots["running"] == running
    assert "7.2.0: the trial boot ended before it confirmed itself" in slots["last_rollback"]


def test_a_firmware_that_never_confirms_rolls_back_after_its_trial_time(field, tmp_path):
    running = field.slots()["running"]
    source = planted(tmp_path, "firmware.py", lambda text: text.replace(
        "_HEALTHY_PERIODS = const(10)", "_HEALTHY_PERIODS = const(1000000)"))
    result = field.update(field.package("7.3.0", source))
    assert result.returncode == 1 and "rolled back" in result.stderr
    slots = field.slots()
    assert slots["running"] == running
    assert f"did not confirm itself within {_TRIAL_S} s" in slots["last_rollback"]
    hello = field.json("status")
    assert hello["firmware"] == running


def test_a_reboot_requested_during_a_trial_rolls_back_and_says_why(field, tmp_path):
    """The technician reboots a pile whose new firmware has not confirmed itself yet: the
    old firmware comes back, and the reason says it was the reboot (on an RP2040 the reset
    goes through the watchdog, which the boot stage would name otherwise)."""
    running = field.slots()["running"]
    source = planted(tmp_path, "firmware.py", lambda text: text.replace(
        "_HEALTHY_PERIODS = const(10)", "_HEALTHY_PERIODS = const(1000000)"))
    package = field.package("7.4.0", source)
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        updating = pool.submit(field.update, package, tcp=True)  # the serial link stays free
        deadline = time.monotonic() + 60
        while field.json("status")["firmware"] != "7.4.0":  # on its trial now
            assert time.monotonic() < deadline and not updating.done()
            time.sleep(0.5)
        assert field.run("reboot").returncode == 0
        result = updating.result(timeout=120)
    assert result.returncode == 1 and "rolled back" in result.stderr
    slots = field.slots()
    assert slots["running"] == running
    assert "7.4.0: a reboot was requested before the trial confirmed itself" \
        in slots["last_rollback"]


def test_a_usb_deploy_boots_what_it_deployed_whatever_ran_before(field):
    assert field.deploy("--link", field.bench.link_host).returncode == 0
    assert field.slots()["running"] == VERSION and field.slots()["slot"] == "root"
