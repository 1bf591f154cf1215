"""The firmware's own host link alone, under MicroPython: `link_only.py BOARD_JSON KEY`.

Built by `pile.firmware.build_link` from the board file (its serial device and TCP port,
`insecure`), as on a board; KEY is hex or "-". Telemetry goes out every
`telemetry_period_s` as in the firmware. Prints "ready" once the link runs, and the
TCP refusal reason when the link waits for a key. (The whole firmware is main.py.)
"""

import asyncio
import sys
from binascii import unhexlify

from pile.firmware import build_link, build_pile, load_board
from pile.hal import select

board = load_board(sys.argv[1])
pile = build_pile(board)
if sys.argv[2] != "-":
    pile.set_key(unhexlify(sys.argv[2]))
link = build_link(pile, select(board, "firmware"), board,
                  on_refused=lambda reason: print("refused:", reason))
pile.diagnostics = lambda part: link.diagnostics()  # the link's counters: one part


async def main():
    tasks = [asyncio.create_task(server) for server in link.servers()]
    tasks.append(asyncio.create_task(link.run_telemetry()))
    print("ready")
    while link.tcp_server is None:
        await asyncio.sleep_ms(20)
    print("tcp up")
    await asyncio.gather(*tasks)


asyncio.run(main())
