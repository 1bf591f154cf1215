"""The firmware update's signature check: ECDSA P-256 (the firmware's, pile/signature.py)
against Ed25519 (bench/signature_ed25519.py, the candidate that lost), on the emulated
RP2040 and on the MicroPython unix port.

    python bench/signature_bench.py      (or `make bench-signature`; about 5 minutes)

Both verify a signature over a 200-byte message (a key and signature made here with the
`cryptography` package), run as the update task runs them: one `next()` a slice. For
each candidate and target:
- `total_us`: the verification, all slices, collections included (`time.ticks_us()` on
  the board: emulated time on the RP2040, 125 MHz; on the unix port, the host's, the run
  of the median time of 5);
- `longest_us`: the longest slice between two yields, and `collections`, how many slices
  the garbage collector ran in (`gc.mem_alloc()` fell), `longest_compute_us` the longest
  of the others and `compute_over_2ms` how many of those passed 2 ms;
- `allocated_b`: heap bytes allocated by one verification (a second run with automatic
  collection off, collected by hand between slices), `import_heap_b` held by importing
  the module, `mpy_b` the module compiled by mpy-cross for the RP2040 (armv6m);
- on the RP2040, `instructions` and `busy_us`: what the emulator counted for one
  `verify()` (the runner's stats, less an import-only run).

The RP2040 is measured twice: after a soft reset (`rp2`: a heap holding the REPL and the
module) and with the firmware's modules imported first (`rp2_firmware_heap`: about 95 KB
held, as on a running pile, which makes the collector's pauses longer and allocations
slower). Without Node.js, rp2040js or the Pico image the RP2040 part is skipped, saying
why. One JSON line ends the output.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from pilectl import MICROPYTHON, MPREMOTE, micropython_env
from pilectl.build import MPY_CROSS, build

ROOT = Path(__file__).resolve().parent.parent
CANDIDATES = {"p256": ROOT / "firmware" / "pile" / "signature.py",
              "ed25519": ROOT / "bench" / "signature_ed25519.py"}
CHOSEN = "p256"
MESSAGE_BYTES = 200
UNIX_RUNS = 5  # the host is shared: the run of the median time of 5 (the emulator's is exact)

# Run on the board: the candidates are modules named p256 and ed25519 beside it.
_MEASURE = """
import gc, json, time
from binascii import unhexlify

def natural(mod, args):
    gc.collect()
    steps = mod.verifying(*args)
    total = slices = longest = collections = compute = over = 0
    ok = None
    before = gc.mem_alloc()
    while ok is None:
        t = time.ticks_us()
        try:
            next(steps)
        except StopIteration as e:
            ok = e.value
        dt = time.ticks_diff(time.ticks_us(), t)
        after = gc.mem_alloc()
        total += dt
        slices += 1
        longest = max(longest, dt)
        if after < before:
            collections += 1
        else:
            compute = max(compute, dt)
            over += dt > 2000
        before = after
    return ok, {"total_us": total, "slices": slices, "longest_us": longest,
                "collections": collections, "longest_compute_us": compute,
                "compute_over_2ms": over}

def allocation(mod, args):
    gc.collect()
    gc.disable()
    steps = mod.verifying(*args)
    allocated = n = 0
    ok = None
    start = gc.mem_alloc()
    while ok is None:
        try:
            next(steps)
        except StopIteration as e:
            ok = e.value
        n += 1
        if n % 8 == 0 or ok is not None:
            allocated += gc.mem_alloc() - start
            gc.collect()
            start = gc.mem_alloc()
    gc.enable()
    return ok, allocated

if PRELOAD:
    import pile.firmware, pile.hal.rp2
