"""The aggregator's live fleet page (api.py: /, /events, /history, /piles/ID; live.py,
recent.py): its endpoints over real TCP against emulated piles, and the page itself in a
real headless Chromium (Debian's chromium and chromium-driver, driven by selenium)
against an aggregator process and emulated piles.

With PILE_SCREENSHOTS=DIR (`make screenshots`: docs/img), the browser tests also write
DIR/fleet-page.png and DIR/fleet-page-detail.png.
"""

import asyncio
import json
import logging
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import aiohttp
import pytest
from helpers import stop_serving
from pilectl.aggregator.api import Metrics, application, serve
from pilectl.aggregator.fleet import load
from pilectl.aggregator.live import QUEUE
from pilectl.aggregator.service import Aggregator
from pilectl.vbench import free_port
from test_aggregator import Emulator, tolerance

TOKEN = "operator-" + "5f3a" * 6
PERIOD_S = 1.0


def write_fleet(directory, entries, port, target_w=0):
    (directory / "api.token").write_text(TOKEN + "\n")
    path = directory / "fleet.toml"
    path.write_text(f"[dispatch]\nperiod_s = {PERIOD_S}\nttl_s = 4\n\n[target]\n"
                    f'power_w = {target_w}\nhttp = "127.0.0.1:{port}"\n'
                    'http_token_file = "api.token"\n\n' + "".join(entries))
    return path


