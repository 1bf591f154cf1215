"""Summary figures of a benchmark's samples, the same way in every benchmark."""

import statistics


def figures(ms):
    """n, median, p99 and max of samples in milliseconds, rounded to 0.1 ms."""
    ms = sorted(ms)
    return {"n": len(ms), "median_ms": round(statistics.median(ms), 1),
            "p99_ms": round(ms[max(0, int(len(ms) * 0.99) - 1)], 1), "max_ms": round(ms[-1], 1)}
