"""The firmware's host link alone, for transport tests: `link_server.py SERIAL PORT KEY INSECURE`.

SERIAL is a device path or "-", PORT a TCP port, KEY hex or "-", INSECURE 0 or 1.
Telemetry goes out every 200 ms. Prints "ready" once the serial link runs, and
the TCP refusal reason when the link waits for a key. (The full firmware is main.py.)
"""

import asyncio
import sys
from binascii import unhexlify

from pile.app import Pile
from pile.hal.unix import open_serial
from pile.link import Link

serial_path, port, key, insecure = sys.argv[1:5]
pile = Pile("link-test")
pile.tel.rated_charge = pile.tel.rated_discharge = 11000
if key != "-":
    pile.set_key(unhexlify(key))
link = Link(pile, insecure=insecure == "1")


async def telemetry():
    while True:
        await asyncio.sleep_ms(200)
        await link.broadcast_telemetry()


async def main():
    if serial_path != "-":
        line = asyncio.StreamReader(open_serial(serial_path))
        asyncio.create_task(link.serve_serial(line, line))
    asyncio.create_task(telemetry())
    print("ready")
    await link.run_tcp(int(port), "127.0.0.1", lambda reason: print("refused:", reason))
    print("tcp up")
    while True:
        await asyncio.sleep(1)


asyncio.run(main())
