"""Entering a board's raw REPL when the board misses the first request: a firmware still
importing at start-up can swallow the Ctrl-C and Ctrl-A (an emulated Pico did, now and
then, right after a deploy restarted it). The board here is a stand-in on a real pty:
the miss cannot be produced at will on a real MicroPython, so the stand-in answers the
raw-REPL request only from its `answer_at`-th Ctrl-A on."""

import os
import threading

import pytest
from pilectl import deploy

_PROMPT = b"raw REPL; CTRL-B to exit\r\n>"


class MissingBoard:
    def __init__(self, answer_at):
        self.master, slave = os.openpty()
        self.port = os.ttyname(slave)
        self.requests = 0
        self.answer_at = answer_at
        self._stop = False
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        while not self._stop:
            try:
                data = os.read(self.master, 64)
            except OSError:
                return
            for _ in range(data.count(b"\x01")):
                self.requests += 1
                os.write(self.master, _PROMPT if self.requests >= self.answer_at
                         else b"pile pile-001 firmware 0.1.0 running\r\n")

    def close(self):
        self._stop = True
        os.close(self.master)


@pytest.fixture
def quick(monkeypatch):
    monkeypatch.setattr(deploy, "_ENTER_S", 0.5, raising=False)


def test_a_board_that_misses_the_first_request_is_asked_again(quick, capsys):
    board = MissingBoard(answer_at=2)
    try:
        repl = deploy.RawRepl(board.port)
        assert repl.transport.in_raw_repl and board.requests == 2
        repl.transport.close()
    finally:
        board.close()
    assert capsys.readouterr().out == ""  # mpremote's dump of what it saw stays quiet


def test_a_board_that_never_answers_gets_a_sentence_after_three_requests(quick):
    board = MissingBoard(answer_at=99)
    try:
        with pytest.raises(deploy.DeployError, match="no MicroPython REPL answers on"):
            deploy.RawRepl(board.port)
        assert board.requests == deploy._ENTER_ATTEMPTS
    finally:
        board.close()
