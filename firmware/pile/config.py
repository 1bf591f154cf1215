"""Pile configuration: every safety and timing key with its type, range and default.

A change is all-or-nothing: every key is checked, then the merged result is
checked as a whole (floor below ceiling, derate below cutoff...), and only then
applied. Errors name the key and the allowed range so a technician knows what
to send instead. The host tool imports this same schema to validate before sending.

The pile maker narrows the ranges for one pile with the board file's `limits`
(`{"battery_cutoff_c": [1, 50], ...}`): the battery's and converter's physical limits,
which no message can pass. A default outside them is moved to the nearest bound.
"""

# key: (default, low, high, unit) for integers; SOC in %, temperatures in degC.
INTEGERS = {
    "min_soc": (20, 0, 100, "%"),
    "max_soc": (100, 0, 100, "%"),
    "reserve_soc": (50, 0, 100, "%"),
    "battery_capacity_wh": (60000, 5000, 200000, "Wh"),
    "departure_margin_pct": (10, 0, 100, "%"),
    "battery_derate_c": (45, 0, 70, "degC"),
    "battery_cutoff_c": (55, 1, 80, "degC"),
    "battery_resume_c": (50, 0, 80, "degC"),
    "battery_min_charge_c": (0, -30, 20, "degC"),
    "converter_derate_c": (75, 30, 120, "degC"),
    "converter_cutoff_c": (90, 31, 130, "degC"),
    "site_import_limit_w": (11000, 0, 1000000, "W"),
    "site_export_limit_w": (0, 0, 1000000, "W"),
    "no_meter_charge_w": (3680, 0, 1000000, "W"),
    "ramp_w_per_s": (5000, 10, 1000000, "W/s"),
    "telemetry_period_s": (1, 1, 3600, "s"),
    "tick_ms": (250, 50, 1000, "ms"),
    "meter_period_ms": (1000, 250, 1000, "ms"),
    "meter_stale_s": (3, 1, 60, "s"),
    "converter_fault_polls": (3, 1, 20, "polls"),
    "event_log_bytes": (16384, 2048, 32768, "B"),  # the event journal's share of flash
    # frequency-watt droop (docs/grid-services.md); IEEE 1547 allows 17 mHz and 2 % at least
    "freq_nominal_hz": (50, 50, 60, "Hz"),
    "freq_db_under_mhz": (36, 17, 1000, "mHz"),
    "freq_db_over_mhz": (36, 17, 1000, "mHz"),
    "freq_droop_under_pct": (5, 2, 12, "%"),
    "freq_droop_over_pct": (5, 2, 12, "%"),
    "freq_response_ms": (200, 0, 10000, "ms"),  # open-loop: a full-rating step takes this long
    # the owner's V2G budget (docs/safety.md): discharge counted over a rolling day and week
    # of the pile's run time; the top of each range is "no budget"
    "budget_wh_day": (1000000, 0, 1000000, "Wh"),  # the owner's, within budget_max_wh_day
    "budget_cycles_week_pct": (10000, 0, 10000, "% of a full cycle"),  # of battery_capacity_wh
    "budget_max_wh_day": (1000000, 0, 1000000, "Wh"),  # the technician's bound on the owner's
    "budget_max_cycles_week_pct": (10000, 0, 10000, "% of a full cycle"),
    "owner_reserve_soc": (0, 0, 100, "%"),  # no departure's reserve is below it (owner's)
}

