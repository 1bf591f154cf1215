"""Running the plant: scenario files, timed events and fault injection, the step loop.

A scenario is JSON: `duration_s`, `plant` (PlantParams fields), `oracle`
(OracleLimits fields), `load_w` ([[t, W], ...], linear in between) and `events`
([{"at": s, "do": ..., ...}]). Events: silence, meter_silence, crc, noise,
exception (code), slow (delay_s), wrong_unit (unit), no_function_23 — each with
an optional "for" in seconds — and fault (code), battery_temp / converter_temp
(value), unplug, plug (soc, optional). `grid`: the frequency and the response the
oracle expects (pilectl.sim.grid).
"""

import asyncio
import dataclasses
import difflib
import json
import time
from pathlib import Path

from pilectl.sim.bus import Faults, start_server
from pilectl.sim.grid import FreqRule, FreqWatch, GridError, frequency_profile
from pilectl.sim.plant import Oracle, OracleLimits, Plant, PlantParams

SCENARIOS = Path(__file__).resolve().parent.parent / "scenarios"
BUS_FAULTS = {"silence", "meter_silence", "crc", "noise", "exception", "slow", "wrong_unit",
              "no_function_23"}
PLANT_EVENTS = {"fault", "battery_temp", "converter_temp", "unplug", "plug"}


class ScenarioError(ValueError):
    pass


def load_scenario(name_or_path):
    path = Path(name_or_path)
    if not path.exists():
        path = SCENARIOS / f"{name_or_path}.json"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in SCENARIOS.glob("*.json")))
        raise ScenarioError(f"no scenario {name_or_path!r}: give a file, or one of: {known}")
    try:
        scenario = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ScenarioError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(scenario, dict):
        raise ScenarioError(f"{path}: a scenario is a JSON object")
    for event in scenario.get("events", []):
        if event.get("do") not in BUS_FAULTS | PLANT_EVENTS:
            raise ScenarioError(f"{path}: unknown event {event.get('do')!r} (known: "
                                f"{', '.join(sorted(BUS_FAULTS | PLANT_EVENTS))})")
        if "soc" in event:
            _fraction(path, f"event {event['do']!r} soc", event["soc"])
    for part, params in (("plant", PlantParams), ("oracle", OracleLimits)):
        known = {f.name: f.type for f in dataclasses.fields(params)}
        for key, value in scenario.get(part, {}).items():
            if key not in known:
                close = difflib.get_close_matches(key, known, n=1)
                hint = f" (did you mean {close[0]}?)" if close else ""
                raise ScenarioError(f"{path}: {part}.{key} is not a {part} key{hint}; known: "
                                    f"{', '.join(sorted(known))}")
            if not isinstance(value, int | float) or isinstance(value, bool) != (
                    known[key] in (bool, "bool")):
                raise ScenarioError(f"{path}: {part}.{key} must be a "
                                    f"{'true/false' if known[key] in (bool, 'bool') else 'number'}"
                                    f", not {value!r}")
    if "soc" in scenario.get("plant", {}):
        _fraction(path, "plant.soc", scenario["plant"]["soc"])
    _check_grid(path, scenario.get("grid", {}))
    return scenario


_GRID_KEYS = {"hz", "noise_mhz", "seed", "event", "event_at", "response"}


def _check_grid(path, grid):
    unknown = set(grid) - _GRID_KEYS
    if unknown:
        raise ScenarioError(f"{path}: grid.{sorted(unknown)[0]} is not a grid key; known: "
                            f"{', '.join(sorted(_GRID_KEYS))}")
    known = {f.name for f in dataclasses.fields(FreqRule)}
    for key in grid.get("response", {}):
        if key not in known:
            raise ScenarioError(f"{path}: grid.response.{key} is not a response key; known: "
                                f"{', '.join(sorted(known))}")
    try:
        frequency_profile(grid, piecewise)
    except GridError as exc:
        raise ScenarioError(f"{path}: {exc}") from exc


def _fraction(path, what, value):
    if not 0 <= value <= 1:
        raise ScenarioError(f"{path}: {what} is a fraction from 0 to 1 ({value} % is "
                            f"{value / 100:g}), not {value}")


def piecewise(points, default=3000.0):
    """A function of time, linear between [t, value] points, flat outside them; two points
    at one time make a step (in the order given)."""
    if not points:
        return lambda t: default
    points = sorted(points, key=lambda point: point[0])

    def value(t):
        if t <= points[0][0]:
            return points[0][1]
        for (t0, v0), (t1, v1) in zip(points, points[1:], strict=False):
            if t <= t1:
                return v0 + (v1 - v0) * (t - t0) / (t1 - t0) if t1 > t0 else v1
        return points[-1][1]

    return value


