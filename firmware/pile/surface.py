"""The firmware as host programs see it: the one firmware module a host module imports.

Every number and name a host tool takes from the firmware comes from here: protocol v1's
message types, error and command codes (which pilectl/wire.py, written independently
from DESIGN section 5, is held against by tests/test_wire_contract.py), the states,
reasons bits, events and reset causes, the config schema and its checks, the board-file
check, and the parts the pile emulator runs (the `Pile`, its protocol `Session` and the
control period). tests/test_host_surface.py fails when a module of host_tools/ or
hil_tests/ imports any other firmware module, or assigns into one. Host-only: never
deployed to a board (pilectl/build.py leaves it out).
"""

from pile import VERSION, admission, update
from pile.app import ACTION_REBOOT, KEY_LENGTHS, SLOT_TECHNICIAN, Pile
from pile.backoff import Backoff
from pile.board import BoardError
from pile.board import check as check_board
from pile.budget import SPENT_DAY as BUDGET_SPENT_DAY
from pile.budget import SPENT_WEEK as BUDGET_SPENT_WEEK
from pile.clock import ticks_add, ticks_diff, ticks_ms
from pile.config import (
    CHOICES,
    INTEGERS,
    KEY_NUMBERS,
    OWNER_KEYS,
    Config,
    ConfigError,
    allowed,
)
from pile.control import (
    MAX_DEPARTURE_S,
    MAX_TTL_S,
    STATE_BOOT,
    STATE_CHARGING,
    STATE_DISCHARGING,
    STATE_FAULT,
    STATE_IDLE,
    STATE_NO_EV,
    STATE_STOPPED,
)
from pile.events import (
    EVENT_AUTH_FAILED,
    EVENT_BOOT,
    EVENT_BUDGET,
    EVENT_CONFIG_CHANGED,
    EVENT_CONFIG_KEY,
    EVENT_EV_PLUGGED,
    EVENT_EV_UNPLUGGED,
    EVENT_FAULT,
    EVENT_FAULT_CLEARED,
    EVENT_FAULT_RESET_REQUESTED,
    EVENT_FLASH_ERROR,
    EVENT_KEY_PROVISIONED,
    EVENT_LIMITS,
    EVENT_METER_BACK,
    EVENT_METER_LOST,
    EVENT_REBOOT_REQUESTED,
    EVENT_RELEASE,
    EVENT_SESSION_ENDED,
    EVENT_SETPOINT_EXPIRED,
    EVENT_STOP,
    EVENT_STORE_DAMAGED,
    EVENT_UPDATE,
    RESET_POWER_ON,
    RESET_REQUESTED,
    RESET_WATCHDOG,
    UPDATE_ACCEPTED,
    UPDATE_COMMITTED,
    UPDATE_CONFIRMED,
    UPDATE_ROLLED_BACK,
)
from pile.limits import (
    MAX_POWER_W,
    REASON_BATTERY_COLD,
    REASON_BATTERY_HOT,
    REASON_CONVERTER_FAULT,
    REASON_CONVERTER_HOT,
    REASON_DEPARTURE_RESERVE,
    REASON_EV_LIMIT,
    REASON_FREQ_INVALID,
    REASON_FREQ_RESPONSE,
    REASON_METER_LOST,
    REASON_NO_EV,
    REASON_RAMPING,
    REASON_SETPOINT_EXPIRED,
    REASON_SITE_EXPORT_CAP,
    REASON_SITE_IMPORT_CAP,
    REASON_SITE_SHARE,
    REASON_SOC_CEILING,
    REASON_SOC_FLOOR,
    REASON_STOPPED,
    REASON_V2G_BUDGET,
)
from pile.loop import ControlStep
from pile.meter import NEVER
from pile.mqtt import (
    PUBLISH,
    SUBACK,
    MqttError,
    check_connack,
    check_suback,
    connect_packet,
    publish_packet,
    split_publish,
    subscribe_packet,
)
from pile.mqtt import split as split_packets
from pile.mqttlink import MAX_PACKET, OFFLINE, ONLINE, topics
from pile.protocol import (
    ACK,
    CMD_REBOOT,
    CMD_RELEASE,
    CMD_RESET_FAULT,
    CMD_STOP,
    COMMAND,
    CONFIG,
    CONFIG_GET,
    CONFIG_SET,
    DIAGNOSTICS,
    DIAGNOSTICS_GET,
    ERR_AUTH,
    ERR_BAD_FIELD,
    ERR_BUSY,
    ERR_MALFORMED,
    ERR_OUT_OF_RANGE,
    ERR_REPLAY,
    ERR_UNKNOWN_TYPE,
    ERROR,
    EVENTS,
    EVENTS_GET,
    HELLO,
    KEY,
    PROTOCOL_VERSION,
    SETPOINT,
    TECHNICIAN_KEY,
    TELEMETRY,
    UPDATE_CHUNK,
    UPDATE_COMMIT,
    UPDATE_GET,
    UPDATE_OFFER,
    UPDATE_STATUS,
    Session,
)
from pile.share import fill
from pile.signature import PUBLIC_KEY_BYTES as RELEASE_KEY_BYTES
from pile.signature import SCHEME as SIGNATURE_SCHEME
from pile.siteshare import SITE_ALLOWANCE, SITE_KEY, SITE_REPORT
from pile.telemetry import STATUS_EV_CONNECTED, STATUS_READY
from pile.update import ARCHES, Updater
from pile.update import BOOT_STAGE as BOOT_STAGE_VERSION

# a field update's states (UPDATE_STATUS field 2), named as pilectl.wire names them
UPDATE_IDLE, UPDATE_VERIFYING, UPDATE_RECEIVING = update.IDLE, update.VERIFYING, update.RECEIVING
UPDATE_CHECKING, UPDATE_REBOOTING = update.CHECKING, update.REBOOTING
UPDATE_REFUSED, UPDATE_TRIAL = update.REFUSED, update.TRIAL
