"""Replay a scenario (plain dicts and lists, JSON-friendly) through the controller.

Shared by the hypothesis properties (CPython) and the differential check that
replays the same scenarios under MicroPython and compares tick by tick.
Per tick it returns [applied, target, reasons, state, max_charge, max_discharge,
must_charge, ack, base, freq_w], ack being [target, reasons] for an accepted setpoint, the
string "refused" for a refused one, "busy" for one before the converter was first
read, or None without a setpoint that tick.
"""

from pile.clock import ticks_add
from pile.config import Config
from pile.control import Controller, NotReady
from pile.telemetry import Telemetry


def replay(scenario):
    ctl = Controller(Config(scenario["config"]))
    tel = Telemetry()
    now = scenario.get("start", 0)
    rows = []
    for step in scenario["steps"]:
        now = ticks_add(now, step["dt"])
        ack = None
        action = step.get("action")
        if action == "stop":
            ctl.stop()
        elif action == "release":
            ctl.release()
        elif action:
            power, ttl, departure, reserve = action[:4]
            mode, curve, revert = action[4] if len(action) > 4 else (None, None, None)
            try:
                target, reasons = ctl.set_setpoint(power, ttl, now, departure, reserve, mode,
                                                   curve, revert)
                ack = [target, reasons]
            except ValueError:
                ack = "refused"
            except NotReady:  # before the first converter reading
                ack = "busy"
        # as on the pile: a request lands between decisions, the readings change with the
        # converter transaction that comes right before the next decision
        for name, value in step["tel"].items():
            setattr(tel, name, value)
        applied = ctl.decide(now, tel, step["ok"], step["site"], step["age"], step["estop"])
        env = ctl.env
        rows.append([applied, ctl.target, ctl.reasons, ctl.state, env.max_charge,
                     env.max_discharge, env.must_charge, ack, ctl.base, ctl.freq_w])
    return rows


def main():
    import json
    import sys

    scenarios = json.loads(sys.stdin.read())
    print(json.dumps([replay(s) for s in scenarios]))


if __name__ == "__main__":
    main()
