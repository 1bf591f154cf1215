"""A reconnect backoff: waits that double from `first_ms` up to `max_ms`, jittered.

After a failed attempt, wait `next_ms(random_byte)`; it doubles the wait after it. A
success calls `reset()`. `random_byte` (0..255, from os.urandom) takes up to half the
wait off, so each wait is drawn between half and all of it and piles that lost one
broker together do not all come back at once; 0 is the whole wait, no jitter.
"""


class Backoff:
    def __init__(self, first_ms, max_ms):
        self.first_ms = first_ms
        self.max_ms = max_ms
        self.wait_ms = first_ms  # the next wait, before jitter

    def next_ms(self, random_byte):
        """The wait after a failed attempt, in ms; the next one is twice as long, capped."""
        wait = self.wait_ms
        self.wait_ms = min(2 * wait, self.max_ms)
        return wait - wait * random_byte // 512

    def reset(self):
        """After a success: the next failure waits `first_ms` again."""
        self.wait_ms = self.first_ms
