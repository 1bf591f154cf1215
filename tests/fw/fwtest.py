"""Helpers for firmware tests that run under CPython (pytest) and MicroPython alike."""

from pile import limits
from pile.config import Config
from pile.telemetry import EV_CONNECTED, READY, Telemetry

RATED = 11000


def telemetry(**fields):
    """A healthy, plugged-in EV at 60 % and 25 degC unless `fields` say otherwise."""
    tel = Telemetry()
    tel.status = READY | EV_CONNECTED
    tel.soc = 600
    tel.battery_temp = 250
    tel.converter_temp = 400
    tel.ev_max_charge = RATED
    tel.ev_max_discharge = RATED
    tel.rated_charge = RATED
    tel.rated_discharge = RATED
    for name, value in fields.items():
        setattr(tel, name, value)
    return tel


SITE_LIMIT = 16000  # with the default 5 kW load, exactly leaves the rating free to charge


def config(**changes):
    """Defaults, but a 16 kW site connection unless `changes` say otherwise."""
    values = {"site_import_limit_w": SITE_LIMIT}
    values.update(changes)
    return Config(values)


def envelope(tel=None, cfg=None, site_w=5000, meter_age_ms=0, reserve_x10=limits.NO_DEPARTURE,
             departure_left_s=0, stopped=False, lost=False, env=None):
    """Compute an envelope; the default site imports 5 kW with the pile idle."""
    env = env or limits.Envelope()
    limits.compute(env, tel or telemetry(), cfg or config(), site_w, meter_age_ms,
                   reserve_x10, departure_left_s, stopped, lost)
    return env


class raises:
    """`with raises(ValueError) as caught:` — fails unless the block raises that type."""

    def __init__(self, kind):
        self.kind = kind
        self.value = None

    def __enter__(self):
        return self

    def __exit__(self, kind, value, traceback):
        if kind is None:
            raise AssertionError("%s was not raised" % self.kind.__name__)
        if not issubclass(kind, self.kind):
            return False
        self.value = value
        return True
