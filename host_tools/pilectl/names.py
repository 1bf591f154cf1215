"""Human names for the firmware's states, reasons bits and events (DESIGN section 5)."""

from pile import surface as fw

STATES = {
    fw.STATE_BOOT: "boot",
    fw.STATE_IDLE: "idle",
    fw.STATE_CHARGING: "charging",
    fw.STATE_DISCHARGING: "discharging",
    fw.STATE_FAULT: "fault",
    fw.STATE_STOPPED: "stopped",
    fw.STATE_NO_EV: "no EV",
}

REASONS = (
    (fw.REASON_SOC_FLOOR, "SOC floor"),
    (fw.REASON_SOC_CEILING, "SOC ceiling"),
    (fw.REASON_DEPARTURE_RESERVE, "departure reserve"),
    (fw.REASON_BATTERY_HOT, "battery hot"),
    (fw.REASON_BATTERY_COLD, "battery cold"),
    (fw.REASON_CONVERTER_HOT, "converter hot"),
    (fw.REASON_SITE_IMPORT_CAP, "site import cap"),
    (fw.REASON_SITE_EXPORT_CAP, "site export cap"),
    (fw.REASON_METER_LOST, "meter lost"),
    (fw.REASON_EV_LIMIT, "EV limit"),
    (fw.REASON_CONVERTER_FAULT, "converter fault"),
    (fw.REASON_STOPPED, "stopped"),
    (fw.REASON_SETPOINT_EXPIRED, "setpoint expired"),
    (fw.REASON_RAMPING, "ramping"),
    (fw.REASON_NO_EV, "no EV"),
    (fw.REASON_FREQ_RESPONSE, "frequency response"),
    (fw.REASON_FREQ_INVALID, "frequency unusable"),
    (fw.REASON_V2G_BUDGET, "V2G budget"),
    (fw.REASON_SITE_SHARE, "site share"),
)


def reasons(bits):
    """Names of the reasons set in `bits`, in bit order."""
    return [name for bit, name in REASONS if bits & bit]


EVENTS = {
    fw.EVENT_BOOT: "boot",
    fw.EVENT_FAULT: "fault",
    fw.EVENT_FAULT_CLEARED: "fault cleared",
    fw.EVENT_STOP: "stop",
    fw.EVENT_RELEASE: "release",
    fw.EVENT_SETPOINT_EXPIRED: "setpoint expired",
    fw.EVENT_CONFIG_CHANGED: "config changed",
    fw.EVENT_METER_LOST: "meter lost",
    fw.EVENT_METER_BACK: "meter back",
    fw.EVENT_KEY_PROVISIONED: "key provisioned",
    fw.EVENT_REBOOT_REQUESTED: "reboot requested",
    fw.EVENT_EV_PLUGGED: "EV plugged in",
    fw.EVENT_EV_UNPLUGGED: "EV unplugged",
    fw.EVENT_FAULT_RESET_REQUESTED: "fault reset requested",
    fw.EVENT_STORE_DAMAGED: "settings file damaged",
    fw.EVENT_SESSION_ENDED: "session ended (setpoint and departure dropped)",
    fw.EVENT_CONFIG_KEY: "config key set",
    fw.EVENT_AUTH_FAILED: "requests refused as unauthenticated or replayed",
    fw.EVENT_LIMITS: "limits now",
    fw.EVENT_FLASH_ERROR: "event journal write failed",
    fw.EVENT_UPDATE: "field update",
    fw.EVENT_BUDGET: "V2G budget",
}
UPDATE_STEPS = {fw.UPDATE_ACCEPTED: "package accepted",
                fw.UPDATE_COMMITTED: "committed: trial next",
                fw.UPDATE_CONFIRMED: "trial confirmed", fw.UPDATE_ROLLED_BACK: "rolled back"}

RESET_CAUSES = {fw.RESET_POWER_ON: "power-on", fw.RESET_WATCHDOG: "watchdog",
                fw.RESET_REQUESTED: "requested reboot"}
_SLOTS = {0: "serial, unsigned", 1: "link key", 2: "technician key"}


def event_detail(code, value):
    """What an event's value means, in words ("" where the number says it all)."""
    if code == fw.EVENT_BOOT:
        return RESET_CAUSES.get(value, f"cause {value}")
    if code == fw.EVENT_CONFIG_KEY:
        number = value & 0xFF
        key = fw.KEY_NUMBERS[number - 1] if 0 < number <= len(fw.KEY_NUMBERS) else "?"
        return f"{key} by {_SLOTS.get(value >> 8, f'slot {value >> 8}')}"
    if code == fw.EVENT_LIMITS:
        return ", ".join(reasons(value)) or "none"
    if code == fw.EVENT_UPDATE:
        return UPDATE_STEPS.get(value, f"step {value}")
    if code == fw.EVENT_BUDGET:
        return budget_spent(value)
    return ""


def budget_spent(bits):
    """The V2G budget's SPENT_* bits in words (EVENT_BUDGET's value)."""
    spent = [name for bit, name in ((fw.BUDGET_SPENT_DAY, "the day's"),
                                    (fw.BUDGET_SPENT_WEEK, "the week's")) if bits & bit]
    return " and ".join(spent) + " spent" if spent else "open again"
