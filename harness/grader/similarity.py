"""Ranks pairs of student submissions by the code they share, the handout's own code excluded.

    ./lab similarity SUBMISSIONS [--handout DIR]... [--top N] [--show N] [--min-run TOKENS]

SUBMISSIONS holds one folder per student with C++ (*.cpp, *.hpp, ...) and/or Python (*.py)
sources. The comparison is done by Debian's similarity-tester (Dick Grune's `sim`), which
compares token streams, so renamed variables, moved whitespace and rewritten comments do not
hide a copy: `sim_c++` for C++ and, as sim has no Python front end, `sim_c` for Python (its
lexer splits Python into the same identifiers, numbers, strings and operators).

1. The starter code every student got must not count: every source file of the handouts (by
   default both tracks, cut from this kit with harness/handout; or --handout DIR) is given to
   sim as an "old" file, and each run of a submission that matches it (sim -S) is blanked out
   of that submission before the submissions are compared (line numbers kept).
2. Each language's submissions, one file each (its sources joined), are compared pairwise
   (sim -e -s); a pair's share is the tokens in its common runs over each side's tokens left.
3. The table ranks pairs by the larger of the two shares; for the top pairs each shared run is
   shown as file:lines on both sides (mapped back to the student's own files).

Standard library only (Python 3.8+) plus the `similarity-tester` package. Exit status: 0, or
2 for bad input (no such folder, fewer than two submissions with sources, sim missing).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

KIT_DIR = Path(__file__).resolve().parents[2]
#: File suffixes per language, and the sim front end that reads them.
LANGUAGES = {
    "cpp": ((".cpp", ".cc", ".cxx", ".hpp", ".hh", ".h"), "sim_c++"),
    "py": ((".py",), "sim_c"),
}
#: Folders that hold no one's own code: build output, version control, caches.
SKIPPED_DIRS = {".git", "__pycache__", ".venv", "venv", "node_modules"}
#: A file larger than this is data or generated code, not a student's source.
MAX_FILE_BYTES = 512 * 1024
#: sim's default minimum run for C is 24 tokens; a little lower catches short copied functions.
DEFAULT_MIN_RUN = 20
#: Fragments listed per pair, longest first.
MAX_FRAGMENTS = 12

RUN_RE = re.compile(r"^(\S+): line (\d+)-(\d+)\s*\|(\S+): line (\d+)-(\d+)\s*\[(\d+)\]\s*$")
FILE_RE = re.compile(r"^File (\S+): (\d+) tokens, (\d+) lines")


class InputError(Exception):
    """Bad input: reported as a one-line message, exit status 2."""


@dataclass
class Joined:
    """One submission's sources of one language joined into one file for sim."""
    name: str
    path: Path
    #: (first line in the joined file, source path relative to the submission, line count)
    parts: List[Tuple[int, str, int]] = field(default_factory=list)
    tokens: int = 0

    def locate(self, first: int, last: int) -> List[str]:
        """Lines first..last of the joined file as "file:a-b" of the student's own files."""
        where = []
        for start, rel, count in self.parts:
            lo, hi = max(first, start), min(last, start + count - 1)
            if lo <= hi:
                where.append(f"{rel}:{lo - start + 1}-{hi - start + 1}")
        return where


@dataclass
class Run:
    """A run of tokens sim found in two submissions."""
    a_lines: Tuple[int, int]
    b_lines: Tuple[int, int]
    tokens: int


def sources(folder: Path, suffixes: Tuple[str, ...]) -> List[Path]:
    """The source files of @p folder with @p suffixes, sorted; no symlinks, build trees or caches."""
    found = []
    for path in sorted(folder.rglob("*")):
        rel = path.relative_to(folder).parts
        if any(part in SKIPPED_DIRS or part.startswith("build") for part in rel[:-1]):
            continue
        if path.suffix in suffixes and path.is_file() and not path.is_symlink() \
                and path.stat().st_size <= MAX_FILE_BYTES:
            found.append(path)
    return found


def join(folder: Path, files: List[Path], out: Path) -> Joined:
    """Writes @p files one after the other to @p out and records where each starts."""
    joined = Joined(folder.name, out)
    lines: List[str] = []
    for path in files:
        text = path.read_bytes().decode("utf-8", errors="replace").splitlines()
        joined.parts.append((len(lines) + 1, path.relative_to(folder).as_posix(), len(text)))
        lines.extend(text)
    out.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return joined


def run_sim(tool: str, args: List[str], cwd: Path) -> str:
    """sim's output for @p args (file names relative to @p cwd)."""
    proc = subprocess.run([tool, "-w", "300", *args], cwd=cwd, capture_output=True, text=True,
                          errors="replace", timeout=600)
    if proc.returncode != 0:
        raise InputError(f"{tool} failed ({proc.returncode}): {proc.stderr.strip()[:400]}")
    return proc.stdout


