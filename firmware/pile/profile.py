"""Register-map profiles: JSON data describing a converter or meter (DESIGN section 4).

A new device is a new file in `profiles/`, not new code. Fields are
[address, type, scale] with types u16, i16, u32, i32 (high word first) and f32
(IEEE-754, big-endian, high word first).
"""

import json
import struct

_WORDS = {"u16": 1, "i16": 1, "u32": 2, "i32": 2, "f32": 2}
_DIR = "profiles"


class ProfileError(ValueError):
    pass


def load(name, directory=_DIR):
    try:
        with open(directory + "/" + name + ".json") as f:
            profile = json.load(f)
    except OSError:
        raise ProfileError("no profile %r in %s/" % (name, directory))
    except ValueError as exc:
        raise ProfileError("profile %r is not valid JSON: %s" % (name, exc))
    for field in profile_fields(profile):
        if field[1] not in _WORDS:
            raise ProfileError("profile %r: unknown type %r" % (name, field[1]))
    return profile


def profile_fields(profile):
    fields = list(profile.get("fields", {}).values())
    fields += list(profile.get("nameplate", {}).get("fields", {}).values())
    if "power" in profile:
        fields.append(profile["power"])
    return fields


def words(kind):
    return _WORDS[kind]


def decode(data, offset, kind):
    """The value of type `kind` at byte `offset` of big-endian register data.

    Signed values are assembled from a signed high word, so power stays a small
    int on the 32-bit boards (no heap allocation per tick).
    """
    hi = data[offset] << 8 | data[offset + 1]
    if kind == "u16":
        return hi
    if hi & 0x8000 and kind != "u32" and kind != "f32":
        hi -= 0x10000
    if kind == "i16":
        return hi
    if kind == "f32":
        return struct.unpack(">f", bytes(data[offset:offset + 4]))[0]
    return hi << 16 | data[offset + 2] << 8 | data[offset + 3]


def encode(buf, offset, kind, value):
    """Write the integer `value` as `kind` into buf at byte `offset`, without big ints."""
    if _WORDS[kind] == 2:
        hi = value >> 16  # arithmetic shift: negative values keep their sign here
        buf[offset] = (hi >> 8) & 0xFF
        buf[offset + 1] = hi & 0xFF
        offset += 2
    buf[offset] = (value >> 8) & 0xFF
    buf[offset + 1] = value & 0xFF
