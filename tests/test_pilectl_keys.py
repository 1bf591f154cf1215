"""provision-key keeps a key the pile may have taken, and drops one it refused.

The pile is a stand-in here: a reply lost just after the firmware took the key cannot
be produced on demand with the real link; the refusal and the saved key's mode are
covered against the real firmware in test_pilectl_field.py.
"""

import asyncio

import pytest
from pilectl import keys
from pilectl.client import LinkError, PileError
from pilectl.field import FieldError, Target, provision_key


class Pile:
    def __init__(self, failure):
        self.hello = {2: "field-009"}
        self.failure = failure

    async def provision_key(self, key, technician=False):
        raise self.failure


def provision(failure):
    return asyncio.run(provision_key(Pile(failure), Target(port="/dev/null")))


def test_a_key_sent_without_an_answer_is_kept(tmp_path, monkeypatch):
    monkeypatch.setenv("PILECTL_HOME", str(tmp_path))
    with pytest.raises(FieldError, match="may have the new key") as raised:
        provision(LinkError("no reply from the pile within 5 s"))
    pending = keys.path_for("field-009").with_name("field-009.key.pending")
    assert f"--key-file {pending}" in str(raised.value)
    assert len(keys.read(pending)) == keys.KEY_BYTES
    assert not keys.path_for("field-009").exists()  # not promoted: the pile never confirmed


def test_a_refused_key_is_dropped(tmp_path, monkeypatch):
    monkeypatch.setenv("PILECTL_HOME", str(tmp_path))
    with pytest.raises(PileError):
        provision(PileError(4, "refused"))
    assert list((tmp_path / "keys").iterdir()) == []
