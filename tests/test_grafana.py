"""The Grafana dashboard (docs/grafana/) against Grafana's dashboard JSON model and the
metrics a real aggregator exports.

No Grafana server can be installed here (Debian bookworm main has none; the PyPI
`grafana` is not the server), so the dashboard is checked instead of loaded: its shape
against tests/grafana/dashboard.schema.json (written from Grafana's own schema of the
JSON model, kinds/dashboard/dashboard_kind.cue) plus what a schema cannot say (the grid,
ids, variables); its provisioning files as Grafana reads them; and every metric each
PromQL expression names scraped from a running aggregator's /metrics, with emulated
piles over TCP.
"""

import asyncio
import json
import re
import urllib.request
from pathlib import Path

import jsonschema
import pytest
import yaml
from pilectl import names
from pilectl.aggregator.api import Metrics, application, serve
from pilectl.aggregator.service import Aggregator
from pilectl.client import Client
from pilectl.vbench import free_port
from prometheus_client.parser import text_string_to_metric_families
from test_aggregator import Emulator, fleet_file, settle

ROOT = Path(__file__).resolve().parent.parent
GRAFANA = ROOT / "docs" / "grafana"
DASHBOARD = GRAFANA / "pile-aggregator.json"
SCHEMA = Path(__file__).resolve().parent / "grafana" / "dashboard.schema.json"
# Grafana's built-in panel plugins that the dashboard may use
PANEL_TYPES = {"row", "timeseries", "stat", "gauge", "bargauge", "table", "heatmap",
               "state-timeline", "status-history", "text", "barchart"}
_FUNCTIONS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "deriv",
              "histogram_quantile", "label_values", "abs", "clamp_min", "clamp_max",
              "topk", "bottomk", "by", "without", "on", "ignoring", "group_left",
              "group_right", "and", "or", "unless", "offset", "bool", "delta", "idelta",
              "avg_over_time", "max_over_time", "min_over_time", "last_over_time"}


def load_dashboard():
    return json.loads(DASHBOARD.read_text())


def all_panels(dashboard):
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", ())


def expressions(dashboard):
    """Every PromQL expression: the panels' targets and the variables' queries."""
    found = [target["expr"] for panel in all_panels(dashboard)
             for target in panel.get("targets", ())]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]
            found.append(query["query"] if isinstance(query, dict) else query)
    return found