def call(base, method, path, body=None, token=None):
    """(status, JSON) of one request; urllib, so a test thread can call it."""
    headers = {} if token is None else {"Authorization": f"Bearer {token}"}
    request = urllib.request.Request(base + path, method=method, headers=headers,
                                     data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(request, timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


async def read_event(stream):
    """The next (kind, data) of a server-sent-events stream."""
    kind, data = None, None
    while True:
        line = (await stream.readline()).decode().rstrip("\n")
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            data = json.loads(line[6:])
        elif line == "" and kind is not None:
            return kind, data


# -- the endpoints -----------------------------------------------------------------------


async def test_the_page_its_push_and_a_piles_detail_over_tcp(tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    emulator = Emulator(tmp_path, 4)
    port = free_port()
    fleet = load(write_fleet(tmp_path, [emulator.fleet.read_text()], port, -8000))
    aggregator = Aggregator(fleet)
    runner = await serve(application(aggregator, Metrics(), fleet.http_token), *fleet.http)
    aggregator.start()
    dispatching = asyncio.create_task(aggregator.run())
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(base + "/") as reply:
                assert reply.status == 200 and reply.content_type == "text/html"
                assert 'src="static/page.js"' in await reply.text()
            for name in ("page.js", "page.css"):
                async with http.get(f"{base}/static/{name}") as reply:
                    assert reply.status == 200
            await asyncio.sleep(4 * PERIOD_S)
            async with http.get(base + "/events") as stream:
                assert stream.headers["Content-Type"] == "text/event-stream"
                aggregator.live.MAX_STREAMS = 1  # this one: a second page is refused
                async with http.get(base + "/events") as second:
                    assert second.status == 503 and "close one" in (await second.json())["error"]
                kind, snapshot = await read_event(stream.content)
                assert kind == "snapshot" and snapshot["token"] is True
                assert sorted(p["id"] for p in snapshot["piles"]) == [
                    f"emu-{n:05d}" for n in range(4)]
                assert all(p["heard"] and p["state"] in ("idle", "discharging")
                           for p in snapshot["piles"]), snapshot["piles"]
                assert snapshot["fleet"]["online"] == 4 and snapshot["fleet"]["refusing"] == 0
                assert len(snapshot["history"]) >= 3
                kind, period = await read_event(stream.content)
                assert kind == "period" and period["point"][0] > snapshot["history"][-1][0]
                assert period["point"][1] == -8000  # [t, target, delivered, low, high]
                assert {p["id"] for p in period["piles"]} <= {p["id"] for p in snapshot["piles"]}
            async with http.get(base + "/history") as reply:
                found = await reply.json()
                assert found["fields"][1] == "target_w" and len(found["points"]) >= 4
                times = [point[0] for point in found["points"]]
                assert times == sorted(times)
            async with http.get(base + "/piles/emu-00001") as reply:
                detail = await reply.json()
            assert detail["pile"]["id"] == "emu-00001" and detail["pile"]["firmware"]
            assert detail["telemetry"]["max_discharge_w"] > 0
            recent = detail["recent"]
            assert len(recent) >= 3 and recent[-1]["setpoint_w"] == -2000, recent[-1]
            assert all(a["t"] < b["t"] for a, b in zip(recent, recent[1:], strict=False))
            texts = [event["text"] for event in detail["events"]]
            assert texts[0].startswith("HELLO: firmware ") and "in the split" in texts
            async with http.get(base + "/piles/nope") as reply:
                assert reply.status == 404 and "no pile 'nope'" in (await reply.json())["error"]
            # writes: refused without the token or with a wrong one, the target unchanged
            for headers in ({}, {"Authorization": "Bearer wrong"},
                            {"Authorization": TOKEN}):
                async with http.put(base + "/target", json={"power_w": 5000},
                                    headers=headers) as reply:
                    assert reply.status == 401 and "Bearer" in (await reply.json())["error"]
                async with http.delete(base + "/target", headers=headers) as reply:
                    assert reply.status == 401
            assert aggregator.target.now() == (-8000, "default")
            async with http.put(base + "/target", json={"power_w": 5000},
                                headers={"Authorization": f"Bearer {TOKEN}"}) as reply:
                assert reply.status == 200 and await reply.json() == {"power_w": 5000,
                                                                      "source": "api"}
    finally:
        await stop_serving(dispatching, aggregator, runner, emulator)
    assert TOKEN not in caplog.text  # never logged, not even in the access log


async def test_a_browser_that_reads_too_slowly_is_dropped_and_never_holds_the_dispatch(
        tmp_path):
    """A stream nobody reads: after QUEUE events its queue is full; the next period
    ends it (the browser dials again for a snapshot) while the dispatch goes on."""
    emulator = Emulator(tmp_path, 2)
    fleet = load(write_fleet(tmp_path, [emulator.fleet.read_text()], free_port()))
    aggregator = Aggregator(fleet)
    live = aggregator.live
    pushing = asyncio.create_task(live.run())
    try:
        closed, built, snapshot = [], [], live.snapshot
        live.snapshot = lambda token_needed: built.append(1) or snapshot(token_needed)
        stuck = live.join(True, lambda: closed.append(True))  # its snapshot in it
        reader = live.join(True)
        assert len(built) == 1  # one snapshot built a period, whoever comes
        read = [reader.get_nowait()]
        for _ in range(QUEUE + 2):
            began = time.perf_counter()
            aggregator.dispatch_once()
            assert time.perf_counter() - began < 0.05  # no browser work in the dispatch
            await asyncio.sleep(0)  # the push task runs
            read.append(reader.get_nowait())
        assert stuck not in live.clients and live.dropped == 1
        assert stuck.qsize() == 1 and stuck.get_nowait() is None  # its stream ends,
        assert closed == [True]  # and its connection too, if it was stuck writing
        assert reader in live.clients and all(data.startswith(b"event: ") for data in read)
        assert [data.split(b"\n")[0] for data in read] == [b"event: snapshot"] + [
            b"event: period"] * (QUEUE + 2)
    finally:
        pushing.cancel()
        await asyncio.gather(pushing, return_exceptions=True)
        emulator.stop()


async def test_a_refusing_pile_is_counted_and_its_refusal_said_in_words(tmp_path):
    """A setpoint beyond the pile's range: the pile's ERROR makes it refusing (in the
    page's count and its row) until its next ACK, and its detail says why."""
    emulator = Emulator(tmp_path, 2)
    aggregator = Aggregator(load(write_fleet(tmp_path, [emulator.fleet.read_text()],
                                             free_port(), -4000)))
    aggregator.start()
    try:
        await aggregator.run(3 * PERIOD_S)
        link = aggregator.links[0]
        assert aggregator.live.fleet()["refusing"] == 0
        link.setpoint(10**7, 4)  # 10 MW: out of range
        await wait_async(lambda: link.recent.refused_at is not None)
        assert aggregator.live.fleet()["refusing"] == 1
        detail = aggregator.live.detail(link.entry.pile_id)
        assert detail["pile"]["refusing"] is True
        assert detail["events"][-1]["text"].startswith("refused (out of range): ")
        await aggregator.run(2 * PERIOD_S)  # the split's setpoint goes out again: ACKed
        assert aggregator.live.fleet()["refusing"] == 0
    finally:
        await aggregator.stop()
        emulator.stop()


async def wait_async(what, timeout=3):
    ends = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < ends, f"not within {timeout} s"
        await asyncio.sleep(0.02)


# -- in a real browser --------------------------------------------------------------------

CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
browser_needed = pytest.mark.skipif(
    CHROMIUM is None or CHROMEDRIVER is None,
    reason="Debian's chromium and chromium-driver are not installed: `make chromium` "
           "installs them (apt-get)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--window-size=1400,1000")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """An aggregator process (`pile-aggregator run`) with its API and page, 6 emulated
    piles in two groups and one more in an emulator of its own, to be cut off."""
    directory = tmp_path_factory.mktemp("site")
    main, cut = Emulator(directory, 6), Emulator(directory, 1, prefix="cut-")
    port = free_port()
    path = write_fleet(directory, [main.fleet.read_text(), cut.fleet.read_text()], port)
    log = (directory / "aggregator.log").open("w")
    proc = subprocess.Popen([sys.executable, "-m", "pilectl.aggregator.cli", "run", str(path),
                             "--json"], stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        ends = time.monotonic() + 20
        while True:
            try:
                if call(base, "GET", "/status")[1].get("online") == 7:
                    break
            except OSError:
                pass
            assert time.monotonic() < ends and proc.poll() is None, \
                (directory / "aggregator.log").read_text()[-2000:]
            time.sleep(0.2)
        yield {"base": base, "cut": cut, "log": directory / "aggregator.log"}
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()
        main.stop()
        cut.stop()


@pytest.fixture(scope="module")
def browser(site, tmp_path_factory):
    webdriver = pytest.importorskip("selenium.webdriver")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium')}")
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})  # script errors
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        driver.get(site["base"] + "/")
        yield driver
    finally:
        driver.quit()


def wait_for(what, timeout, step=0.05):
    """`what()` once it is truthy, within `timeout` s; (value, seconds it took)."""
    began = time.monotonic()
    while True:
        try:
            found = what()
        except Exception as exc:  # noqa: BLE001 (a row re-drawn under us: look again)
            if type(exc).__name__ != "StaleElementReferenceException":
                raise
            found = None
        if found:
            return found, time.monotonic() - began
        if time.monotonic() - began > timeout:
            raise AssertionError(f"not within {timeout} s")
        time.sleep(step)


def rows(driver):
    """The pile table as {id: (data-status, [cell texts])}, read in one script (the
    page draws it anew every period)."""
    return {pile: (status, cells) for pile, status, cells in driver.execute_script(
        "return [...document.querySelectorAll('#piles tbody tr')].map(tr => [tr.dataset.pile,"
        " tr.dataset.status, [...tr.cells].map(td => td.textContent)])")}


def text(driver, element_id):
    return driver.find_element("id", element_id).text


def set_on_page(driver, token, kilowatts):
    """Type the token and a target in kW into the page, press Set; what the page says."""
    for element_id, typed in (("token", token), ("power", kilowatts)):
        field = driver.find_element("id", element_id)
        field.clear()
        field.send_keys(typed)
    driver.find_element("id", "set").click()
    return wait_for(lambda: text(driver, "message"), 3)[0]


@browser_needed
def test_the_table_fills_sorts_and_filters(browser):
    found, _ = wait_for(lambda: len(rows(browser)) == 7 and rows(browser), 10)
    assert sorted(found) == ["cut-00000"] + [f"emu-{n:05d}" for n in range(6)]
    status, cells = found["emu-00001"]
    assert status == "online" and cells[1] == "g1" and cells[2] in ("idle", "discharging")
    assert cells[4].endswith("%") and cells[8].endswith("s ago"), cells
    wait_for(lambda: text(browser, "online") in ("6", "7"), 5)
    assert "g0" in text(browser, "groups") and "g1" in text(browser, "groups")
    header = browser.find_element("css selector", '#piles th[data-key="id"]')
    header.click()  # sorted by id already: a click turns the order round
    first, _ = wait_for(lambda: browser.find_element(
        "css selector", "#piles tbody tr").get_attribute("data-pile"), 2)
    assert first == "emu-00005"
    header.click()
    browser.find_element("id", "filter").send_keys("cut-")
    only, _ = wait_for(lambda: len(rows(browser)) == 1 and rows(browser), 2)
    assert list(only) == ["cut-00000"] and text(browser, "shown") == "1 of 7"
    browser.find_element("id", "filter").clear()
    browser.execute_script("document.getElementById('filter').dispatchEvent("
                           "new Event('input'))")
    wait_for(lambda: len(rows(browser)) == 7, 2)
    assert browser.get_log("browser") == []  # no script error, nothing not found


@browser_needed
def test_a_pile_cut_off_turns_excluded_within_a_period(browser, site):
    wait_for(lambda: rows(browser).get("cut-00000", ("",))[0] == "online", 10)
    pushed = browser.find_element("id", "link").get_attribute("data-t")
    wait_for(lambda: browser.find_element("id", "link").get_attribute("data-t") != pushed, 3,
             step=0.01)
    site["cut"].stop()  # just after a push: most likely no TELEMETRY of it since
    (status, cells), took = wait_for(
        lambda: rows(browser)["cut-00000"][0] == "excluded" and rows(browser)["cut-00000"], 3)
    print(f"cut off -> excluded on the page in {took:.2f} s")
    assert took <= PERIOD_S + 0.5  # a period, and the push and drawing after it
    assert cells[2] == "excluded (no link)"
    assert text(browser, "excluded") == "1"
    browser.find_element("css selector", '#piles tr[data-pile="cut-00000"]').click()
    wait_for(lambda: "excluded: link lost" in text(browser, "detail-events"), 3)
    assert "HELLO: firmware" in text(browser, "detail-events")
    browser.find_element("id", "close").click()


@browser_needed
def test_a_write_without_the_token_is_refused_and_the_page_says_so(browser, site):
    for token in ("", "not-the-token-at-all"):
        said = set_on_page(browser, token, "-9")
        assert said.startswith("refused (401): this API takes writes with its token only")
        assert browser.find_element("id", "message").get_attribute("class") == "error"
        browser.execute_script("document.getElementById('message').textContent = ''")
    assert call(site["base"], "GET", "/target")[1] == {"power_w": 0, "source": "default"}
    assert TOKEN not in site["log"].read_text()


@browser_needed
def test_a_target_set_from_the_page_reaches_the_piles(browser, site):
    assert set_on_page(browser, TOKEN, "-12") == "target now -12.0 kW (api)"
    assert browser.execute_script("return sessionStorage.getItem('pile-token')") == TOKEN

    def followed():
        """The piles heard were sent the target between them and apply it (how it is split
        depends on each one's envelope, which the module's earlier tests leave as they may)."""
        status = call(site["base"], "GET", "/status?piles=1")[1]
        heard = [p for p in status["pile_list"] if p["heard"]]
        applied = sum(p["applied_w"] for p in heard)  # what the piles say they apply
        sent = sum(p["setpoint_w"] or 0 for p in heard)
        return (len(heard) >= 6 and abs(applied - -12000) <= tolerance(-12000)
                and abs(sent - -12000) <= tolerance(-12000) and heard)
    wait_for(followed, 10, step=0.2)
    wait_for(lambda: text(browser, "target") == "-12.0 kW", 3)
    shots = os.environ.get("PILE_SCREENSHOTS")
    if shots:
        time.sleep(8)  # some of the chart's line after the step
        Path(shots).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(shots) / "fleet-page.png"))
        browser.find_element("css selector", '#piles tr[data-pile="emu-00002"]').click()
        wait_for(lambda: "HELLO" in text(browser, "detail-events"), 3)
        time.sleep(1.5)
        browser.save_screenshot(str(Path(shots) / "fleet-page-detail.png"))
        browser.find_element("id", "close").click()
    browser.find_element("id", "clear").click()
    wait_for(lambda: text(browser, "message") == "target now 0.0 kW (default)", 3)


