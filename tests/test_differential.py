"""The safety core gives identical results, tick for tick, on CPython and MicroPython.

Hypothesis builds scenarios; each is replayed here and on the MicroPython unix
port, and every tick's applied power, target, reasons, state, envelope and ACK
must match exactly.
"""

import json

from helpers import FIRMWARE, FW_TESTS
from hypothesis import HealthCheck, given, settings
from replay import replay
from strategies import scenarios


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_micropython_replays_scenarios_identically(micropython, scenario):
    result = micropython(FW_TESTS / "replay.py", paths=(FIRMWARE, FW_TESTS),
                         input=json.dumps([scenario]))
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout) == json.loads(json.dumps([replay(scenario)]))
