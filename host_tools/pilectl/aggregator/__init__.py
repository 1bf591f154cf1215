"""The fleet aggregator (pile-aggregator) and the pile emulator (pile-emulator)."""

import asyncio


def run(coroutine):
    """Run `coroutine` on uvloop when it is installed (the `aggregator` extra): at fleet
    scale the event loop's own cost per socket read dominates, and uvloop's is lower."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coroutine)
    return uvloop.run(coroutine)
