"""Every code the firmware can send has a name in the host tool."""

from pile import events, limits
from pilectl import names


def test_every_event_code_has_a_name():
    codes = {v for k, v in vars(events).items() if k.startswith("EVENT_")}
    assert codes and codes == set(names.EVENTS)
    assert len(set(names.EVENTS.values())) == len(names.EVENTS)
    steps = {v for k, v in vars(events).items() if k.startswith("UPDATE_")}
    assert steps and steps == set(names.UPDATE_STEPS)


def test_reasons_cover_every_bit_the_firmware_defines():
    defined = sorted(v for k, v in vars(limits).items() if k.startswith("REASON_"))
    assert [bit for bit, _ in names.REASONS] == defined == [1 << i for i in range(19)]
    assert names.reasons(0b101) == ["SOC floor", "departure reserve"]
