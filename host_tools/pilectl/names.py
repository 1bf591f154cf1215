"""Human names for the firmware's states, reasons bits and events (DESIGN section 5)."""

from pile import config, control, events, limits

STATES = {
    control.STATE_BOOT: "boot",
    control.STATE_IDLE: "idle",
    control.STATE_CHARGING: "charging",
    control.STATE_DISCHARGING: "discharging",
    control.STATE_FAULT: "fault",
    control.STATE_STOPPED: "stopped",
    control.STATE_NO_EV: "no EV",
}

REASONS = (
    (limits.REASON_SOC_FLOOR, "SOC floor"),
    (limits.REASON_SOC_CEILING, "SOC ceiling"),
    (limits.REASON_DEPARTURE_RESERVE, "departure reserve"),
    (limits.REASON_BATTERY_HOT, "battery hot"),
    (limits.REASON_BATTERY_COLD, "battery cold"),
    (limits.REASON_CONVERTER_HOT, "converter hot"),
    (limits.REASON_SITE_IMPORT_CAP, "site import cap"),
    (limits.REASON_SITE_EXPORT_CAP, "site export cap"),
    (limits.REASON_METER_LOST, "meter lost"),
    (limits.REASON_EV_LIMIT, "EV limit"),
    (limits.REASON_CONVERTER_FAULT, "converter fault"),
    (limits.REASON_STOPPED, "stopped"),
    (limits.REASON_SETPOINT_EXPIRED, "setpoint expired"),
    (limits.REASON_RAMPING, "ramping"),
    (limits.REASON_NO_EV, "no EV"),
    (limits.REASON_FREQ_RESPONSE, "frequency response"),
    (limits.REASON_FREQ_INVALID, "frequency unusable"),
)


def reasons(bits):
    """Names of the reasons set in `bits`, in bit order."""
    return [name for bit, name in REASONS if bits & bit]


EVENTS = {
    events.EVENT_BOOT: "boot",
    events.EVENT_FAULT: "fault",
    events.EVENT_FAULT_CLEARED: "fault cleared",
    events.EVENT_STOP: "stop",
    events.EVENT_RELEASE: "release",
    events.EVENT_SETPOINT_EXPIRED: "setpoint expired",
    events.EVENT_CONFIG_CHANGED: "config changed",
    events.EVENT_METER_LOST: "meter lost",
    events.EVENT_METER_BACK: "meter back",
    events.EVENT_KEY_PROVISIONED: "key provisioned",
    events.EVENT_REBOOT_REQUESTED: "reboot requested",
    events.EVENT_EV_PLUGGED: "EV plugged in",
    events.EVENT_EV_UNPLUGGED: "EV unplugged",
    events.EVENT_FAULT_RESET_REQUESTED: "fault reset requested",
    events.EVENT_STORE_DAMAGED: "settings file damaged",
    events.EVENT_SESSION_ENDED: "session ended (setpoint and departure dropped)",
    events.EVENT_CONFIG_KEY: "config key set",
    events.EVENT_AUTH_FAILED: "requests refused as unauthenticated or replayed",
    events.EVENT_LIMITS: "limits now",
    events.EVENT_FLASH_ERROR: "event journal write failed",
}

RESET_CAUSES = {events.RESET_POWER_ON: "power-on", events.RESET_WATCHDOG: "watchdog",
                events.RESET_REQUESTED: "requested reboot"}
_SLOTS = {0: "serial, unsigned", 1: "link key", 2: "technician key"}


def event_detail(code, value):
    """What an event's value means, in words ("" where the number says it all)."""
    if code == events.EVENT_BOOT:
        return RESET_CAUSES.get(value, f"cause {value}")
    if code == events.EVENT_CONFIG_KEY:
        number = value & 0xFF
        key = config.KEY_NUMBERS[number - 1] if 0 < number <= len(config.KEY_NUMBERS) else "?"
        return f"{key} by {_SLOTS.get(value >> 8, f'slot {value >> 8}')}"
    if code == events.EVENT_LIMITS:
        return ", ".join(reasons(value)) or "none"
    return ""
