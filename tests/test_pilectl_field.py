"""`pilectl` as a technician runs it: a subprocess against a fresh unix-port board it
deployed over a pty, the plant simulated on the board's Modbus port."""

import json
import os
import shutil
import stat
import subprocess
import time

import pytest
from helpers import FIRMWARE, Field
from pile import VERSION
from pilectl.sim.run import load_scenario
from pilectl.unixboard import BoardBench

pytestmark = pytest.mark.usefixtures("socat")


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    """One unix-port board for the module, fresh (MicroPython only) until deployed."""
    directory = tmp_path_factory.mktemp("field")
    bench = BoardBench(directory, load_scenario("steady"))
    try:
        yield Field(bench, directory / "home")
    finally:
        assert bench.sim.oracle.violations == []
        bench.close()


@pytest.fixture
def field(board):
    """The board with the firmware on it (deployed here when a test runs on its own)."""
    if not (board.bench.board.flash / "main.py").exists():
        assert board.deploy().returncode == 0
    return board


def test_deploy_to_a_fresh_board_then_nothing_to_copy(board):
    field = board
    result = field.deploy("--link", field.bench.link_host, "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["firmware"] == VERSION and report["pile_id"] == "field-001"
    assert len(report["files_copied"]) == report["files_total"] >= 30
    assert report["files_copied"][-1] == "main.py"  # the entry point goes in last
    flash = field.bench.board.flash
    assert (flash / "board.json").read_bytes() == field.bench.board_file.read_bytes()
    assert {p.name for p in (flash / "pile").glob("*.mpy")} >= {"firmware.mpy", "limits.mpy"}
    assert not list(flash.rglob("*.new"))

    again = json.loads(field.deploy("--json").stdout)  # the console banner this time
    assert again["files_copied"] == [] and again["bytes_copied"] == 0
    assert again["firmware"] == VERSION


def test_stopping_the_firmware_for_a_deploy_stops_the_converter(field):
    assert field.json("setpoint", "-2000", "--ttl", "60")["target_w"] < 0
    field.until_up()
    requests = field.bench.sim.faults.requests
    mark = len(requests)
    assert field.deploy().returncode == 0  # Ctrl-C to the running firmware, then a reset
    writes = [r[3] for r in requests[mark:] if r[:3] == (1, 16, 256)]
    assert writes and writes[0][:3] == [0, 0, 0], "no stop (0 W, command 0) before the reset"


def test_redeploy_copies_the_one_changed_module_and_drops_stale_ones(field, tmp_path):
    logged = field.json("events")
    source = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, source)
    with open(source / "pile" / "meter.py", "a") as f:
        f.write("\n_CHANGED = 1\n")
    stale = field.bench.board.flash / "pile" / "meter.py"  # would shadow meter.mpy
    stale.write_text("raise ImportError('stale')\n")
    report = json.loads(field.deploy("--source", str(source), "--json").stdout)
    assert report["files_copied"] == ["pile/meter.mpy"]
    assert report["files_removed"] == ["pile/meter.py"]
    assert not stale.exists()
    report = json.loads(field.deploy("--json").stdout)  # and back to this repository's
    assert report["files_copied"] == ["pile/meter.mpy"]
    field.until_up()
    after = field.json("events")  # the event log outlives both deploys, on the flash
    assert after[:len(logged)] == logged
    assert [e["event"] for e in after[len(logged):]].count("boot") == 2


