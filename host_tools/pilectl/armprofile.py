"""Program-counter samples from the emulated Pico, named by the firmware's symbols, and
the callers of a C function from samples taken with return addresses.

The official builds ship an `.elf` beside the `.uf2`; Debian's binutils-arm-none-eabi
lists its functions (`arm-none-eabi-nm`). A sample falls in the function whose start is
the nearest at or below it (and within its size, where the symbol has one).
"""

import bisect
import shutil
import subprocess
from collections import Counter

NM = "arm-none-eabi-nm"


class Symbols:
    def __init__(self, elf):
        if shutil.which(NM) is None:
            raise RuntimeError(f"{NM} is not installed: apt-get install binutils-arm-none-eabi")
        out = subprocess.run([NM, "-n", "-S", "--defined-only", str(elf)], check=True,
                             capture_output=True, text=True).stdout
        self.starts, self.entries = [], []
        for line in out.splitlines():
            parts = line.split()
            if len(parts) == 3 and parts[1] in "tTwW":  # no size
                parts = [parts[0], "0", *parts[1:]]
            if len(parts) == 4 and parts[2] in "tTwW":
                start, size = int(parts[0], 16), int(parts[1], 16)
                self.starts.append(start & ~1)
                self.entries.append((start & ~1, size, parts[3]))

    def name(self, pc):
        i = bisect.bisect_right(self.starts, pc) - 1
        if i >= 0:
            start, size, name = self.entries[i]
            if pc < start + size or size == 0:  # hand-written assembly has no size
                return name
        return "rom" if pc < 0x4000 else f"?{pc:#x}"


def by_function(samples, elf):
    """[(function, share of samples)], the largest first."""
    symbols = Symbols(elf)
    counts = Counter()
    for pc, n in samples.items():
        counts[symbols.name(pc)] += n
    total = sum(counts.values()) or 1
    return [(name, n / total) for name, n in counts.most_common()]


def callers(samples, elf, function, most=8):
    """[(call chain, share of `function`'s samples)] for samples taken with callers
    (`Pico.profile(..., callers=K)`): who called the C function, named, the most first.
    Return addresses are read off the stack without frame pointers, so a chain now and
    then holds a stale word; the common chains are the real ones."""
    symbols = Symbols(elf)
    chains = Counter()
    for (pc, *above), n in samples.items():
        if symbols.name(pc) == function:
            chains[" < ".join(symbols.name(a) for a in above)] += n
    total = sum(chains.values()) or 1
    return [(chain, n / total) for chain, n in chains.most_common(most)]
