"""The reference's files: which they are (git's view of the checkout), read and parsed."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from .markers import MarkerError, Parsed, parse, syntax_for


#: Skipped when the source is not a git checkout (with git, .gitignore decides).
WALK_SKIP = re.compile(r"^(\.git|build[^/]*|grade-results|__pycache__|\.pytest_cache)$")


@dataclass
class Source:
    """One file of the reference."""

    rel: str
    data: bytes  #: contents; for a symbolic link, its target
    mode: int
    symlink: bool = False
    text: str | None = None  #: decoded, for a UTF-8 file
    parsed: Parsed | None = None  #: for a text file of a known comment syntax


def list_files(source: Path) -> list[str]:
    """Relative paths of the reference's files: git's tracked and untracked-but-not-ignored
    files in a checkout (what a commit would hold, uncommitted edits included), else a walk."""
    if (source / ".git").exists() and shutil.which("git"):
        run = subprocess.run(
            ["git", "-C", str(source), "ls-files", "-z", "--cached", "--others",
             "--exclude-standard"], capture_output=True, check=True)
        names = sorted({name for name in run.stdout.decode("utf-8").split("\0") if name})
        return [n for n in names if (source / n).is_file() or (source / n).is_symlink()]
    found = []
    for root, dirs, files in os.walk(source):
        dirs[:] = sorted(d for d in dirs if not WALK_SKIP.match(d))
        for name in files:
            found.append((Path(root) / name).relative_to(source).as_posix())
    return sorted(found)


def load(source: Path) -> tuple[dict[str, Source], list[MarkerError]]:
    """Reads and parses every file of the reference; returns them and all marker errors."""
    files: dict[str, Source] = {}
    errors: list[MarkerError] = []
    for rel in list_files(source):
        path = source / rel
        if path.is_symlink():
            files[rel] = Source(rel, os.readlink(path).encode(), 0o777, symlink=True)
            continue
        data = path.read_bytes()
        item = Source(rel, data, path.stat().st_mode & 0o777)
        files[rel] = item
        try:
            item.text = data.decode("utf-8")
        except UnicodeDecodeError:
            continue
        syntax = syntax_for(rel, item.text)
        if syntax is None:
            for number, line in enumerate(item.text.split("\n"), 1):
                if re.search(r"\b(BEGIN|END) SOLUTION\b", line):
                    errors.append(MarkerError(rel, number, (
                        "solution marker in a file whose comment syntax is not known "
                        "(add its suffix to SUFFIXES in harness/handout/markers.py)")))
            continue
        item.parsed, found = parse(rel, item.text, syntax)
        errors += found
    return files, errors


def reference_version(source: Path) -> str:
    """The reference's commit, e.g. ``e67ede3`` or ``e67ede3 with uncommitted changes``."""
    if not (source / ".git").exists() or not shutil.which("git"):
        return "a copy outside git"
    head = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"],
                          capture_output=True, text=True)
    if head.returncode != 0:
        return "a repository without commits"
    dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain"],
                           capture_output=True, text=True).stdout.strip()
    return head.stdout.strip() + (" with uncommitted changes" if dirty else "")
