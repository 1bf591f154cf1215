"""Home Assistant MQTT discovery (pilectl/aggregator/homeassistant.py) on a real Mosquitto.

A client logged in as Home Assistant's broker user subscribes as Home Assistant's MQTT
integration does (`homeassistant/#`, then the state and availability topics the configs
name) and checks every config against the keys and shapes the integration documents
(home-assistant.io/integrations/sensor.mqtt, number.mqtt, mqtt/#discovery-messages).
Emulated piles (the firmware's own Pile, config and session on CPython,
pilectl/aggregator/emulator.py) for the fleet; the real firmware (unix port, virtual
bench) for the owner's reserve, whose bounds only the pile enforces.
"""

import asyncio
import json
import re
import sys

import aiomqtt
import pytest
from pilectl import keys, names
from pilectl.aggregator import homeassistant
from pilectl.aggregator.broker import Mosquitto, acl
from pilectl.aggregator.emulator import broker_users
from pilectl.aggregator.fleet import FleetError, parse
from pilectl.aggregator.homeassistant import node_id
from pilectl.aggregator.service import Aggregator
from pilectl.vbench import VirtualBench

pytestmark = pytest.mark.usefixtures("socat")

HA_USER, HA_PASSWORD = "hass", "pw-hass"
# unit each device class takes (home-assistant.io/integrations/sensor/#device-class)
UNITS = {"battery": {"%"}, "power": {"W", "kW"}, "temperature": {"°C", "°F", "K"},
         "energy_storage": {"Wh", "kWh", "MWh"}, "energy": {"Wh", "kWh", "MWh"},
         "enum": {None}, None: {None}}
STATE_CLASSES = {None, "measurement", "total", "total_increasing"}
TOPIC = re.compile(r"homeassistant/(sensor|number)/([A-Za-z0-9_-]+)/([A-Za-z0-9_-]+)/config")
BENCH = {"name": "ha", "plant": {"capacity_kwh": 60.0, "soc": 0.7}, "load_w": [[0, 2000]],
         "config": {"site_import_limit_w": 25000, "site_export_limit_w": 11000,
                    "max_soc": 80,  # the technician's bound on the owner's reserve
                    "budget_max_wh_day": 20000,  # and on the owner's daily budget
                    "budget_wh_day": 20000},
         "oracle": {"site_import_limit_w": 25000, "site_export_limit_w": 11000}}


def home_assistant(broker):
    return aiomqtt.Client("127.0.0.1", broker.port, username=HA_USER, password=HA_PASSWORD,
                          identifier=HA_USER)


class Seen:
    """Every retained or live message on the topics Home Assistant reads, the latest by
    topic (an empty payload removes the topic, as for Home Assistant)."""

    def __init__(self, client):
        self.client = client
        self.latest = {}
        self.cleared = set()
        self._task = asyncio.create_task(self._read())

    async def _read(self):
        async for message in self.client.messages:
            topic, payload = message.topic.value, bytes(message.payload)
            if payload:
                self.latest[topic] = payload
                self.cleared.discard(topic)
            else:
                self.latest.pop(topic, None)
                self.cleared.add(topic)

    def configs(self, node=None):
        return {t: json.loads(p) for t, p in self.latest.items() if TOPIC.fullmatch(t) and
                (node is None or TOPIC.fullmatch(t).group(2) == node)}

    def state(self, pile_id):
        payload = self.latest.get(f"v2g/{pile_id}/ha/state")
        return None if payload is None else json.loads(payload)

    async def until(self, check, seconds, what):
        async with asyncio.timeout(seconds):
            while not check():
                await asyncio.sleep(0.05)
        return what()

    async def __aenter__(self):
        return self

    async def __aexit__(self, *exc):
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


async def subscribed(client):
    """A Seen of `client`, subscribed; to leave (`async with`) before the client."""
    await client.subscribe([("homeassistant/#", 0), ("v2g/+/ha/state", 0),
                            ("v2g/+/status", 0)])
    return Seen(client)


def render(template, state):
    """What Home Assistant renders of `{{ value_json.KEY }}` for this state."""
    match = re.fullmatch(r"\{\{ value_json\.(\w+) \}\}", template)
    assert match, f"not a template of the state's JSON: {template}"
    value = state[match.group(1)]
    return "None" if value is None else str(value)