def blank_handout_code(tool: str, min_run: int, work: Path, joined: List[Joined],
                       handout: List[Path]) -> int:
    """Blanks every run of the submissions that sim finds in the handout; returns the lines."""
    if not handout:
        return 0
    old = []
    for index, path in enumerate(handout):
        copy = work / f"h{index:04d}{path.suffix}"
        shutil.copyfile(path, copy)
        old.append(copy.name)
    output = run_sim(tool, ["-S", "-n", f"-r{min_run}",
                            *[j.path.name for j in joined], "/", *old], work)
    blank: Dict[str, set] = {j.path.name: set() for j in joined}
    for line in output.splitlines():
        match = RUN_RE.match(line)
        if match and match[1] in blank:
            blank[match[1]].update(range(int(match[2]), int(match[3]) + 1))
    total = 0
    for j in joined:
        lines = j.path.read_text(encoding="utf-8").split("\n")
        for number in blank[j.path.name]:
            if number <= len(lines):
                lines[number - 1] = ""
        j.path.write_text("\n".join(lines), encoding="utf-8")
        total += len(blank[j.path.name])
    return total


def compare(tool: str, min_run: int, work: Path, joined: List[Joined]) -> Dict[Tuple[str, str], List[Run]]:
    """The runs sim finds between each pair of @p joined (keyed by submission names, sorted)."""
    by_file = {j.path.name: j for j in joined}
    output = run_sim(tool, ["-e", "-s", "-n", f"-r{min_run}", *by_file], work)
    runs: Dict[Tuple[str, str], List[Run]] = {}
    for line in output.splitlines():
        header = FILE_RE.match(line)
        if header and header[1] in by_file:
            by_file[header[1]].tokens = int(header[2])
        match = RUN_RE.match(line)
        if not match or match[1] not in by_file or match[4] not in by_file:
            continue
        a, b = by_file[match[1]], by_file[match[4]]
        run = Run((int(match[2]), int(match[3])), (int(match[5]), int(match[6])), int(match[7]))
        if a.name > b.name:
            a, b = b, a
            run = Run(run.b_lines, run.a_lines, run.tokens)
        runs.setdefault((a.name, b.name), []).append(run)
    return runs


@dataclass
class Pair:
    """What two submissions share, over every language they both use."""
    a: str
    b: str
    shared_tokens: int = 0
    a_tokens: int = 0
    b_tokens: int = 0
    a_lines: int = 0
    b_lines: int = 0
    fragments: List[Tuple[List[str], List[str], int]] = field(default_factory=list)

    def share(self, tokens: int) -> float:
        return 100.0 * self.shared_tokens / tokens if tokens else 0.0

    def rank_key(self) -> Tuple[float, int]:
        return (max(self.share(self.a_tokens), self.share(self.b_tokens)), self.shared_tokens)


def covered(ranges: List[Tuple[int, int]]) -> int:
    """How many distinct lines @p ranges cover."""
    return len({n for first, last in ranges for n in range(first, last + 1)})


def similarity(submissions: List[Path], handout: List[Path], min_run: int) -> Tuple[List[Pair], int]:
    """Every pair of @p submissions that shares code, most similar first; and the lines blanked."""
    pairs: Dict[Tuple[str, str], Pair] = {}
    tokens: Dict[str, Dict[str, int]] = {}  # submission -> language -> tokens left
    blanked = 0
    with tempfile.TemporaryDirectory(prefix="lab-similarity-") as tmp:
        for lang, (suffixes, tool) in LANGUAGES.items():
            work = Path(tmp) / lang
            work.mkdir()
            joined = []
            for index, folder in enumerate(submissions):
                files = sources(folder, suffixes)
                if files:
                    joined.append(join(folder, files, work / f"s{index:04d}{suffixes[0]}"))
            if len(joined) < 2:
                continue
            old = [p for h in handout for p in sources(h, suffixes)]
            blanked += blank_handout_code(tool, min_run, work, joined, old)
            by_name = {j.name: j for j in joined}
            runs = compare(tool, min_run, work, joined)
            for (a, b), found in runs.items():
                pair = pairs.setdefault((a, b), Pair(a, b))
                pair.shared_tokens += sum(r.tokens for r in found)
                pair.a_lines += covered([r.a_lines for r in found])
                pair.b_lines += covered([r.b_lines for r in found])
                for r in sorted(found, key=lambda r: -r.tokens):
                    pair.fragments.append((by_name[a].locate(*r.a_lines),
                                           by_name[b].locate(*r.b_lines), r.tokens))
            for j in joined:
                tokens.setdefault(j.name, {})[lang] = j.tokens
    # A pair's shares are over the tokens of every language both sides wrote.
    for pair in pairs.values():
        common = set(tokens[pair.a]) & set(tokens[pair.b])
        pair.a_tokens = sum(tokens[pair.a][lang] for lang in common)
        pair.b_tokens = sum(tokens[pair.b][lang] for lang in common)
    ranked = sorted(pairs.values(), key=lambda p: (-p.rank_key()[0], -p.rank_key()[1], p.a, p.b))
    return ranked, blanked


