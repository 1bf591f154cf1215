"""Board files follow the contract of DESIGN section 3: one place for all wiring."""

import json

import pytest
from helpers import ROOT

BOARDS = sorted((ROOT / "boards").glob("*.json"))


def test_the_three_reference_boards_exist():
    assert {p.stem for p in BOARDS} >= {"unix_sim", "esp32_devkitc", "pico_w"}


@pytest.mark.parametrize("path", BOARDS, ids=lambda p: p.stem)
def test_board_file_is_complete(path):
    board = json.loads(path.read_text())
    assert board["board"] == path.stem
    assert isinstance(board["pile_id"], str) and board["pile_id"]
    bus = board["modbus"]
    assert bus["baud"] in (9600, 19200, 38400, 57600, 115200)
    assert 1 <= bus["converter_unit"] <= 247 and 1 <= bus["meter_unit"] <= 247
    if board["board"] == "unix_sim":
        assert bus["device"].startswith("/dev/")
    else:  # MCU boards name UART ids and pins; the HAL wires them (pile/hal/mcu.py)
        pins = [bus["tx"], bus["rx"], bus["de"], board["estop_pin"], board["contactor_pin"]]
        assert all(isinstance(pin, int) for pin in pins)
        assert len(set(pins + [board["link"]["tx"], board["link"]["rx"]])) == 7, "pin used twice"
        assert bus["uart"] != board["link"]["uart"]
        assert "ssid" in board.get("wifi", {"ssid": None})  # Wi-Fi may be absent (a Pico)
        assert "wifi" in board or "uart" in board["link"], "no link at all"
