"""The converter's latest readings, in the units of the register map (DESIGN section 4).

One instance lives for the whole run and is updated in place, so reading the converter
allocates nothing. Power values are W, `soc` is permille (0.1 %), temperatures
are 0.1 degC; `ev_max_*` are already scaled from 10 W registers to W.
"""

from micropython import const

# status bits (register 0)
STATUS_READY = const(1 << 0)
STATUS_RUNNING = const(1 << 1)
STATUS_FAULT = const(1 << 2)
STATUS_DERATING = const(1 << 3)
STATUS_EV_CONNECTED = const(1 << 4)
STATUS_CONTACTOR = const(1 << 5)
STATUS_INSULATION_FAULT = const(1 << 6)
STATUS_ANY_FAULT = const(STATUS_FAULT | STATUS_INSULATION_FAULT)


class Telemetry:
    def __init__(self):
        self.status = 0
        self.fault_code = 0
        self.power = 0
        self.dc_voltage = 0
        self.dc_current = 0
        self.soc = 0
        self.battery_temp = 0
        self.converter_temp = 0
        self.ev_max_charge = 0
        self.ev_max_discharge = 0
        self.grid_freq = 0
        self.grid_voltage = 0
        self.heartbeat_echo = 0
        self.energy_in = 0
        self.energy_out = 0
        self.rated_charge = 0
        self.rated_discharge = 0
