"""The technician's keys, one file per pile id and role, readable by the owner only.

`provision-key` writes a new random key here and never shows it; every other
command finds the keys of the pile it talks to by the pile id in its HELLO:
`PILE_ID.key` the link key (the aggregator's too), `PILE_ID.technician.key` the
technician's. The directory is $PILECTL_HOME/keys (default ~/.config/pilectl/keys).
"""

import os
import re
import secrets
from pathlib import Path

KEY_BYTES = 32
_SAFE_ID = re.compile(r"[^A-Za-z0-9._-]")


class KeyFileError(ValueError):
    pass


def home():
    return Path(os.environ.get("PILECTL_HOME") or Path.home() / ".config" / "pilectl")


def path_for(pile_id, technician=False):
    name = _SAFE_ID.sub("_", str(pile_id)) + (".technician.key" if technician else ".key")
    return home() / "keys" / name


def read(path):
    """The key in a key file (hex, as written by `save`)."""
    path = Path(path)
    try:
        key = bytes.fromhex(path.read_text().strip())
    except FileNotFoundError:
        raise KeyFileError(f"no key file {path}") from None
    except ValueError:
        raise KeyFileError(f"{path} is not a key file (expected hex)") from None
    if len(key) not in (16, 24, 32):
        raise KeyFileError(f"{path} holds {len(key)} bytes; a link key is 16, 24 or 32")
    return key


def lookup(pile_id):
    """The saved (link key, technician's key) of `pile_id`, each None when there is none."""
    paths = (path_for(pile_id), path_for(pile_id, technician=True))
    return tuple(read(path) if path.exists() else None for path in paths)


def new_key():
    return secrets.token_bytes(KEY_BYTES)


def save(key, path):
    """Write `key` to `path` (mode 0600) before it is sent, so a key the pile took is
    never lost with the tool; `promote` moves it into place once the pile has it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key.hex() + "\n")
    return path


def promote(pending, path):
    """`pending` becomes the key file at `path`; the key it replaces is kept as .old."""
    path = Path(path)
    if path.exists():
        os.replace(path, path.with_suffix(".old"))
    os.replace(pending, path)
    return path
