"""The reconnect backoff of the broker link and the Wi-Fi station (CPython and
MicroPython)."""

from pile.backoff import Backoff


def test_waits_double_to_the_cap_and_reset():
    backoff = Backoff(1000, 30000)
    assert [backoff.next_ms(0) for _ in range(7)] == [1000, 2000, 4000, 8000, 16000, 30000,
                                                     30000]
    backoff.reset()
    assert backoff.next_ms(0) == 1000


def test_the_random_byte_draws_each_wait_between_half_and_all_of_it():
    for byte in range(256):
        backoff = Backoff(1000, 30000)
        for full in (1000, 2000, 4000, 8000, 16000, 30000):
            wait = backoff.next_ms(byte)
            assert full // 2 < wait <= full, (byte, wait)
    backoff = Backoff(1000, 30000)
    assert backoff.next_ms(255) == 1000 - 1000 * 255 // 512 == 502
    assert backoff.next_ms(128) == 2000 - 500


def test_a_cap_below_the_first_wait_holds_from_the_second():
    backoff = Backoff(10, 5)
    assert [backoff.next_ms(0) for _ in range(3)] == [10, 5, 5]