def check_config(topic, config, pile_id):
    """The keys Home Assistant's MQTT integration documents for a discovered entity."""
    component, node, object_id = TOPIC.fullmatch(topic).groups()
    assert node == node_id(pile_id)
    device = config["device"]
    assert device["identifiers"] == [node] and device["name"] and device["manufacturer"]
    assert device["model"] and device["sw_version"]
    assert config["unique_id"] == f"{node}_{object_id}" and config["name"]
    (available,) = config["availability"]
    assert available == {"topic": f"v2g/{pile_id}/status", "payload_available": "online",
                         "payload_not_available": "offline"}
    assert config["state_topic"] == f"v2g/{pile_id}/ha/state"
    assert config["value_template"].startswith("{{ value_json.")
    if component == "sensor":
        assert config.get("unit_of_measurement") in UNITS[config.get("device_class")]
        assert config.get("state_class") in STATE_CLASSES
        assert config["expire_after"] > 0
        if config.get("device_class") == "enum":
            assert config["options"] and "state_class" not in config
    else:
        assert config["command_topic"] == f"v2g/{pile_id}/ha/{object_id}/set"
        assert config["min"] < config["max"] and config["step"] > 0
        assert config["mode"] in ("auto", "box", "slider")
        assert config["unit_of_measurement"] in UNITS.get(config.get("device_class"),
                                                           {"% of a cycle"})


def write_fleet(tmp_path, broker, entries, state_period_s=1):
    (tmp_path / "agg.password").write_text("pw-agg")
    return parse({"dispatch": {"period_s": 0.5, "ttl_s": 3}, "target": {"power_w": -3000},
                  "broker": {"address": f"127.0.0.1:{broker.port}", "user": "agg-1",
                             "password_file": "agg.password", "keepalive_s": 5},
                  "homeassistant": {"enabled": True, "state_period_s": state_period_s},
                  "pile": entries}, tmp_path)


async def emulated(tmp_path, broker, count):
    """`pile-emulator --broker` with `count` piles, as a process of its own."""
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "pilectl.aggregator.emulator", "--piles", str(count), "--broker",
        f"127.0.0.1:{broker.port}", "--keys", str(tmp_path / "keys"), "--prefix", "h-",
        stdout=asyncio.subprocess.PIPE)
    assert (await asyncio.wait_for(process.stdout.readline(), 30)).startswith(b"ready")
    return process


def pile_entry(tmp_path, pile_id, **more):
    return {"id": pile_id, "mqtt": True, "key_file": str(tmp_path / "keys" / f"{pile_id}.key"),
            **more}


async def test_each_pile_is_discovered_with_its_values_and_removed_when_it_leaves(tmp_path):
    """Three emulated piles: every config in the documented shape, the values the piles
    sent, the number only where the fleet file allows it (its max the pile's own bound);
    then the fleet file without one pile, and without the number: their configs and the
    pile's state are cleared (empty retained messages), the others untouched."""
    ids = ["h-00000", "h-00001", "h-00002"]
    users = {**broker_users(tmp_path / "keys", ids), "agg-1": "pw-agg", HA_USER: HA_PASSWORD}
    with Mosquitto(tmp_path / "broker", users, ["agg-1"], discovery_prefix="homeassistant",
                   home_assistant=[HA_USER]) as broker:
        emulator = await emulated(tmp_path, broker, 3)
        aggregator = seen = None
        try:
            fleet = write_fleet(tmp_path, broker, [
                pile_entry(tmp_path, ids[0], owner_reserve=True),
                pile_entry(tmp_path, ids[1]), pile_entry(tmp_path, ids[2])])
            aggregator = Aggregator(fleet)
            aggregator.start()
            running = asyncio.create_task(aggregator.run())
            async with home_assistant(broker) as client, await subscribed(client) as seen:
                await seen.until(lambda: len(seen.configs()) == 3 * 7 + 1 and
                                 all(seen.state(p) for p in ids), 15, seen.configs)
                for topic, config in seen.configs().items():
                    check_config(topic, config, TOPIC.fullmatch(topic).group(2)[4:])
                (number,) = [c for t, c in seen.configs().items() if "/number/" in t]
                assert number["unique_id"] == f"{node_id(ids[0])}_owner_reserve"
                assert number["min"] == 0 and number["max"] == 100  # the pile's max_soc
                assert all(seen.latest[f"v2g/{p}/status"] == b"online" for p in ids)
                # the values are the piles' own (TELEMETRY, verified by the aggregator)
                await asyncio.sleep(1.5)
                for pile_id in ids:
                    link = aggregator.broker.links[pile_id]
                    state = seen.state(pile_id)
                    sent = link.telemetry
                    assert abs(state["soc"] - sent[4] / 10) <= 2  # a second apart at most
                    assert state["state"] in names.STATES.values()
                    assert state["setpoint_w"] == link.sent_w == -1000
                    if pile_id == ids[0]:  # its number's value, asked of the pile
                        assert state["owner_reserve_soc"] == 0  # the default
                    else:
                        assert "owner_reserve_soc" not in state
                    for config in seen.configs(node_id(pile_id)).values():
                        shown = render(config["value_template"], state)
                        if config.get("device_class") == "enum":
                            assert shown in config["options"]
                        elif "unit_of_measurement" in config and shown != "None":
                            float(shown)  # a number Home Assistant can take
                before = seen.configs()
                # a pile without owner_reserve = true: its reserve is not Home Assistant's
                await client.publish(f"v2g/{ids[1]}/ha/owner_reserve/set", b"50")
                await asyncio.sleep(1.0)
                assert aggregator.counters["ha_commands_refused"] == 1
                assert aggregator.counters["ha_commands"] == 0
                assert "owner_reserve_soc" not in aggregator.broker.links[ids[1]].config
            running.cancel()
            await aggregator.stop()
            # the fleet file without h-00002, and no number for h-00000 any more
            fleet = write_fleet(tmp_path, broker, [pile_entry(tmp_path, ids[0]),
                                                   pile_entry(tmp_path, ids[1])])
            aggregator = Aggregator(fleet)
            aggregator.start()
            running = asyncio.create_task(aggregator.run())
            gone = {t for t in before if node_id(ids[2]) in t or "/number/" in t}
            async with home_assistant(broker) as client, await subscribed(client) as seen:
                await seen.until(lambda: gone <= seen.cleared and
                                 f"v2g/{ids[2]}/ha/state" in seen.cleared, 15,
                                 lambda: (gone - seen.cleared, seen.cleared))
                await asyncio.sleep(1.5)
                assert set(seen.configs()) == set(before) - gone
            async with home_assistant(broker) as client, await subscribed(client) as seen:
                # and nothing of it is retained
                await asyncio.sleep(1.0)
                assert set(seen.configs()) == set(before) - gone
                assert seen.state(ids[2]) is None and seen.state(ids[0]) is not None
            running.cancel()
        finally:
            if aggregator is not None:
                await aggregator.stop()
            emulator.kill()
            await emulator.wait()


