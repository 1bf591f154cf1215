"""The event log's copy on flash: a ring of two segment files of fixed 16-byte records.

A record is index u32, uptime s u32, code u16, value i32 and a CRC-16 of those 14
bytes, little-endian. Records are appended to the active segment; when it holds
`segment_records`, the other segment is emptied and becomes the active one, so the
ring keeps between one and two segments of the newest entries. Appends go to the end
of a file and each is committed when the file is closed (littlefs is copy-on-write),
so a power cut loses at most the records being written; a record cut short or damaged
fails its CRC and ends what is read of its segment.
"""

import struct

from micropython import const

from pile.crc import crc16

_RECORD = const(16)
_LAYOUT = "<IIHiH"
_CHUNK = const(8)  # records read at a time


class Journal:
    def __init__(self, directory, size_bytes):
        self._paths = (directory + "/events.0", directory + "/events.1")
        self.resize(size_bytes)
        self.writes = 0  # appends committed: flash wears, and the soak counts them
        self._record = bytearray(_RECORD)
        self.next_index = 0
        self._active = 0
        self._count = 0  # records in the active segment
        self._intact = True  # False: the active segment ends in a damaged record
        newest = -1
        for segment in (0, 1):
            count, last, intact = self._scan(segment)
            if count and last > newest:
                newest = last
                self._active, self._count, self._intact = segment, count, intact
        self.next_index = newest + 1

    def resize(self, size_bytes):
        """Keep about `size_bytes` of entries from now on (config key event_log_bytes)."""
        self.segment_records = max(1, size_bytes // (2 * _RECORD))

    def _scan(self, segment):
        """(good records, last index, whether the file ends cleanly) of one segment."""
        count, last = 0, -1
        for entry in self._records(segment):
            if entry is None:
                return count, last, False
            count += 1
            last = entry[0]
        return count, last, True

    def _records(self, segment, first=0):
        """Each good record of a segment with index >= first as [index, uptime, code,
        value], oldest first, then None if the segment ends in a damaged or cut-short
        record. The first one is found by a binary search over the sorted records, so an
        EVENTS page reads a few records, not the whole segment, between two ticks."""
        try:
            f = open(self._paths[segment], "rb")
        except OSError:
            return
        with f:
            if first:
                f.seek(_RECORD * _position(f, first))
            while True:
                chunk = f.read(_RECORD * _CHUNK)
                if not chunk:
                    return
                for at in range(0, len(chunk), _RECORD):
                    entry = _decode(chunk, at)
                    yield entry
                    if entry is None:
                        return

    def read(self, first, limit):
        """Up to `limit` entries with index >= first from flash, oldest first."""
        found = []
        for segment in (1 - self._active, self._active):
            for entry in self._records(segment, first):
                if entry is None or len(found) >= limit:
                    break
                found.append(entry)
        return found

    def append(self, entries):
        """Write `entries` ([index, uptime, code, value] each) at the end of the ring, one
        file commit per segment touched. Raises OSError when the flash does; what was
        committed before stays."""
        record = self._record
        start = 0
        while start < len(entries):
            switch = self._count >= self.segment_records or not self._intact
            segment = 1 - self._active if switch else self._active
            count = 0 if switch else self._count
            end = min(len(entries), start + self.segment_records - count)
            # "wb" empties the other segment: the oldest entries go
            with open(self._paths[segment], "wb" if switch else "ab") as f:
                for i in range(start, end):
                    index, uptime, code, value = entries[i]
                    struct.pack_into(_LAYOUT, record, 0, index, uptime, code, value, 0)
                    crc = crc16(record, 0, 14)
                    record[14] = crc & 0xFF
                    record[15] = crc >> 8
                    f.write(record)
            self._active, self._count, self._intact = segment, count + end - start, True
            self.writes += 1
            self.next_index = entries[end - 1][0] + 1
            start = end


def _decode(chunk, at):
    """The record at chunk[at:] as [index, uptime, code, value], or None when it is cut
    short or fails its CRC."""
    if len(chunk) - at < _RECORD or crc16(chunk, at, at + 14) != \
            chunk[at + 14] | chunk[at + 15] << 8:
        return None
    return list(struct.unpack_from(_LAYOUT, chunk, at)[:4])


def _position(f, first):
    """The position (in records) of the first record of open segment `f` with index >=
    first; a damaged record counts as past it, as it ends what is read."""
    low, high = 0, f.seek(0, 2) // _RECORD
    while low < high:
        middle = (low + high) // 2
        f.seek(_RECORD * middle)
        entry = _decode(f.read(_RECORD), 0)
        if entry is None or entry[0] >= first:
            high = middle
        else:
            low = middle + 1
    return low
