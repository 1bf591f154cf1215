"""Human names for the firmware's states, reasons bits and events (DESIGN section 5)."""

from pile import control, events, limits

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


EVENTS = {
    events.BOOT: "boot",
    events.FAULT: "fault",
    events.FAULT_CLEARED: "fault cleared",
    events.STOP: "stop",
    events.RELEASE: "release",
    events.SETPOINT_EXPIRED: "setpoint expired",
    events.CONFIG_CHANGED: "config changed",
    events.METER_LOST: "meter lost",
    events.METER_BACK: "meter back",
    events.KEY_PROVISIONED: "key provisioned",
    events.REBOOT_REQUESTED: "reboot requested",
    events.EV_PLUGGED: "EV plugged in",
    events.EV_UNPLUGGED: "EV unplugged",
    events.FAULT_RESET_REQUESTED: "fault reset requested",
    events.STORE_DAMAGED: "settings file damaged",
}
