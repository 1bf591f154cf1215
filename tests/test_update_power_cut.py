"""A power cut at every flash write of a field update, on littlefs: the pile boots the old
or the new firmware every time, and the update resumes (tests/mp/update_cut.py, on the
MicroPython unix port's `vfs.VfsLfs2`, with a package signed by a real release key)."""

import hashlib
import re

from helpers import FIRMWARE, ROOT
from pilectl import deploy, release


def test_every_cut_point_of_an_update_boots_the_old_or_the_new_firmware(micropython, tmp_path):
    key_file = tmp_path / "release.pem"
    public = release.keygen(key_file)
    noise = b"".join(hashlib.sha256(b"%d" % i).digest() for i in range(320))  # 3 blocks: noise
    files = {"pile/__init__.mpy": b"new init " * 50, "pile/app.mpy": noise[:1500],
             "pile/update.mpy": noise[1500:] + bytes(range(256)) * 6,
             "profiles/generic-v2g.json": b"{}"}
    major, minor = deploy.local_mpy_version()
    package = release.make(files, "2.0.0", None, major | minor << 8,
                           release.load_private(key_file))
    package.save(tmp_path / "new.pkg")
    result = micropython(ROOT / "tests" / "mp" / "update_cut.py", str(tmp_path / "new.pkg"),
                         public, paths=(FIRMWARE, ROOT / "tests" / "mp"), timeout=900)
    last = result.stdout.splitlines()[-1] if result.stdout else ""
    found = re.fullmatch(r"(\d+) cut points, (\d+) failures", last)
    assert found, result.stdout[-3000:] + result.stderr[-3000:]
    print(last)  # the number of cut points, in the test's output (pytest -s, or -rP)
    assert int(found[1]) >= 100 and int(found[2]) == 0, result.stdout[-3000:]
    assert result.returncode == 0, result.stderr
