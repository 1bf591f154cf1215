"""V2G pile edge controller firmware."""

VERSION = "0.1.0"

try:
    import micropython  # noqa: F401  (the board's own; imported first by every module)
except ImportError:  # CPython: host tools and tests import the firmware too
    from pile import _cpython

    _cpython.install()
