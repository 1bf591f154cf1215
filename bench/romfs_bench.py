"""Heap taken by importing the firmware: .mpy files on a filesystem, or a ROMFS image.

    python bench/romfs_bench.py      (or `make bench-romfs`)

From a filesystem, importing a .mpy copies its bytecode into the heap. From ROMFS
(MicroPython 1.25+, `mpremote romfs deploy`) bytecode runs in place, from flash on
a board. The unix port has no flash, so the image is read into a bytes object and
mounted with `vfs.VfsRom`: the figure "imports" is then what a board would spend,
while the image itself (on the heap here only) is reported apart.
"""

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from pilectl import MICROPYTHON, micropython_env
from pilectl.build import build

_MEASURE = """
import gc, sys, vfs, micropython
mode, image = sys.argv[1], sys.argv[2]
held = 0
if mode == 'romfs':
    with open(image, 'rb') as f:
        data = f.read()
    held = len(data)
    vfs.mount(vfs.VfsRom(data), '/rom')
    sys.path.insert(0, '/rom')
gc.collect()
before = gc.mem_alloc()
import pile.firmware
gc.collect()
print(gc.mem_alloc() - before, held)
"""


def measure(mode, directory, image):
    script = directory / "measure.py"
    script.write_text(_MEASURE)
    paths = [] if mode == "romfs" else [directory / "fs"]
    out = subprocess.run([str(MICROPYTHON), str(script), mode, str(image)], cwd=directory,
                         env=micropython_env(*paths), capture_output=True, text=True,
                         check=True).stdout.split()
    return int(out[0]), int(out[1])


def main():
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        build(directory / "fs")
        image = directory / "firmware.romfs"
        subprocess.run([str(Path(sys.executable).parent / "mpremote"), "romfs", "--no-mpy",
                        "-o", str(image), "build", str(directory / "fs")], check=True,
                       capture_output=True)
        fs, _ = measure("fs", directory, image)
        rom, held = measure("romfs", directory, image)
    print(f"importing pile.firmware from .mpy files: {fs} bytes of heap")
    print(f"importing it from a ROMFS image:         {rom} bytes of heap "
          f"(the {held}-byte image itself sits in flash on a board)")
    print(f"saved: {fs - rom} bytes ({100 * (fs - rom) / fs:.0f} %)")
    print(json.dumps({"fs_bytes": fs, "romfs_bytes": rom, "image_bytes": held}))


main()
