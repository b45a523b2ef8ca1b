"""The document root every server under test serves, generated into a temporary directory.

| name | what | used by |
| --- | --- | --- |
| ``/1k.bin`` | 1 KiB | ab at concurrency 1 … 200, the flood's fresh client |
| ``/small/fNNN.bin`` | ``small_count`` files of 4–32 KiB | testcase 1 (many small files) |
| ``/large/lN.bin`` | ``large_count`` files of ``large_size`` | testcase 2 (a few large files) |
| ``/100m.bin`` | 100 MiB | ab at concurrency 4 (large-file throughput) |

Contents are pseudo-random (seeded, so every run serves the same bytes) and the sizes of the
small files are drawn from a seeded generator too. Directories are 0755 and files 0644 so that
nginx's worker user (www-data) can read them.
"""

from __future__ import annotations

import os
import random
from dataclasses import dataclass, field
from pathlib import Path

KIB = 1024
MIB = 1024 * KIB

#: URL paths of the 1 KiB file and the 100 MiB file.
SMALL_1K = "/1k.bin"
HUGE = "/100m.bin"

#: Fixed seed: the same sizes and bytes on every run and every machine.
SEED = 20240521


@dataclass
class Site:
    """Where the files are and how big each is (URL path → size in bytes)."""

    root: Path
    small_1k: str
    many_small: dict[str, int] = field(default_factory=dict)
    few_large: dict[str, int] = field(default_factory=dict)
    huge: str = ""
    sizes: dict[str, int] = field(default_factory=dict)

    def size(self, url_path: str) -> int:
        return self.sizes[url_path]


def _write(root: Path, url_path: str, size: int, block: bytes, offset: int) -> None:
    """Writes @p size bytes taken cyclically from @p block starting at @p offset."""
    path = root / url_path.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o755)
    with open(path, "wb") as out:
        remaining = size
        start = offset % len(block)
        while remaining > 0:
            chunk = block[start:start + remaining]
            out.write(chunk)
            remaining -= len(chunk)
            start = 0
    os.chmod(path, 0o644)


def make_site(root: Path, small_count: int = 200, large_count: int = 4,
              large_size: int = 8 * MIB, huge_size: int = 100 * MIB) -> Site:
    """Creates the document root in @p root (which must not exist yet) and describes it."""
    rng = random.Random(SEED)
    block = rng.randbytes(MIB + 4093)  # odd length: files do not all start alike
    root.mkdir(mode=0o755)
    os.chmod(root, 0o755)
    site = Site(root=root, small_1k=SMALL_1K, huge=HUGE)

    def add(url_path: str, size: int, into: dict[str, int] | None = None) -> None:
        _write(root, url_path, size, block, rng.randrange(len(block)))
        site.sizes[url_path] = size
        if into is not None:
            into[url_path] = size

    add(site.small_1k, KIB)
    for i in range(small_count):
        add(f"/small/f{i:03d}.bin", rng.randint(4 * KIB, 32 * KIB), site.many_small)
    for i in range(large_count):
        add(f"/large/l{i}.bin", large_size, site.few_large)
    add(site.huge, huge_size)
    return site