def test_a_deploy_cut_short_leaves_the_old_firmware_running(field, tmp_path):
    source = tmp_path / "firmware"
    shutil.copytree(FIRMWARE, source)
    for module in (source / "pile").glob("*.py"):  # every module changes: a long copy
        with open(module, "a") as f:
            f.write("\n_CHANGED = 1\n")
    flash = field.bench.board.flash
    before = {p: p.read_bytes() for p in flash.rglob("*.mpy")}
    deploy = subprocess.Popen([field.pilectl, "deploy", "--board",
                               str(field.bench.board_file), "--port", field.bench.usb,
                               "--source", str(source)], env=field.env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while not list(flash.rglob("*.new")):  # copying has begun: cut the power now
        assert time.monotonic() < deadline and deploy.poll() is None
        time.sleep(0.01)
    field.bench.power_cycle()
    deploy.kill()
    deploy.wait()
    assert {p: p.read_bytes() for p in flash.rglob("*.mpy")} == before  # nothing half-new
    assert field.until_up()["firmware"] == VERSION  # the old firmware boots and answers
    report = json.loads(field.deploy("--json").stdout)  # this repository's again
    assert report["files_copied"] == [] and report["files_removed"]
    assert all(p.endswith(".new") for p in report["files_removed"])
    assert not list(flash.rglob("*.new"))


def test_deploy_refuses_a_board_whose_mpy_version_differs(field, monkeypatch):
    from pilectl import deploy as deployer

    monkeypatch.setattr(deployer, "local_mpy_version", lambda: (7, 0))  # a future mpy-cross
    with pytest.raises(deployer.DeployError, match=r"loads \.mpy v6\.\d, this mpy-cross emits v7"):
        deployer.deploy(field.bench.board_file, field.bench.usb)
    assert field.until_up()["firmware"] == VERSION  # the old firmware was restarted


def test_status_as_table_and_json(field):
    data = field.until_up()
    assert data["pile_id"] == "field-001" and data["firmware"] == VERSION
    assert data["state"] in ("idle", "charging", "discharging")
    assert 50 <= data["soc_pct"] <= 70
    assert data["link"] == {"signed": False, "key_id": None}
    counters = data["diagnostics"]  # the firmware's own, read over the link
    assert counters["modbus_transactions"] > counters["periods"] > 0
    assert counters["converter_error"] is None and counters["link_connections"] == 1
    table = field.run("status")
    assert table.returncode == 0
    assert "pile field-001" in table.stdout and "soc_pct" in table.stdout
    assert "modbus_timeouts" in table.stdout


def test_config_set_refuses_an_invalid_value_and_changes_nothing(field):
    before = field.json("config", "get")
    result = field.run("config", "set", "battery_cutoff_c=99")
    assert result.returncode == 1
    assert "battery_cutoff_c: 99 is out of range 1..80 degC" in result.stderr
    assert "nothing changed" in result.stderr
    result = field.run("config", "set", "min_soc=30", "max_soc=25")  # fine alone, not together
    assert result.returncode == 1 and "floor must be below the ceiling" in result.stderr
    result = field.run("config", "set", "min_sco=30")
    assert result.returncode == 1 and "did you mean min_soc?" in result.stderr
    assert field.json("config", "get") == before


def test_config_set_is_persisted_across_a_firmware_restart(field):
    result = field.json("config", "set", "min_soc=25", "telemetry_period_s=2")
    assert result == {"min_soc": {"before": 20, "after": 25},
                      "telemetry_period_s": {"before": 1, "after": 2}}
    uptime = field.until_up()["uptime_s"]
    assert field.run("reboot").returncode == 0
    time.sleep(1)
    assert field.until_up()["uptime_s"] <= uptime  # a new boot
    assert field.json("config", "get", "min_soc", "telemetry_period_s") == {
        "min_soc": 25, "telemetry_period_s": 2}
    field.json("config", "set", "telemetry_period_s=1")


def test_the_owners_budget_shown_set_and_refused(field):
    shown = field.json("budget")
    assert shown["budget_wh_day"] is None and shown["budget_left_wh"] is None
    assert shown["day_out_wh"] >= 0 and shown["budget_max_wh_day"] is None
    result = field.json("budget", "--day-wh", "8000", "--week-cycles", "3.5", "--reserve", "40")
    assert result["budget_wh_day"] == 8000 and result["budget_cycles_week"] == 3.5
    assert result["budget_wh_week"] == 210000 and result["owner_reserve_soc"] == 40
    assert 0 <= result["budget_left_wh"] <= 8000
    table = field.run("budget")
    assert table.returncode == 0 and "8,000 Wh (at most any)" in table.stdout
    assert "3.5 cycles = 210,000 Wh" in table.stdout
    refused = field.run("budget", "--day-wh", "2000000")
    assert refused.returncode == 1 and "out of range 0..1000000 Wh" in refused.stderr
    refused = field.run("budget", "--week-cycles", "three")
    assert refused.returncode == 1 and "give a number or none" in refused.stderr
    assert field.json("config", "set", "budget_max_wh_day=5000", "budget_wh_day=5000")
    refused = field.run("budget", "--day-wh", "6000")
    assert refused.returncode == 1 and "budget_max_wh_day (5000)" in refused.stderr
    assert "nothing changed" in refused.stderr
    assert field.json("config", "set", "budget_max_wh_day=1000000")
    back = field.json("budget", "--day-wh", "none", "--week-cycles", "none", "--reserve", "0")
    assert back["budget_wh_day"] is None and back["budget_cycles_week"] is None


def test_setpoint_stop_and_release(field):
    ack = field.json("setpoint", "-2000", "--ttl", "60")
    assert -2000 <= ack["target_w"] <= 0
    refused = field.run("setpoint", "1000", "--ttl", "0")
    assert refused.returncode == 1 and "ttl must be 1..3600" in refused.stderr
    stopped = field.json("stop")
    assert stopped["target_w"] == 0 and "stopped" in stopped["reasons"]
    assert field.until_up()["state"] == "stopped"
    assert "stopped" not in field.json("release")["reasons"]
    assert field.until_up()["state"] != "stopped"


def test_monitor_streams_telemetry(field):
    result = field.run("monitor", "--count", "2", "--json")
    assert result.returncode == 0, result.stderr
    samples = [json.loads(line) for line in result.stdout.splitlines()]
    assert len(samples) == 2 and all("soc_pct" in s for s in samples)
    live = field.run("monitor", "--count", "1")
    assert live.returncode == 0 and "pile telemetry" in live.stdout and "soc_pct" in live.stdout


def test_config_get_shows_values_ranges_and_defaults(field):
    table = field.run("config", "get")
    assert table.returncode == 0
    assert "battery_cutoff_c" in table.stdout and "1..80 degC" in table.stdout
    assert field.json("config", "get", "fallback") == {"fallback": "idle"}
    unknown = field.run("config", "get", "no_such_key")
    assert unknown.returncode == 1 and "unknown config key" in unknown.stderr


def test_events_decoded(field):
    names = [e["event"] for e in field.json("events")]
    assert names[0] == "boot"
    assert {"stop", "release"} <= set(names)
    table = field.run("events")
    assert "release" in table.stdout


def test_provision_key_then_an_unauthenticated_command_is_refused(field, tmp_path):
    result = field.json("provision-key")
    key_file = result["key_file"]
    assert result["pile_id"] == "field-001" and len(result["key_id"]) == 8
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    key_hex = open(key_file).read().strip()
    assert key_hex not in json.dumps(result)  # never shown
    assert field.until_up()["link"] == {"signed": True, "key_id": result["key_id"]}

    stranger = field.run("setpoint", "-3000", "--ttl", "60", home=tmp_path / "empty")
    assert stranger.returncode == 1
    assert "has no key for it" in stranger.stderr
    wrong = tmp_path / "wrong.key"
    wrong.write_text("ab" * 32)
    refused = field.run("setpoint", "-3000", "--ttl", "60", "--key-file", str(wrong))
    assert refused.returncode == 1 and "MAC mismatch" in refused.stderr
    assert field.until_up()["applied_w"] > -3000  # nothing took effect
    damaged = tmp_path / "damaged"
    (damaged / "keys").mkdir(parents=True)
    (damaged / "keys" / "field-001.key").write_text("not hex\n")
    result = field.run("status", home=damaged)
    assert result.returncode == 1 and "is not a key file" in result.stderr
    over_tcp = field.run("provision-key", "--tcp", "127.0.0.1:7700", link=False)
    assert over_tcp.returncode == 1 and "USB serial link only" in over_tcp.stderr


def test_the_site_key_comes_from_one_file_for_the_whole_group(field, tmp_path):
    site_file = tmp_path / "depot-1.site.key"
    first = field.json("provision-key", "--site", str(site_file))
    assert first["key_file"] == str(site_file) and len(first["key_id"]) == 8
    assert stat.S_IMODE(os.stat(site_file).st_mode) == 0o600
    assert site_file.read_text().strip() not in json.dumps(first)  # never shown
    again = field.json("provision-key", "--site", str(site_file))
    assert again["key_id"] == first["key_id"]  # every pile of the group gets the same key
    provisioned = [e for e in field.json("events") if e["event"] == "key provisioned"]
    assert provisioned[-1]["value"] == 5  # the site key set (docs/protocol.md)
    mixed = field.run("provision-key", "--site", str(site_file), "--technician")
    assert mixed.returncode == 1 and "one key at a time" in mixed.stderr


def test_errors_say_what_to_do(field, tmp_path):
    result = field.run("status", "--port", str(tmp_path / "nothing"), link=False)
    assert result.returncode == 1 and "Is the cable plugged in" in result.stderr
    result = field.run("status", link=False)
    assert result.returncode == 1 and "--port" in result.stderr
    result = field.run("deploy", "--board", str(tmp_path / "none.json"), "--port",
                       field.bench.usb, link=False)
    assert result.returncode == 1 and "cannot read the board file" in result.stderr


def test_bad_tcp_addresses_are_explained(field):
    for address, said in (("127.0.0.1:99999", "1 to 65535"), ("host:abc", "1 to 65535"),
                          ("[::1", "[ADDRESS]"), (":7700", "no host")):
        result = field.run("status", "--tcp", address, link=False)
        assert result.returncode == 1 and said in result.stderr, result.stderr
        assert "Traceback" not in result.stderr
    result = field.run("status", "--tcp", "[::1]:1", "--timeout", "1", link=False)
    assert result.returncode == 1 and "cannot reach the pile at ::1:1" in result.stderr


def test_a_board_file_with_a_typo_is_refused_before_the_board_is_touched(field, tmp_path):
    spec = json.loads(field.bench.board_file.read_text())
    spec["modbus"]["baudd"] = spec["modbus"].pop("baud")
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps(spec))
    started = time.monotonic()
    result = field.run("deploy", "--board", str(typo), "--port", field.bench.usb, link=False)
    assert result.returncode == 1 and "modbus.baudd" in result.stderr, result.stderr
    assert "nothing was deployed" in result.stderr and time.monotonic() - started < 10
    assert field.until_up()["firmware"] == VERSION  # still the old firmware, running


def test_deploy_to_the_link_port_says_so_without_binary_noise(field):
    result = field.run("deploy", "--board", str(field.bench.board_file), "--port",
                       field.bench.link_host, link=False)
    assert result.returncode == 1 and "USB REPL port, not its link" in result.stderr
    assert len(result.stderr) < 600, result.stderr  # no kilobytes of the pile's frames


def test_monitor_ends_with_a_sentence_when_the_cable_is_pulled(field):
    monitor = subprocess.Popen([field.pilectl, "monitor", "--json", "--port",
                                field.bench.link_host], env=field.env, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        first = monitor.stdout.readline()
        assert first, monitor.stderr.read()
        assert json.loads(first)["state"]  # running
        field.bench.unplug_link()
        _, err = monitor.communicate(timeout=30)
    finally:
        monitor.kill()
        field.bench.plug_link()
        field.bench.power_cycle()  # the firmware opens the new line at boot
    assert monitor.returncode == 1 and "cable" in err and "Traceback" not in err, err
    assert field.until_up()["firmware"] == VERSION