def metric_names(expr):
    """The metric names a PromQL expression reads: what is left once label matchers,
    ranges, strings, grouping clauses, numbers and function names are taken out."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring)\s*\([^)]*\)", " ", text)
    text = re.sub(r"\$\{?\w+\}?", " ", text)
    found = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", text):
        name = match.group()
        after = text[match.end():].lstrip()
        if name in _FUNCTIONS or after.startswith("("):
            continue
        found.add(name)
    # label_values(METRIC{...}, LABEL): the label is no metric
    for call in re.finditer(r"label_values\(\s*([A-Za-z_:][A-Za-z0-9_:]*)[^,]*,\s*(\w+)\s*\)",
                            expr):
        found.discard(call.group(2))
    return found


def test_the_dashboard_has_the_shape_of_grafanas_json_model():
    dashboard = load_dashboard()
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    errors = [f"{'/'.join(map(str, e.path))}: {e.message}"
              for e in jsonschema.Draft202012Validator(schema).iter_errors(dashboard)]
    assert errors == []
    # what the schema cannot say
    panels = list(all_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    cells = set()
    for panel in panels:
        assert panel["type"] in PANEL_TYPES, panel["type"]
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24, f"{panel['title']} runs past the 24 columns"
        mine = {(x, y) for x in range(pos["x"], pos["x"] + pos["w"])
                for y in range(pos["y"], pos["y"] + pos["h"])}
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    for panel in panels:
        if panel["type"] == "row":
            continue
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs)), f"{panel['title']}: refIds repeat"
        for ref in [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]:
            assert ref == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    for expr in expressions(dashboard):
        for used in re.findall(r"\$\{?(\w+)\}?", expr):
            assert used in variables or used.startswith("__"), f"${used} is not defined"


def test_the_state_panel_names_the_states_as_pilectl_does():
    (panel,) = [p for p in all_panels(load_dashboard()) if p["type"] == "state-timeline"]
    (mapping,) = panel["fieldConfig"]["defaults"]["mappings"]
    assert {int(code): shown["text"] for code, shown in mapping["options"].items()} == \
        names.STATES


def test_the_provisioning_files_are_what_grafana_reads():
    datasources = yaml.safe_load((GRAFANA / "provisioning/datasources/pile-aggregator.yaml")
                                 .read_text())
    assert datasources["apiVersion"] == 1
    (source,) = datasources["datasources"]
    assert source["type"] == "prometheus" and source["access"] in ("proxy", "direct")
    assert source["url"].startswith("http") and source["uid"]
    providers = yaml.safe_load((GRAFANA / "provisioning/dashboards/pile-aggregator.yaml")
                               .read_text())
    assert providers["apiVersion"] == 1
    (provider,) = providers["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")
    scrape = yaml.safe_load((GRAFANA / "prometheus.yml").read_text())
    (job,) = scrape["scrape_configs"]
    assert job["static_configs"][0]["targets"]
    # the datasource's scrape interval and the job's agree ($__rate_interval counts on it)
    assert source["jsonData"]["timeInterval"] == job["scrape_interval"]


def test_the_metric_name_check_finds_what_is_not_exported():
    """The check below can fail: a name misspelt, a label taken for a metric, a function
    taken for one."""
    assert metric_names('sum(rate(aggregator_dispatch_seconds_bucket{job=~"$job"}[5m]))') == \
        {"aggregator_dispatch_seconds_bucket"}
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(a_bucket[$__rate_interval])))"
                        ) == {"a_bucket"}
    assert metric_names('label_values(aggregator_pile_heard{job=~"$job"}, pile)') == \
        {"aggregator_pile_heard"}
    assert metric_names("-aggregator_pile_max_discharge_wats") == \
        {"aggregator_pile_max_discharge_wats"}


async def scrape(port):
    def get():
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
            return reply.read().decode()
    return await asyncio.get_running_loop().run_in_executor(None, get)


def sampled(text):
    """{metric name: {its samples' pile label (or None): value}} of an exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[sample.labels.get("pile")] = sample.value
    return found


@pytest.mark.usefixtures("socat")
async def test_every_metric_the_dashboard_reads_is_one_a_running_aggregator_exports(tmp_path):
    """Three emulated piles (one with an owner's V2G budget) and one that never answers,
    an aggregator with its API: every name in every expression has samples on /metrics;
    the piles' own series are labelled by pile, and the silent pile has only `heard 0`."""
    emulator = Emulator(tmp_path, 3)
    silent_port = free_port()
    fleet = fleet_file(tmp_path, [emulator.fleet.read_text(),
                                  f'[[pile]]\nid = "silent"\ntcp = "127.0.0.1:{silent_port}"\n'
                                  f'key_file = "keys/emu-00000.key"\n'], -6000)
    aggregator = Aggregator(fleet)
    metrics = Metrics(aggregator)
    aggregator.on_status = metrics.record
    port = free_port()
    runner = await serve(application(aggregator, metrics), "127.0.0.1", port)
    aggregator.start()
    try:
        await settle(aggregator, 3)
        owner = fleet.piles[0]
        client = await Client.tcp(*owner.tcp, key=owner.key)  # the owner's tool: the link key
        try:
            await client.config_set({"budget_wh_day": 5000})
        finally:
            await client.close()
        await settle(aggregator, 3)
        exported = sampled(await scrape(port))
        emulator.stop()  # every pile falls silent: heard 0, and no figures of the past
        await settle(aggregator, 1)
        after = sampled(await scrape(port))
        assert after["aggregator_pile_heard"] == dict.fromkeys(after["aggregator_pile_heard"], 0)
        assert len(after["aggregator_pile_heard"]) == 4
        assert "aggregator_pile_soc_percent" not in after
    finally:
        await aggregator.stop()
        await runner.cleanup()
        emulator.stop()
    read = set().union(*map(metric_names, expressions(load_dashboard())))
    assert read - set(exported) == set(), "the dashboard reads metrics nobody exports"
    ids = {entry.pile_id for entry in fleet.piles}
    assert exported["aggregator_pile_heard"] == {i: 0.0 if i == "silent" else 1.0 for i in ids}
    for name in ("aggregator_pile_soc_percent", "aggregator_pile_power_watts",
                 "aggregator_pile_setpoint_watts", "aggregator_pile_state",
                 "aggregator_pile_max_charge_watts", "aggregator_pile_max_discharge_watts"):
        assert set(exported[name]) == ids - {"silent"}, name
    assert set(exported["aggregator_pile_budget_left_watthours"]) == {owner.pile_id}
    assert sum(exported["aggregator_pile_setpoint_watts"].values()) == -6000
    assert all(0 < soc <= 100 for soc in exported["aggregator_pile_soc_percent"].values())