def apply_event(event, plant, faults, on=True):
    """Start (on) or end (off) one event's effect."""
    kind = event["do"]
    if kind == "silence":
        faults.silent = on
    elif kind == "meter_silence":
        unit = event.get("unit", 2)
        if on:
            faults.silent_units.add(unit)
        else:
            faults.silent_units.discard(unit)
    elif kind == "crc":
        faults.corrupt_crc = on
    elif kind == "noise":
        faults.noise = bytes(event.get("bytes", [0x13, 0x37, 0x01])) if on else b""
    elif kind == "exception":
        faults.exception = event.get("code", 4) if on else None
    elif kind == "slow":
        faults.delay_s = event.get("delay_s", 0.5) if on else 0.0
    elif kind == "wrong_unit":
        faults.claim_unit = event.get("unit", 9) if on else None
    elif kind == "no_function_23":
        faults.no_function_23 = on
    elif kind == "fault":
        plant.fault_code = event.get("code", 1)
    elif kind == "battery_temp":
        plant.battery_temp_c = event["value"]
    elif kind == "converter_temp":
        plant.converter_temp_c = event["value"]
    elif kind == "unplug":
        plant.ev_connected = False
    elif kind == "plug":
        plant.ev_connected = True
        if "soc" in event:
            plant.soc = event["soc"]


class Simulation:
    """One scenario's plant, bus faults and oracle, stepped in real time."""

    def __init__(self, scenario, step_s=0.05):
        self.scenario = scenario
        grid = scenario.get("grid", {})
        self.plant = Plant(PlantParams(**scenario.get("plant", {})),
                           piecewise(scenario.get("load_w")),
                           grid_hz=frequency_profile(grid, piecewise))
        self.oracle = Oracle(OracleLimits(**scenario.get("oracle", {})))
        if "response" in grid:
            self.oracle.freq = FreqWatch(FreqRule(**grid["response"]))
        self.faults = Faults()
        self.step_s = step_s
        self._pending = sorted(scenario.get("events", []), key=lambda e: e["at"])
        self._ending = []  # (time, event) for events with a duration
        self.log = []  # (time, event name, on)

    def start_clock(self):
        """The scenario's times (load profile, events) count from now: a bench that took
        long to start (a deploy to a board) plays the scenario as written."""
        now = self.plant.t
        self.plant.load_w = piecewise([[at + now, w] for at, w in self.scenario.get("load_w")
                                       or []])
        grid_hz = frequency_profile(self.scenario.get("grid", {}), piecewise)
        self.plant.grid_hz_at = lambda t: grid_hz(t - now)
        self._pending = [dict(event, at=event["at"] + now) for event in self._pending]

    def inject(self, event, after_s=0.0):
        """Start `event` (a scenario event without "at") `after_s` from now: for runners
        that decide as they go, as the soak does."""
        self._pending.append(dict(event, at=self.plant.t + after_s))
        self._pending.sort(key=lambda e: e["at"])

    def advance(self, dt):
        plant = self.plant
        faults = self.faults
        plant.converter_listening = not (faults.silent or plant.converter_unit in
                                         faults.silent_units)
        plant.step(dt)
        t = plant.t
        while self._pending and self._pending[0]["at"] <= t:
            event = self._pending.pop(0)
            apply_event(event, plant, self.faults)
            self.log.append((round(t, 2), event["do"], True))
            if "for" in event:
                self._ending.append((event["at"] + event["for"], event))
        for end in [e for e in self._ending if e[0] <= t]:
            self._ending.remove(end)
            apply_event(end[1], plant, self.faults, on=False)
            self.log.append((round(t, 2), end[1]["do"], False))
        self.oracle.check(t, plant, plant.site_w)

    def sample(self):
        plant = self.plant
        return {"t": round(plant.t, 2), "power_w": round(plant.power_w),
                "commanded_w": plant.commanded_w, "soc_pct": round(plant.soc * 100, 2),
                "battery_temp_c": round(plant.battery_temp_c, 2),
                "converter_temp_c": round(plant.converter_temp_c, 2),
                "site_w": round(plant.site_w), "ev_connected": plant.ev_connected,
                "grid_hz": round(plant.grid_hz, 3),
                "heartbeat_age_s": round(plant.heartbeat_age_s, 2),
                "violations": len(self.oracle.violations)}

    def result(self):
        return {"scenario": self.scenario.get("name", "?"), "duration_s": round(self.plant.t, 2),
                "energy_in_wh": round(self.plant.energy_in_wh, 1),
                "energy_out_wh": round(self.plant.energy_out_wh, 1),
                "bus_requests": len(self.faults.requests),
                "violations": self.oracle.summary(), "events": self.log}

    async def run(self, bus_path, baud=115200, duration_s=None, on_sample=None):
        """Serve the plant on `bus_path` and step it in real time until the duration ends."""
        server = await start_server(bus_path, self.plant.devices, self.faults, baud)
        duration = duration_s if duration_s is not None else self.scenario.get("duration_s", 60)
        start = last = time.monotonic()
        try:
            while last - start < duration:
                await asyncio.sleep(self.step_s)
                now = time.monotonic()
                self.advance(now - last)
                last = now
                if on_sample is not None:
                    on_sample(self.sample())
        finally:
            await server.shutdown()
        return self.result()
