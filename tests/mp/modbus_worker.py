"""The firmware's Modbus master under MicroPython, driven line by line from a host test.

    modbus_worker.py DEVICE BAUD

Each stdin line is one request: `rh|ri UNIT ADDR COUNT`, `ws UNIT ADDR VALUE`,
`wm UNIT ADDR HEX`, `rw UNIT RADDR RCOUNT WADDR HEX`, `stats`, `drain` (drop the
bytes waiting on the line with the heap locked, so any allocation fails), or `alloc`
before a request (`alloc rh 1 0 4`: the heap bytes it allocated, once warm). Each answer
is one JSON line: {"data": hex}, {"allocated": bytes} or {"error": kind, "code": n,
"message": text}.
"""

import asyncio
import gc
import json
import sys
from binascii import hexlify, unhexlify

import micropython
from pile.hal.unix import SerialPort
from pile.modbus import DeviceException, Master, ModbusError

master = Master(SerialPort(sys.argv[1]), int(sys.argv[2]), retries=1, timeout_ms=300)


def prepare(words):
    """(the master's coroutine function, its arguments) for one request line."""
    op = words[0]
    args = [int(w) for w in words[1:4]] if op != "wm" else [int(w) for w in words[1:3]]
    if op == "rh":
        return master.read_holding, args
    if op == "ri":
        return master.read_input, args
    if op == "ws":
        return master.write_single, args
    if op == "wm":
        return master.write_multiple, args + [unhexlify(words[3])]
    if op == "rw":
        return master.read_write, [int(w) for w in words[1:5]] + [unhexlify(words[5])]
    raise ValueError(op)


async def main():
    while True:
        line = sys.stdin.readline()
        if not line:
            return
        words = line.split()
        if words[0] == "stats":
            print(json.dumps({k: getattr(master, k) for k in (
                "transactions", "failures", "timeouts", "bad_replies", "exceptions",
                "bytes_out", "bytes_in")}))
            continue
        if words[0] == "drain":
            failed = None
            micropython.heap_lock()
            try:
                master.port.drain_input()
            except MemoryError as exc:
                failed = exc
            finally:
                micropython.heap_unlock()
            print(json.dumps({"error": "MemoryError"} if failed else {"data": ""}))
            continue
        if words[0] == "alloc":
            call, args = prepare(words[1:])
            await call(*args)  # warm: first-time attribute and dict growth
            gc.collect()
            before = gc.mem_alloc()
            await call(*args)
            print(json.dumps({"allocated": gc.mem_alloc() - before}))
            continue
        try:
            call, args = prepare(words)
            data = await call(*args)
            print(json.dumps({"data": hexlify(bytes(data or b"")).decode()}))
        except DeviceException as exc:
            print(json.dumps({"error": "exception", "code": exc.code, "message": str(exc)}))
        except ModbusError as exc:
            print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))


asyncio.run(main())