# Every key's number in the event log (EVENT_CONFIG_KEY: index + 1). Append only: a
# number keeps its meaning across firmware versions.
KEY_NUMBERS = ("min_soc", "max_soc", "reserve_soc", "battery_capacity_wh",
               "departure_margin_pct", "battery_derate_c", "battery_cutoff_c",
               "battery_resume_c", "battery_min_charge_c", "converter_derate_c",
               "converter_cutoff_c", "site_import_limit_w", "site_export_limit_w",
               "no_meter_charge_w", "ramp_w_per_s", "telemetry_period_s", "tick_ms",
               "meter_period_ms", "meter_stale_s", "converter_fault_polls", "fallback",
               "event_log_bytes", "freq_nominal_hz", "freq_db_under_mhz", "freq_db_over_mhz",
               "freq_droop_under_pct", "freq_droop_over_pct", "freq_response_ms",
               "freq_response", "budget_wh_day", "budget_cycles_week_pct", "budget_max_wh_day",
               "budget_max_cycles_week_pct", "owner_reserve_soc")

# The owner's settings: the link key may change these (and only these), within the bounds
# the technician's keys set; every other key is the technician's (docs/protocol.md).
OWNER_KEYS = ("budget_wh_day", "budget_cycles_week_pct", "owner_reserve_soc")

# (owner's key, technician's key): the owner's value may not pass the technician's.
_OWNER_BOUNDS = (
    ("budget_wh_day", "budget_max_wh_day"),
    ("budget_cycles_week_pct", "budget_max_cycles_week_pct"),
    ("owner_reserve_soc", "max_soc"),
)
NO_BUDGET = -1  # budget_day_wh and budget_week_wh when that budget is not set

# key: (default, allowed values)
CHOICES = {
    "fallback": ("idle", ("idle", "charge")),
    "freq_response": ("off", ("off", "droop")),  # without a setpoint that asks for one
}

# (low key, high key, rule): the merged config must keep low < high.
_ORDER = (
    ("min_soc", "max_soc", "the SOC floor must be below the ceiling"),
    ("battery_derate_c", "battery_cutoff_c", "battery derating must start below the cutoff"),
    ("battery_resume_c", "battery_cutoff_c", "battery resume must be below the cutoff"),
    ("battery_min_charge_c", "battery_derate_c", "the cold limit must be below derating"),
    ("converter_derate_c", "converter_cutoff_c", "converter derating must start below the cutoff"),
)

# Keys scaled by 10 for the integer hot path: SOC to permille, degC to 0.1 degC.
_X10 = (
    "min_soc",
    "max_soc",
    "reserve_soc",
    "battery_derate_c",
    "battery_cutoff_c",
    "battery_resume_c",
    "battery_min_charge_c",
    "converter_derate_c",
    "converter_cutoff_c",
    "owner_reserve_soc",
)


class ConfigError(ValueError):
    """A refused change; `key` names the offending key (None for a malformed request)."""

    def __init__(self, key, message):
        super().__init__("%s: %s" % (key, message) if key else message)
        self.key = key


def allowed(key, bounds=None):
    """The allowed values of `key` as a technician would read them."""
    if key in INTEGERS:
        _, low, high, unit = INTEGERS[key]
        if bounds and key in bounds:
            low, high = bounds[key]
        return "%d..%d %s" % (low, high, unit)
    return "one of " + ", ".join(CHOICES[key][1])


def check_value(key, value, bounds=None):
    """Raise ConfigError unless `value` is valid for `key` on its own (within `bounds`)."""
    if key in INTEGERS:
        _, low, high, _ = INTEGERS[key]
        if bounds and key in bounds:
            low, high = bounds[key]
        if type(value) is not int:
            raise ConfigError(key, "must be an integer, " + allowed(key, bounds))
        if not low <= value <= high:
            raise ConfigError(key, "%r is out of range %s" % (value, allowed(key, bounds)))
    elif key in CHOICES:
        if value not in CHOICES[key][1]:
            raise ConfigError(key, "%r is not allowed, %s" % (value, allowed(key)))
    else:
        raise ConfigError(key, "unknown key")