def test_a_piles_recent_samples_are_a_ring_and_its_changes_are_words():
    from pile.surface import REASON_RAMPING, REASON_SOC_FLOOR, STATE_DISCHARGING, STATE_IDLE
    from pilectl.aggregator.recent import SAMPLES, Recent

    recent = Recent()
    for n in range(SAMPLES + 5):
        state = STATE_IDLE if n < 3 else STATE_DISCHARGING
        reasons = REASON_RAMPING if n == 3 else REASON_SOC_FLOOR if n > 3 else 0
        recent.telemetry(100 + n, {2: state, 3: -n, 9: reasons, 11: 4}, None if n < 2 else -n)
    series = recent.series()
    assert len(series) == SAMPLES and [s["power_w"] for s in series] == [
        -n for n in range(5, SAMPLES + 5)]
    assert all(b["t"] - a["t"] == 1.0 for a, b in zip(series, series[1:], strict=False))
    assert series[-1]["setpoint_w"] == -(SAMPLES + 4) and series[-1]["applied_w"] is None
    assert [text for _, text in recent.events] == [
        "idle → discharging", "reasons: +ramping", "reasons: +SOC floor, −ramping"]
    recent.telemetry(300, {3: 2**40}, None)  # beyond 32 bits: kept as unknown, no error
    assert recent.series()[-1]["power_w"] is None and len(recent.events) == 3


def test_an_api_open_beyond_this_machine_is_said_at_start():
    from pilectl.aggregator.cli import _loopback

    assert all(_loopback(host) for host in ("127.0.0.1", "::1", "localhost"))
    assert not any(_loopback(host) for host in ("0.0.0.0", "192.168.1.5", "example.net"))
