"""Settings that survive a reboot, written so that a power cut never loses them.

Each value is a file replaced atomically: write `name.tmp`, then rename over
`name`. The file is one header line, `#pile-store FORMAT CHECKSUM`, then the value as
JSON; the checksum (the first 8 bytes of the JSON's SHA-256, in hex) catches a file
damaged by the flash or a tool. A file that cannot be read (damaged, or of a newer
format) is moved aside to `name.bad` and reported, never trusted; the next save
writes a fresh file beside it. A headerless JSON file is read as format 0 (what
firmware before format 1 wrote) and saved as format 1 next time.
"""

import json
import os
from binascii import hexlify
from hashlib import sha256

from micropython import const

FORMAT = const(1)
_MAGIC = "#pile-store"


class Store:
    def __init__(self, directory):
        self.directory = directory
        self.writes = 0  # files written since boot: flash wears, and the soak counts them
        makedirs(directory)

    def path(self, name):
        return self.directory + "/" + name

    def load(self, name):
        """The saved value, None when never saved; raises ValueError if it cannot be read
        (the file is moved aside first)."""
        path = self.path(name)
        try:
            f = open(path)
        except OSError:
            return None
        try:
            with f:
                text = f.read()
            return _decode(text)
        except (ValueError, OSError) as exc:
            self.set_aside(name)
            raise ValueError("%s could not be read (%s); kept as %s.bad" % (name, exc, name))

    def set_aside(self, name):
        """Move a damaged `name` to `name.bad`, where a technician can look at it."""
        path = self.path(name)
        os.rename(path, path + ".bad")

    def save(self, name, value):
        path = self.path(name)
        text = json.dumps(value)
        with open(path + ".tmp", "w") as f:
            f.write("%s %d %s\n" % (_MAGIC, FORMAT, _checksum(text)))
            f.write(text)
        os.rename(path + ".tmp", path)
        self.writes += 1

    def remove(self, name):
        path = self.path(name)
        if exists(path):
            os.remove(path)
            self.writes += 1


def _checksum(text):
    return hexlify(sha256(text.encode()).digest()[:8]).decode()


def _decode(text):
    """The value in a file's text; ValueError says why it cannot be trusted."""
    if not text.startswith(_MAGIC):
        return json.loads(text)  # format 0: no header
    end = text.find("\n")
    fields = text[:end].split() if end > 0 else ()
    if len(fields) != 3:
        raise ValueError("its header is cut short")
    try:
        found = int(fields[1])
    except ValueError:
        raise ValueError("its header is damaged")
    if found != FORMAT:
        raise ValueError("format %s, this firmware reads format %d" % (fields[1], FORMAT))
    body = text[end + 1:]
    if _checksum(body) != fields[2]:
        raise ValueError("its checksum does not match")
    return json.loads(body)


def exists(path):
    """True when a file or folder is at `path` (shared with pile/update.py)."""
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def makedirs(path):
    """Make the folder `path` and those above it that are missing."""
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub and not exists(sub):
            os.mkdir(sub)