async def test_home_assistant_reads_its_topics_only(tmp_path):
    """Home Assistant's user reads the configs, states and status, and writes the owner's
    commands, nothing else: not a pile's up or down topic, not the workers' records."""
    users = {"p1": "pw-p1", "agg-1": "pw-agg", HA_USER: HA_PASSWORD}
    assert "topic write v2g/+/ha/+/set" in acl(["agg-1"], "v2g", "homeassistant", [HA_USER])
    assert "homeassistant" not in acl(["agg-1"], "v2g")  # off: the ACL as before
    with Mosquitto(tmp_path / "broker", users, ["agg-1"], discovery_prefix="homeassistant",
                   home_assistant=[HA_USER]) as broker:
        async with aiomqtt.Client("127.0.0.1", broker.port, username="agg-1",
                                  password="pw-agg", identifier="agg-1") as agg, \
                aiomqtt.Client("127.0.0.1", broker.port, username="p1", password="pw-p1",
                               identifier="p1") as pile, \
                home_assistant(broker) as ha:
            await agg.subscribe([("v2g/#", 0), ("v2g-agg/#", 0)])
            await pile.subscribe("v2g/p1/down")
            await ha.subscribe([("v2g/p1/up", 0), ("v2g/p1/down", 0), ("v2g-agg/#", 0)])
            for topic in ("v2g/p1/down", "v2g-agg/target", "v2g/p1/ha/state", "v2g/p1/up",
                          "v2g/p1/ha/owner_reserve/set"):
                await ha.publish(topic, b"from home assistant")
            await pile.publish("v2g/p1/up", b"the pile's")
            await agg.publish("v2g/p1/down", b"the aggregator's")
            await agg.publish("v2g-agg/workers/agg-1", b"up")
            got = [message.topic.value for message in await received(agg, 1.5)]
            assert sorted(got) == ["v2g-agg/workers/agg-1", "v2g/p1/ha/owner_reserve/set",
                                   "v2g/p1/up"]  # the pile's own, not Home Assistant's
            assert [bytes(m.payload) for m in await received(pile, 0.5)] == \
                [b"the aggregator's"]
            assert await received(ha, 0.5) == []  # nor a pile's up or down, nor a record


async def received(client, seconds):
    """The messages `client` got within `seconds`."""
    got = []
    try:
        async with asyncio.timeout(seconds):
            async for message in client.messages:
                got.append(message)
    except TimeoutError:
        pass
    return got