for name in NAMES:
    gc.collect()
    base = gc.mem_alloc()
    mod = __import__(name)
    gc.collect()
    found = {"import_heap_b": gc.mem_alloc() - base}
    key, message, signature = (unhexlify(v) for v in VECTORS[name])
    runs = sorted((natural(mod, (key, message, signature)) for _ in range(RUNS)),
                  key=lambda run: run[1]["total_us"])
    ok = all(run[0] for run in runs)
    found.update(runs[len(runs) // 2][1])  # the run of the median time
    if not PRELOAD:
        ok2, found["allocated_b"] = allocation(mod, (key, message, signature))
        ok = ok and ok2
    bad = bytearray(signature)
    bad[17] ^= 4
    found["good"] = ok
    found["bad_refused"] = mod.verify(key, message, bytes(bad)) is False
    print("RESULT " + name + " " + json.dumps(found))
    del mod
"""

_ONE_VERIFY = """
from binascii import unhexlify
import {name}
args = [unhexlify(v) for v in {vector!r}]
{run}
"""


def vectors():
    """{candidate: (key, message, signature) as hex}, made by the cryptography package."""
    message = os.urandom(MESSAGE_BYTES)
    raw = serialization.Encoding.Raw, serialization.PublicFormat.Raw
    ed_key = ed25519.Ed25519PrivateKey.generate()
    ec_key = ec.generate_private_key(ec.SECP256R1())
    point = ec_key.public_key().public_numbers()
    r, s = decode_dss_signature(ec_key.sign(message, ec.ECDSA(hashes.SHA256())))
    return {"ed25519": [ed_key.public_key().public_bytes(*raw).hex(), message.hex(),
                        ed_key.sign(message).hex()],
            "p256": [(point.x.to_bytes(32, "big") + point.y.to_bytes(32, "big")).hex(),
                     message.hex(), (r.to_bytes(32, "big") + s.to_bytes(32, "big")).hex()]}


def compile_candidates(directory):
    """Each candidate as <name>.mpy for the RP2040 (armv6m; bytecode only, so the unix
    port loads it too); {name: bytes}."""
    sizes = {}
    for name, source in CANDIDATES.items():
        out = directory / f"{name}.mpy"
        subprocess.run([str(MPY_CROSS), "-march=armv6m", "-o", str(out), "-s",
                        f"{name}.py", str(source)], check=True)
        sizes[name] = out.stat().st_size
    return sizes


def script(vector_table, preload=False, runs=1):
    return (f"NAMES = {tuple(CANDIDATES)!r}\nVECTORS = {vector_table!r}\n"
            f"PRELOAD = {preload!r}\nRUNS = {runs}\n" + _MEASURE)


def results(output):
    found = {}
    for line in output.splitlines():
        if line.startswith("RESULT "):
            _, name, figures = line.split(" ", 2)
            found[name] = json.loads(figures)
    if set(found) != set(CANDIDATES):
        raise SystemExit(f"the measurement did not finish:\n{output[-2000:]}")
    for name, figures in found.items():
        if not (figures["good"] and figures["bad_refused"]):
            raise SystemExit(f"{name} got a verdict wrong: {figures}")
    return found


def on_unix(directory, vector_table):
    path = directory / "measure.py"
    path.write_text(script(vector_table, runs=UNIX_RUNS))
    done = subprocess.run([str(MICROPYTHON), str(path)], env=micropython_env(directory),
                          capture_output=True, text=True, timeout=600)
    return results(done.stdout + done.stderr)


def on_rp2(directory, vector_table):
    """Both scenarios on one emulated Pico, each measurement after a soft reset."""
    from pilectl.pico import Pico

    def mpremote(*args):
        done = subprocess.run([str(MPREMOTE), "connect", pico.usb, *args],
                              capture_output=True, text=True, timeout=1800)
        if done.returncode:
            raise SystemExit(f"mpremote {args[0]} on the emulated Pico failed:\n"
                             f"{done.stdout[-1000:]}{done.stderr[-1000:]}")
        return done.stdout

    def busy(code):
        """(instructions, busy µs) the core spent running `code`."""
        before = pico.stats()
        mpremote("exec", code)
        after = pico.stats()
        busy_ns = (after["emulated_ns"] - before["emulated_ns"]) - (after["idle_ns"] -
                                                                     before["idle_ns"])
        return after["instructions"] - before["instructions"], busy_ns / 1000

    firmware = directory / "firmware"
    build(firmware, march="armv6m")
    with Pico(directory / "pico") as pico:
        mpremote("cp", *(str(directory / f"{name}.mpy") for name in CANDIDATES), ":")
        fresh = results(mpremote("exec", script(vector_table)))
        for name in CANDIDATES:
            vector = vector_table[name]
            imported = busy(_ONE_VERIFY.format(name=name, vector=vector, run=""))
            verified = busy(_ONE_VERIFY.format(name=name, vector=vector,
                                               run=f"assert {name}.verify(*args)"))
            fresh[name]["instructions"] = verified[0] - imported[0]
            fresh[name]["busy_us"] = round(verified[1] - imported[1])
        mpremote("cp", "-r", str(firmware / "pile"), ":")
        loaded = results(mpremote("exec", script(vector_table, preload=True)))
    return fresh, loaded


def table(title, found, sizes):
    print(f"\n{title}")
    print(f"{'':10}{'total ms':>10}{'slices':>8}{'longest':>9}{'GC':>4}{'compute':>9}"
          f"{'>2ms':>6}{'alloc KB':>10}{'import B':>10}{'.mpy B':>8}")
    for name, f in found.items():
        alloc = f"{f['allocated_b'] / 1024:.0f}" if "allocated_b" in f else "-"
        print(f"{name:10}{f['total_us'] / 1000:>10.1f}{f['slices']:>8}"
              f"{f['longest_us'] / 1000:>8.1f}m{f['collections']:>4}"
              f"{f['longest_compute_us'] / 1000:>8.1f}m{f['compute_over_2ms']:>6}"
              f"{alloc:>10}{f['import_heap_b']:>10}{sizes[name]:>8}")
        if "instructions" in f:
            print(f"{'':10}one verify(): {f['instructions']:,} instructions, "
                  f"{f['busy_us'] / 1000:.1f} ms of the core")


def main():
    from pilectl.pico import missing

    vector_table = vectors()
    summary = {"chosen": CHOSEN, "message_bytes": MESSAGE_BYTES}
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        sizes = compile_candidates(directory)
        summary["mpy_b"] = sizes
        summary["unix"] = on_unix(directory, vector_table)
        table("MicroPython unix port (µs are the host's)", summary["unix"], sizes)
        reason = missing()
        if reason is not None:
            print(f"\nemulated RP2040 skipped: {reason}")
            summary["rp2"] = summary["rp2_firmware_heap"] = {"skipped": reason}
        else:
            summary["rp2"], summary["rp2_firmware_heap"] = on_rp2(directory, vector_table)
            table("emulated RP2040 (125 MHz), after a soft reset", summary["rp2"], sizes)
            table("emulated RP2040, the firmware's modules imported first",
                  summary["rp2_firmware_heap"], sizes)
    print("\n(longest: the longest slice between yields, collections included; GC: the "
          "slices a collection ran in;\n compute: the longest slice without one; >2ms: "
          "how many of those passed 2 ms)")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