def cut_handouts(into: Path) -> List[Path]:
    """Both tracks' student handouts, cut from this kit by harness/handout."""
    if sys.version_info < (3, 11):
        raise InputError("cutting the handouts needs Python 3.11+ (harness/handout reads the "
                         "rubric with tomllib): run ./lab similarity, or pass --handout DIR")
    trees = []
    for lang in ("cpp", "python"):
        tree = into / f"handout-{lang}"
        proc = subprocess.run([sys.executable, str(KIT_DIR / "harness" / "handout"), "--no-git",
                               "--lang", lang, str(tree)], capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise InputError(f"could not cut the {lang} handout (or pass --handout DIR): "
                             f"{proc.stderr.strip()[-400:]}")
        trees.append(tree)
    return trees


def report(ranked: List[Pair], top: int, show: int, handout: List[Path], blanked: int) -> str:
    """The ranked table, then the shared fragments of the first @p show pairs."""
    out = []
    if handout:
        out.append(f"handout code excluded: {blanked} line(s) of submissions matched "
                   f"{', '.join(str(h) for h in handout)}")
    else:
        out.append("handout code NOT excluded (--no-handout)")
    if not ranked:
        out.append("no pair of submissions shares a run of code (--min-run tokens or more)")
        return "\n".join(out) + "\n"
    width = max(len(p.a) + len(p.b) for p in ranked[:top]) + 5
    out.append(f"{'rank':>4}  {'pair (A ~ B)':<{width}} {'A in B':>7} {'B in A':>7} {'lines A/B':>10}")
    for rank, p in enumerate(ranked[:top], 1):
        out.append(f"{rank:>4}  {p.a + ' ~ ' + p.b:<{width}} {p.share(p.a_tokens):>6.0f}% "
                   f"{p.share(p.b_tokens):>6.0f}% {f'{p.a_lines}/{p.b_lines}':>10}")
    out.append("(A in B: the share of A's tokens found in B; pairs not listed share no run of "
               "--min-run tokens)")
    for rank, p in enumerate(ranked[:show], 1):
        out.append(f"\n#{rank} {p.a} ~ {p.b}: shared fragments (file:lines, tokens)")
        for a_where, b_where, tokens in p.fragments[:MAX_FRAGMENTS]:
            # A run may cross from one joined file into the next: one line per piece.
            pieces = max(len(a_where), len(b_where))
            for i in range(pieces):
                a = f"{p.a}/{a_where[i]}" if i < len(a_where) else ""
                b = f"{p.b}/{b_where[i]}" if i < len(b_where) else ""
                tail = f"  [{tokens} tokens]" if i == 0 else ""
                out.append(f"  {a:<40} ~  {b}{tail}")
        if len(p.fragments) > MAX_FRAGMENTS:
            out.append(f"  ... and {len(p.fragments) - MAX_FRAGMENTS} shorter fragment(s)")
    return "\n".join(out) + "\n"


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./lab similarity", description=__doc__.split("\n\n")[0],
        epilog="See harness/grader/README.md (Course operations).")
    parser.add_argument("submissions", type=Path, help="folder of submissions, one folder each")
    parser.add_argument("--handout", type=Path, action="append", default=[], metavar="DIR",
                        help="the starter code to leave out (repeatable); default: both "
                             "tracks' handouts, cut from this kit")
    parser.add_argument("--no-handout", action="store_true", help="leave nothing out")
    parser.add_argument("--top", type=int, default=20, help="pairs in the table (default 20)")
    parser.add_argument("--show", type=int, default=3,
                        help="pairs whose shared fragments are listed (default 3)")
    parser.add_argument("--min-run", type=int, default=DEFAULT_MIN_RUN, metavar="TOKENS",
                        help=f"shortest run of tokens that counts (default {DEFAULT_MIN_RUN})")
    args = parser.parse_args(argv)
    try:
        if args.top < 1 or args.show < 0 or args.min_run < 1:
            raise InputError("--top and --min-run must be >= 1, --show >= 0")
        missing = [tool for _, tool in LANGUAGES.values() if not shutil.which(tool)]
        if missing:
            raise InputError(f"{', '.join(missing)} not found: install similarity-tester "
                             f"(apt-get install similarity-tester; ./lab similarity does)")
        if not args.submissions.is_dir():
            raise InputError(f"{args.submissions}: not a folder of submissions")
        for h in args.handout:
            if not h.is_dir():
                raise InputError(f"--handout {h}: not a folder")
        folders = [f for f in sorted(args.submissions.iterdir())
                   if f.is_dir() and not f.is_symlink() and not f.name.startswith(".")
                   and any(sources(f, s) for s, _ in LANGUAGES.values())]
        if len(folders) < 2:
            raise InputError(f"{args.submissions}: {len(folders)} submission(s) with C++ or Python "
                             f"sources; need at least two to compare")
        with tempfile.TemporaryDirectory(prefix="lab-handout-") as tmp:
            handout = [] if args.no_handout else (args.handout or cut_handouts(Path(tmp)))
            ranked, blanked = similarity(folders, handout, args.min_run)
            shown = args.handout if args.handout else (["this kit's handouts (C++ and Python)"]
                                                       if handout else [])
            sys.stdout.write(report(ranked, args.top, args.show, shown, blanked))
    except InputError as error:
        print(f"lab similarity: {error}", file=sys.stderr)
        return 2
    return 0


