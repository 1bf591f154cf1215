"""Run firmware test modules under MicroPython: `micropython run.py test_limits ...`.

The same modules pytest collects on CPython; every `test_*` function is called
and a closing 'N passed, N failed' line printed. Exit status 1 on any failure. On a
board (no sys.argv on the rp2 port): `import run; run.run(["test_site", ...])`.
"""

import sys


def run(names):
    """Call every `test_*` of each module named; print each case and the closing line;
    return how many failed."""
    passed = failed = 0
    for name in names:
        module = __import__(name)
        for attr in sorted(dir(module)):
            if not attr.startswith("test_"):
                continue
            try:
                getattr(module, attr)()
            except Exception as exc:  # report every failing case, then fail the run
                failed += 1
                print("FAIL %s.%s" % (name, attr))
                sys.print_exception(exc)
            else:
                passed += 1
                print("PASS %s.%s" % (name, attr))
    print("%d passed, %d failed" % (passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if run(sys.argv[1:]) else 0)
