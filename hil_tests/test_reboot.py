"""A reboot keeps the config, the key and the event log, and starts a new boot nonce."""

import pytest
from pile.events import EVENT_BOOT, EVENT_REBOOT_REQUESTED, RESET_REQUESTED


@pytest.mark.virtual_only("the board test reconnects over USB after its own reset")
async def test_reboot_keeps_config_and_key(pile):
    await pile.client.config_set({"min_soc": 33, "ramp_w_per_s": 4000})
    nonce = pile.client.nonce
    await pile.reboot_and_reconnect()
    assert pile.client.nonce != nonce
    assert await pile.client.config_get(["min_soc", "ramp_w_per_s"]) == {
        "min_soc": 33, "ramp_w_per_s": 4000}
    events = [e[2:] for e in await pile.events()]
    # the log survives the reboot: the request, then the boot it caused
    assert events[0][0] == EVENT_BOOT
    at = events.index([EVENT_REBOOT_REQUESTED, 0])
    assert events[at + 1] == [EVENT_BOOT, RESET_REQUESTED]
