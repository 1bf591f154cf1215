"""Settings that survive a reboot, written so that a power cut never loses them.

Each value is a JSON file replaced atomically: write `name.tmp`, then rename
over `name`. A cut during the write leaves the old file whole; a file that
still cannot be read is moved aside to `name.bad` and reported, never trusted.
"""

import json
import os


class Store:
    def __init__(self, directory):
        self.directory = directory
        _makedirs(directory)

    def _path(self, name):
        return self.directory + "/" + name

    def load(self, name):
        """The saved value, None when never saved; raises ValueError if damaged (moved aside)."""
        path = self._path(name)
        try:
            f = open(path)
        except OSError:
            return None
        try:
            with f:
                return json.load(f)
        except ValueError:
            self.set_aside(name)
            raise ValueError("%s was damaged; kept as %s.bad" % (name, name))

    def set_aside(self, name):
        """Move a damaged `name` to `name.bad`, where a technician can look at it."""
        path = self._path(name)
        os.rename(path, path + ".bad")

    def save(self, name, value):
        path = self._path(name)
        with open(path + ".tmp", "w") as f:
            json.dump(value, f)  # written as it is encoded: no copy of the whole text
        os.rename(path + ".tmp", path)

    def remove(self, name):
        path = self._path(name)
        if _exists(path):
            os.remove(path)


def _exists(path):
    try:
        os.stat(path)
    except OSError:
        return False
    return True


def _makedirs(path):
    parts = path.split("/")
    for i in range(1, len(parts) + 1):
        sub = "/".join(parts[:i])
        if sub and not _exists(sub):
            os.mkdir(sub)
