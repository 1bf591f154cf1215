"""Shared paths and runners for the host-side tests (fixtures are in conftest.py)."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from pilectl import MICROPYTHON, micropython_env

ROOT = Path(__file__).resolve().parent.parent
FIRMWARE = ROOT / "firmware"
FW_TESTS = ROOT / "tests" / "fw"
BIN = Path(sys.executable).parent

sys.path.insert(0, str(FW_TESTS))  # host tests reuse the firmware test helpers (replay, fwtest)


def run_micropython(script, *args, paths=(FIRMWARE,), input=None, timeout=120):
    """Run `script` on the MicroPython unix port with `paths` as its sys.path."""
    return subprocess.run([str(MICROPYTHON), str(script), *args], input=input,
                          env=micropython_env(*paths),
                          capture_output=True, text=True, timeout=timeout, cwd=ROOT)


def board_exec(port, code, timeout=60, resume=False):
    """Run `code` on a board's REPL at `port` with mpremote (after a soft reset unless
    `resume`); its output, stripped. The command must succeed."""
    done = subprocess.run([str(BIN / "mpremote"), "connect", port,
                           *(["resume"] if resume else []), "exec", code],
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout.strip()


def board_fw_tests(port, names, resume=True):
    """Run tests/fw modules `names` on a board's REPL at `port` with mpremote: they, the
    runner (tests/mp/run.py) and fwtest.py are copied to /fwtests, over the firmware
    the board holds. Returns (the runner's closing line, its whole output), and how many
    cases the modules have, to compare."""
    files = [ROOT / "tests" / "mp" / "run.py", FW_TESTS / "fwtest.py",
             *(FW_TESTS / f"{name}.py" for name in names)]
    again = ["resume"] if resume else []
    copied = subprocess.run([str(BIN / "mpremote"), "connect", port, *again,
                             "fs", "mkdir", ":/fwtests", "+", "fs", "cp",
                             *map(str, files), ":/fwtests/"],
                            capture_output=True, text=True, timeout=180)
    assert copied.returncode == 0, copied.stdout + copied.stderr
    out = subprocess.run([str(BIN / "mpremote"), "connect", port, "resume", "exec",
                          "import sys; sys.path.insert(0, '/fwtests'); import run; "
                          f"run.run({list(names)!r})"],
                         capture_output=True, text=True, timeout=600)
    cases = sum((FW_TESTS / f"{name}.py").read_text().count("\ndef test_") for name in names)
    lines = out.stdout.strip().splitlines() or [""]
    return lines[-1], f"{cases} passed, 0 failed", out.stdout[-3000:] + out.stderr


SITE_FW_TESTS = ("test_site", "test_siteleader", "test_siteshare", "test_sitelink")


class MicroPythonWorker:
    """tests/mp/worker.py under the unix port: firmware codecs on call, one process per session."""

    def __init__(self):
        self.proc = subprocess.Popen([str(MICROPYTHON), str(ROOT / "tests" / "mp" / "worker.py")],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                     env=micropython_env(FIRMWARE), cwd=ROOT)

    def call(self, command, *args):
        """Run `command` on byte-string args; return bytes, or raise WorkerError."""
        hexes = ["x" + a.hex() if a is not None else "-" for a in args]  # never empty
        self.proc.stdin.write(" ".join([command, *hexes]) + "\n")
        self.proc.stdin.flush()
        reply = self.proc.stdout.readline().rstrip("\n")
        status, _, rest = reply.partition(" ")
        if status == "ok":
            return rest
        if status == "err":
            raise WorkerError(rest)
        raise RuntimeError(f"worker died: {reply!r}")

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


class WorkerError(Exception):
    """The firmware code under MicroPython raised; the message names the exception."""


class Field:
    """`pilectl` as a technician runs it, against a `pilectl.unixboard.BoardBench`.

    `pilectl` is the command (by default this environment's), `env` more variables."""

    def __init__(self, bench, home, pilectl=None, **env):
        self.bench = bench
        self.pilectl = str(pilectl or BIN / "pilectl")
        self.env = dict(os.environ, PILECTL_HOME=str(home), **env)

    def run(self, *args, home=None, link=True):
        env = self.env if home is None else dict(self.env, PILECTL_HOME=str(home))
        where = ["--port", self.bench.link_host] if link else []
        return subprocess.run([self.pilectl, *args, *where], capture_output=True, text=True,
                              env=env, timeout=60, cwd=self.bench.dir)

    def json(self, *args, **kwargs):
        result = self.run(*args, "--json", **kwargs)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    def deploy(self, *extra):
        return self.run("deploy", "--board", str(self.bench.board_file), "--port",
                        self.bench.usb, *extra, link=False)

    def until_up(self, seconds=20):
        deadline = time.monotonic() + seconds
        while True:
            result = self.run("status", "--json")
            if result.returncode == 0:
                return json.loads(result.stdout)
            assert time.monotonic() < deadline, result.stderr
            time.sleep(0.5)


async def stop_serving(dispatching, aggregator, runner, emulator):
    """End a test's aggregator: its dispatch task, the aggregator, its API's runner, and
    the emulated piles it served."""
    import asyncio

    dispatching.cancel()
    await asyncio.gather(dispatching, return_exceptions=True)
    await aggregator.stop()
    await runner.cleanup()
    emulator.stop()