def test_the_fleet_file_says_what_is_wrong_with_home_assistant(tmp_path):
    keys.save(bytes(16), tmp_path / "k.key")
    pile = {"id": "a.b", "mqtt": True, "key_file": "k.key"}
    broker = {"address": "127.0.0.1:1883", "user": "agg", "password_file": "k.key"}
    with pytest.raises(FleetError, match="add a \\[broker\\] section"):
        parse({"homeassistant": {"enabled": True},
               "pile": [{"id": "t", "tcp": "127.0.0.1:1", "key_file": "k.key"}]}, tmp_path)
    with pytest.raises(FleetError, match="would be one device"):
        parse({"broker": broker, "homeassistant": {"enabled": True},
               "pile": [pile, dict(pile, id="a_b")]}, tmp_path)
    with pytest.raises(FleetError, match="state_period_s must be seconds"):
        parse({"broker": broker, "homeassistant": {"enabled": True, "state_period_s": 0},
               "pile": [pile]}, tmp_path)
    with pytest.raises(FleetError, match="owner_reserve = true is for piles on the broker"):
        parse({"pile": [{"id": "t", "tcp": "127.0.0.1:1", "key_file": "k.key",
                         "owner_reserve": True}]}, tmp_path)
    with pytest.raises(FleetError, match="owner_reserve must be true or false"):
        parse({"broker": broker, "pile": [dict(pile, owner_reserve="yes")]}, tmp_path)
    assert not parse({"broker": broker, "pile": [pile]}, tmp_path).homeassistant.enabled


async def test_the_owners_numbers_go_through_the_pile_which_refuses_what_is_out_of_bounds(
        tmp_path, monkeypatch):
    """The real firmware on the virtual bench, its technician's bounds max_soc = 80 and
    budget_max_wh_day = 20000: Home Assistant's reserve 40 is taken (the pile says so,
    over its serial link); 95, -5, 4.5 and text change nothing on the pile, and Home
    Assistant is shown the pile's 40 again; a daily budget of 8000 Wh is taken, 25000
    (above the technician's bound) changes nothing. Then, one command a pile every
    COMMAND_GAP_S: a second at once, and the value the pile holds, are not sent; a
    command retained on the broker is not taken when a worker connects."""
    monkeypatch.setattr(homeassistant, "COMMAND_GAP_S", 0)  # the bounds first
    users = {"p1": "pw-p1", "agg-1": "pw-agg", HA_USER: HA_PASSWORD}
    with Mosquitto(tmp_path / "broker", users, ["agg-1"], discovery_prefix="homeassistant",
                   home_assistant=[HA_USER]) as broker:
        board = {"pile_id": "p1", "mqtt": {"host": "127.0.0.1", "port": broker.port,
                                           "password": "pw-p1", "keepalive_s": 5}}
        bench = VirtualBench(tmp_path / "bench", dict(BENCH, board=board))
        aggregator = running = None
        try:
            await bench.start()
            keys.save(bench.key, tmp_path / "p1.key")
            fleet = write_fleet(tmp_path, broker, [{"id": "p1", "mqtt": True,
                                                    "key_file": "p1.key",
                                                    "owner_reserve": True,
                                                    "owner_budget": True}],
                                state_period_s=30)  # what follows a command comes at once
            aggregator = Aggregator(fleet)
            aggregator.start()
            running = asyncio.create_task(aggregator.run())
            async with home_assistant(broker) as client, await subscribed(client) as seen:
                number_topic = f"homeassistant/number/{node_id('p1')}/owner_reserve/config"
                await seen.until(lambda: number_topic in seen.latest and seen.state("p1"), 20,
                                 seen.configs)
                number = json.loads(seen.latest[number_topic])
                check_config(number_topic, number, "p1")
                assert number["max"] == 80  # the technician's bound, from the pile
                command = number["command_topic"]

                async def reserve_shown(value, seconds=10):
                    await seen.until(lambda: seen.state("p1")["owner_reserve_soc"] == value,
                                     seconds, lambda: seen.state("p1"))

                await reserve_shown(0)
                await client.publish(command, b"40")
                await reserve_shown(40, 3)
                for bad in (b"95", b"-5", b"4.5", b"forty", b"1e40"):
                    del seen.latest["v2g/p1/ha/state"]
                    await client.publish(command, bad)
                    await seen.until(lambda: seen.state("p1") is not None, 3, seen.configs)
                    assert seen.state("p1")["owner_reserve_soc"] == 40  # shown again
                await asyncio.sleep(0.5)
                assert aggregator.counters["ha_commands"] == 3  # 40, 95, -5 went to the pile
                assert aggregator.counters["ha_commands_refused"] == 3  # 4.5, text, 1e40
                assert aggregator.counters["refused"] == 2  # the pile refused 95 and -5
                budget_topic = f"homeassistant/number/{node_id('p1')}/budget_wh_day/config"
                budget = json.loads(seen.latest[budget_topic])
                check_config(budget_topic, budget, "p1")
                assert budget["max"] == 20000 and budget["unit_of_measurement"] == "Wh"
                await client.publish(budget["command_topic"], b"8000")
                await seen.until(lambda: seen.state("p1")["budget_wh_day"] == 8000, 3,
                                 lambda: seen.state("p1"))
                del seen.latest["v2g/p1/ha/state"]
                await client.publish(budget["command_topic"], b"25000")
                await seen.until(lambda: seen.state("p1") is not None, 3, seen.configs)
                assert seen.state("p1")["budget_wh_day"] == 8000  # refused by the pile
                await asyncio.sleep(0.5)
                assert aggregator.counters["refused"] == 3
                sent, dropped = (aggregator.counters[k] for k in ("ha_commands",
                                                                  "ha_commands_refused"))
                await client.publish(command, b"41")
                await reserve_shown(41, 3)
                monkeypatch.setattr(homeassistant, "COMMAND_GAP_S", 60)
                await client.publish(command, b"50")  # too soon after 41
                await client.publish(command, b"42", retain=True)  # also too soon
                await asyncio.sleep(1.0)  # both handled while the gap holds
                monkeypatch.setattr(homeassistant, "COMMAND_GAP_S", 0)
                await client.publish(command, b"41")  # what the pile holds: nothing to send
                await asyncio.sleep(1.0)
                assert aggregator.counters["ha_commands"] == sent + 1
                assert aggregator.counters["ha_commands_refused"] == dropped + 3
                monkeypatch.setattr(homeassistant, "COMMAND_GAP_S", 60)
                await client.publish(command, b"55", retain=True)  # too soon for this worker
                await asyncio.sleep(1.0)
                running.cancel()
                await aggregator.stop()
                aggregator = Aggregator(fleet)  # a worker that connects: given the retained 55
                aggregator.start()
                running = asyncio.create_task(aggregator.run())
                await seen.until(lambda: aggregator.counters["ha_commands_refused"] >= 1, 10,
                                 lambda: aggregator.counters)
                assert aggregator.counters["ha_commands"] == 0
                await client.publish(command, b"", retain=True)  # the retained one cleared
            wired = await bench.serial(key=bench.key)
            try:
                found = await wired.config_get(["owner_reserve_soc", "max_soc", "budget_wh_day"])
            finally:
                await wired.close()
            assert found == {"owner_reserve_soc": 41, "max_soc": 80, "budget_wh_day": 8000}
        finally:
            if running is not None:
                running.cancel()
            if aggregator is not None:
                await aggregator.stop()
            await bench.stop()
    assert bench.sim.oracle.violations == []