def check_bounds(bounds):
    """Raise ConfigError unless the board file's `limits` narrow integer keys' ranges."""
    if not isinstance(bounds, dict):
        raise ConfigError("limits", "must be a map of config key to [low, high]")
    for key, pair in bounds.items():
        if key not in INTEGERS:
            raise ConfigError(key, "limits name integer config keys only")
        _, low, high, unit = INTEGERS[key]
        if type(pair) is not list or len(pair) != 2 or type(pair[0]) is not int \
                or type(pair[1]) is not int or not low <= pair[0] <= pair[1] <= high:
            raise ConfigError(key, "limits must be [low, high] within %d..%d %s" % (low, high,
                                                                                   unit))


def defaults(bounds=None):
    values = {key: spec[0] for key, spec in INTEGERS.items()}
    for key, spec in CHOICES.items():
        values[key] = spec[0]
    for key, pair in (bounds or {}).items():
        values[key] = min(max(values[key], pair[0]), pair[1])
    for owner, bound in _OWNER_BOUNDS:  # a pile maker's bound on the technician's moves the
        values[owner] = min(values[owner], values[bound])  # owner's default with it
    return values


class Config:
    """Validated values, also exposed as attributes (and `*_x10` scaled ones) for the tick."""

    def __init__(self, values=None, bounds=None):
        if bounds is not None:
            check_bounds(bounds)
        self.bounds = bounds
        self.values = defaults(bounds)
        self._check(self.values, self.values)
        self._apply()
        if values:
            self.update(values)

    def update(self, changes):
        """Apply `changes` (a dict) entirely or not at all."""
        if not isinstance(changes, dict):
            raise ConfigError(None, "a config change must be a map of key to value")
        for key, value in changes.items():
            check_value(key, value, self.bounds)
        merged = dict(self.values)
        merged.update(changes)
        self._check(merged, changes)
        self.values = merged
        self._apply()

    def _check(self, merged, changes):
        """Raise ConfigError unless `merged` keeps every rule between keys."""
        for low, high, rule in _ORDER:
            if merged[low] >= merged[high]:
                key = low if low in changes else high
                values = (rule, low, merged[low], high, merged[high])
                raise ConfigError(key, "%s (%s=%d, %s=%d)" % values)
        if not merged["min_soc"] <= merged["reserve_soc"] <= merged["max_soc"]:
            raise ConfigError("reserve_soc", "must lie between min_soc and max_soc")
        if merged["freq_nominal_hz"] not in (50, 60):
            raise ConfigError("freq_nominal_hz", "must be 50 or 60 Hz")
        if merged["meter_stale_s"] * 1000 < 2 * merged["meter_period_ms"]:
            raise ConfigError("meter_stale_s", "must cover at least two meter polls")
        for owner, bound in _OWNER_BOUNDS:
            if merged[owner] > merged[bound]:
                key = owner if owner in changes else bound
                text = "the owner's %s (%d) may not be above the technician's %s (%d)" % (
                    owner, merged[owner], bound, merged[bound])
                if key == bound:
                    text += ": set %s in the same change" % owner
                raise ConfigError(key, text)

    def _apply(self):
        for key, value in self.values.items():
            setattr(self, key, _small(value))
        for key in _X10:
            setattr(self, key + "_x10", getattr(self, key) * 10)  # small times small
        # the owner's budgets in Wh for the tick, NO_BUDGET at the top of their ranges
        day = self.budget_wh_day
        self.budget_day_wh = NO_BUDGET if day == INTEGERS["budget_wh_day"][2] else day
        pct = self.budget_cycles_week_pct
        self.budget_week_wh = NO_BUDGET if pct == INTEGERS["budget_cycles_week_pct"][2] else \
            _small(self.battery_capacity_wh // 100 * pct)  # below 2**30 on 32 bits


def _small(value):
    """`value`, an int made a small int. In a firmware frozen into a 32-bit port, literals
    above 8191 (the defaults 60000, 11000, 16384) are big-int objects, and arithmetic on
    one allocates in every decision; a parsed int is small whenever it fits."""
    return int(str(value)) if type(value) is int else value
