"""A pile in no site group loads no site module (docs/site-group.md, "What a pile alone
pays"): every one of them is imported at the point of use, by a pile whose board file has
a `site` part, so a pile alone keeps the heap it had before site groups (a pile that
loaded them lost 6 KB of its 208 KB on the unix port, and its soak crashed). The whole
firmware is built from a board file on the MicroPython unix port, on a real pty bus."""

import json
import socket

import pytest
from helpers import ROOT
from pilectl.sim.harness import PtyPair
from pilectl.vbench import unix_board

SITE_MODULES = {"pile.share", "pile.site", "pile.siteboard", "pile.siteshare",
                "pile.siteleader", "pile.sitelink", "pile.siteudp", "pile.sitebus",
                "pile.sitegroup"}


def udp_port():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def booted_modules(micropython, tmp_path, **more):
    bus = PtyPair(tmp_path / "bus-pile", tmp_path / "bus-plant")
    try:
        path = tmp_path / "board.json"
        path.write_text(json.dumps(unix_board("pile-b", bus.a, state_dir=str(tmp_path / "state"),
                                              **more)))
        result = micropython(ROOT / "tests" / "mp" / "boot_modules.py", str(path))
    finally:
        bus.close()
    assert result.returncode == 0, result.stdout + result.stderr
    modules = set(result.stdout.split())
    assert {"pile.firmware", "pile.protocol", "pile.limits"} <= modules, modules
    return modules


@pytest.mark.usefixtures("socat")
def test_a_pile_alone_imports_no_site_module(micropython, tmp_path):
    assert booted_modules(micropython, tmp_path) & SITE_MODULES == set()


@pytest.mark.usefixtures("socat")
def test_a_member_imports_its_site_modules(micropython, tmp_path):
    site = {"group": "depot-1", "role": "member", "leader": "pile-a", "import_cap_w": 40000,
            "export_cap_w": 11000, "udp_port": udp_port(),
            "members": {"pile-a": {"import_w": 14000, "export_w": 4000, "host": "127.0.0.1",
                                   "port": udp_port()},
                        "pile-b": {"import_w": 13000, "export_w": 3500, "host": "127.0.0.1"}}}
    modules = booted_modules(micropython, tmp_path, site=site)
    assert {"pile.siteboard", "pile.siteshare", "pile.sitelink", "pile.siteudp"} <= modules
    assert {"pile.siteleader", "pile.site", "pile.share"} & modules == set()  # the leader's
    assert "pile.sitebus" not in modules  # the other transport


@pytest.mark.usefixtures("socat")
def test_a_member_on_the_site_bus_imports_that_transport(micropython, tmp_path):
    site_bus = PtyPair(tmp_path / "site-pile", tmp_path / "site-hub")
    try:
        site = {"group": "depot-1", "role": "member", "leader": "pile-a",
                "import_cap_w": 40000, "export_cap_w": 11000,
                "members": {"pile-a": {"import_w": 14000, "export_w": 4000},
                            "pile-b": {"import_w": 13000, "export_w": 3500}},
                "bus": {"device": site_bus.a, "baud": 115200}}
        modules = booted_modules(micropython, tmp_path, site=site)
    finally:
        site_bus.close()
    assert "pile.sitebus" in modules and "pile.siteudp" not in modules