def test_broker_config_adds_home_assistants_user_and_rights(tmp_path):
    from click.testing import CliRunner
    from pilectl.aggregator.cli import main

    keys.save(bytes(16), tmp_path / "p.key")
    (tmp_path / "agg.password").write_text("pw-agg")
    fleet = tmp_path / "fleet.toml"
    text = ('[broker]\naddress = "127.0.0.1:1883"\nuser = "agg-1"\n'
            'password_file = "agg.password"\n\n[homeassistant]\nenabled = {on}\n\n'
            '[[pile]]\nid = "p1"\nmqtt = true\nkey_file = "p.key"\n')
    fleet.write_text(text.format(on="true"))
    out = tmp_path / "broker"
    done = CliRunner().invoke(main, ["broker-config", str(fleet), str(out),
                                     "--home-assistant", "hass"])
    assert done.exit_code == 0, done.output
    assert (out / "home-assistant" / "hass.password").read_text().strip()
    assert "user hass\ntopic read homeassistant/#" in (out / "acl").read_text()
    done = CliRunner().invoke(main, ["broker-config", str(fleet), str(out),
                                     "--home-assistant", "p1"])
    assert done.exit_code == 2 and "a pile or worker has that broker user" in done.output
    fleet.write_text(text.format(on="false"))
    done = CliRunner().invoke(main, ["broker-config", str(fleet), str(tmp_path / "b2"),
                                     "--home-assistant", "hass"])
    assert done.exit_code == 2 and "add [homeassistant] enabled = true" in done.output
    assert not (tmp_path / "b2").exists()  # nothing written
