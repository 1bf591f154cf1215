"""Human names for the firmware's states and reasons bits (DESIGN section 5)."""

from pile import control, limits

STATES = {
    control.BOOT: "boot",
    control.IDLE: "idle",
    control.CHARGING: "charging",
    control.DISCHARGING: "discharging",
    control.FAULT: "fault",
    control.STOPPED: "stopped",
    control.NO_EV: "no EV",
}

REASONS = (
    (limits.SOC_FLOOR, "SOC floor"),
    (limits.SOC_CEILING, "SOC ceiling"),
    (limits.DEPARTURE_RESERVE, "departure reserve"),
    (limits.BATTERY_HOT, "battery hot"),
    (limits.BATTERY_COLD, "battery cold"),
    (limits.CONVERTER_HOT, "converter hot"),
    (limits.SITE_IMPORT_CAP, "site import cap"),
    (limits.SITE_EXPORT_CAP, "site export cap"),
    (limits.METER_LOST, "meter lost"),
    (limits.EV_LIMIT, "EV limit"),
    (limits.CONVERTER_FAULT, "converter fault"),
    (limits.STOPPED, "stopped"),
    (limits.SETPOINT_EXPIRED, "setpoint expired"),
    (limits.RAMPING, "ramping"),
    (limits.NO_EV, "no EV"),
)


def reasons(bits):
    """Names of the reasons set in `bits`, in bit order."""
    return [name for bit, name in REASONS if bits & bit]
