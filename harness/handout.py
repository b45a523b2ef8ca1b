#!/usr/bin/env python3
"""Cuts a student handout, or the matching solution tree, out of the reference kit.

    ./lab handout DIR                      the student repository: stubs instead of solutions
    ./lab handout --solution DIR           the same tree with the solutions kept
    ./lab handout --with stage4 DIR        ... plus an extension (repeatable; see --help)
    ./lab handout --check                  only check the solution markers

The reference stays the one source of truth: every piece of code a student is to write sits
in a *solution block*, written as comments in its file's own syntax (``//`` in C++, ``#`` in
CMake, Python and shell, ``<!-- ... -->`` in Markdown). A block is three marker lines around
two sections: the reference's code, then, optionally, the stub that replaces it, each line of
the stub commented out so that the reference builds exactly as before. With <comment>
standing for the file's comment marker:

    <comment> BEGIN SOLUTION stage3/try-acquire
    ...the reference's lines...
    <comment> STUB
    <comment> ...the stub's lines, each behind one comment marker...
    <comment> END SOLUTION

A block is named PART/WHAT. PART decides when the reference's lines are kept (PARTS below):
the exercises (stage2, stage3) and the autograder's secrets (hidden) only in a --solution
tree; the extensions (stage4, reclaim-idle) only when --with names them, in either tree;
the instructor's own tooling (instructor) never. Everywhere else the stub takes the block's
place, uncommented. Blocks do not nest, and a name is used once per file. A malformed marker
stops the generation with FILE:LINE: message and exit status 1, before anything is written.

Whole files belong to a part too (Part.paths): stage 4's directory goes with stage4, the
hidden checks with hidden, and so on. Three files are written rather than copied: README.md
(the student README), ANSWERS.md (the questions with empty answers; the reference's answers
only in a --solution tree) and, in a handout, harness/rubric.toml without its hidden entries;
harness/conftest.py gains a few lines that keep the harness off the parts left out.

Before it writes anything, the generator checks that no solution text leaks: a line of a
replaced block that appears nowhere else in the reference must not appear in the output
(docs quoting the code are the usual culprit). Then it writes DIR and makes it a git
repository with one commit. Standard library only; Python 3.11 (tomllib).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import textwrap
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

sys.path.insert(0, str(Path(__file__).resolve().parent))
from grader import contract  # noqa: E402  (the submission contract lives with the grader)

REPO = Path(__file__).resolve().parent.parent

# ----------------------------------------------------------------------------------------------
# Parts
# ----------------------------------------------------------------------------------------------

#: kind of a part: when the reference's lines of its blocks (and its files) are kept.
SOLUTION = "solution"  # only in --solution trees (the exercises, the autograder's secrets)
EXTENSION = "extension"  # only with --with PART, in handouts and solution trees alike
INSTRUCTOR = "instructor"  # never: the instructor's own tooling


@dataclass(frozen=True)
class Part:
    """A named piece of the kit that a handout stubs, leaves out or keeps."""

    name: str
    kind: str
    summary: str  #: one line, for --help and --check
    paths: tuple[str, ...] = ()  #: files, or folders ending in "/", that belong to it alone
    binaries: tuple[str, ...] = ()  #: executables it builds (the harness forgets them without it)
    test_words: tuple[str, ...] = ()  #: harness tests whose ids hold one of these are its own
    readme: str = ""  #: the student README's paragraph about it (Markdown)


PARTS: dict[str, Part] = {part.name: part for part in (
    Part("stage2", SOLUTION,
         "stage 2's hand-off to a thread: ThreadSet::spawn() in common/include/lab/threads.hpp",
         readme=(
             "**Stage 2: the hand-off to a thread.** In `common/include/lab/threads.hpp`, write the "
             "body of `ThreadSet::spawn()`: run the connection's task on a new thread, and keep every "
             "thread so that its reaper can join it and `join_all()` can wait for it at shutdown. "
             "When no thread (or no memory) can be had, `spawn()` must not throw: it destroys the "
             "task first (in stage 3 the task holds a limit slot), then tells the client 503. The "
             "private helpers under it (`Job`, `finish()`, the reaper in `common/src/threads.cpp`) "
             "are complete; [docs/stage2.md](docs/stage2.md) explains how the reaper joins each "
             "finished thread before its task goes. Until you write it, no thread starts: every "
             "client of stages 2 and 3 is told 503 and the server logs "
             "`TODO(student): ThreadSet::spawn() is not written yet`.")),
    Part("stage3", SOLUTION,
         "stage 3's admission control: the limiter (stage3_limited/limiter.cpp) and the refusal "
         "decision (stage3_limited/main.cpp)",
         readme=(
             "**Stage 3: admission control.** In `stage3_limited/limiter.cpp`, write "
             "`ConnectionLimiter::try_acquire()` (look up, check and count under one lock, the "
             "per-client limit first), the private `release()` and `uncount_locked()`, and the "
             "move-only `Slot` (move constructor, move assignment, `release()`), so that every slot "
             "is given back exactly once, whichever way its connection ends. In "
             "`stage3_limited/main.cpp`, between `accept()` and `spawn()`, refuse a connection over "
             "a limit (429 per client, 503 in total) and move an admitted connection's slot into "
             "its task. The class and its data members (`limiter.hpp`), the refusal reply "
             "(`refusal.cpp`) and the status page (`status.cpp`) are given; "
             "[docs/stage3.md](docs/stage3.md) states the rules. Until you write them, "
             "`try_acquire()` refuses every client with 503, the loop in `main.cpp` admits everyone, "
             "and `build/bin/limiter_tests` fails, each failing test printing the "
             "`TODO(student)` it reached.")),
    Part("hidden", SOLUTION,
         "what only the autograder sees: hidden checks (harness/hidden/, "
         "harness/testdata/hidden_checks/) and the grader's own tests, which load them",
         paths=("harness/hidden/", "harness/testdata/hidden_checks/", "harness/test_grader.py",
                "harness/testdata/quirky_server.py")),
    Part("stage4", EXTENSION,
         "stage 4, the event-driven server: stage4_event/, its tests and docs/stage4.md "
         "(no solution markers: included whole; it runs on the student's stage 3 limiter)",
         paths=("stage4_event/", "harness/test_event.py", "docs/stage4.md", "docs/diagrams/stage4.dot"),
         binaries=("stage4_event",), test_words=("stage4",),
         readme=(
             "**Stage 4, the event-driven server**, is included complete, for comparison: "
             "`stage4_event/` serves every connection from a few event loops instead of a thread "
             "each, with stage 3's limits. It uses your `ConnectionLimiter`, so it refuses "
             "everyone until stage 3 is done. Its guide page is [docs/stage4.md](docs/stage4.md).")),
    Part("reclaim-idle", EXTENSION,
         "--reclaim-idle: the limiter's reclaim of idle slots, its unit and harness tests and its "
         "section of docs/stage3.md",
         paths=("stage3_limited/test/reclaim_test.cpp", "harness/test_reclaim.py"),
         test_words=("reclaim",),
         readme=(
             "**`--reclaim-idle`** is included: when the server is full, the limiter takes the slot "
             "of the oldest connection still waiting for its request head "
             "(`reclaim_oldest_locked()`, given) instead of refusing the newcomer. Your "
             "`try_acquire()` must call it when the total limit is reached and the option is on; "
             "`stage3_limited/test/reclaim_test.cpp` and `harness/test_reclaim.py` check it, and "
             "[docs/stage3.md](docs/stage3.md) describes it.")),
    Part("instructor", INSTRUCTOR,
         "the handout generator, the batch and Gradescope grading (autograde.py), the "
         "similarity ranking (similarity.py), their tests (the hostile submissions' payload too) "
         "and the instructor's page",
         paths=("harness/handout.py", "harness/test_handout.py", "docs/instructor.md",
                "harness/studentside.py", "harness/test_student_cpp.py",
                "harness/test_student_python.py",
                "harness/autograde.py", "harness/grader/submission.py", "harness/test_autograde.py",
                "harness/similarity.py", "harness/test_similarity.py",
                "harness/testdata/hostile_payload.py")),
)}

#: Left out of every generated tree: the reference's benchmark figures answer question 5.
LEFT_OUT = ("docs/bench/",)

#: The Python track's own files: left out of C++ trees; in a Python tree (--lang python) they
#: go to its top directory (python/http_server.py → http_server.py, python/docs/ → docs/).
PYTHON_DIR = "python/"
#: What a Python tree takes from the rest of the kit, besides PYTHON_DIR: the sample site, the
#: grader and its rubric with the flawed server its page grades, the benchmark of question 5,
#: and the guide's runner (./lab doctest) with the tool its blocks use.
PYTHON_SHARED = ("www/", "harness/grade.py", "harness/grader/", "harness/rubric.toml",
                 "harness/README-grading.md", "harness/testdata/flawed_server.py",
                 "harness/bench_shaped.py", "harness/benchlib/",
                 "harness/doctest_guide.py", "docs/tools/hold.py")
#: The programs a Python tree's grader runs: (name, profile, --server-cmd), one file for both.
PYTHON_TARGETS = (
    ("http_server.py (threaded)", "threaded", "python3 http_server.py -p {port}"),
    ("http_server.py (limited)", "limited",
     "python3 http_server.py -p {port} -maxclient {maxclient} -maxtotal {maxtotal}"),
)

#: Written by the generator instead of copied.
README = "README.md"
ANSWERS = "ANSWERS.md"
RUBRIC = "harness/rubric.toml"
CONFTEST = "harness/conftest.py"
CHECKS = "harness/grader/checks.py"

#: Hook for GitHub Classroom: workflows here are copied (markers processed like any file), and
#: the student README says that a push runs them. The Classroom workflow itself is written by
#: the generator (classroom_workflow()): one step per visible check, so that Classroom's
#: gradebook gets each check's points.
WORKFLOWS = ".github/workflows/"
WORKFLOW = WORKFLOWS + "classroom.yml"

#: What the stages are called on the command line of the grader (the submission contract,
#: which the autograder and ./lab grade-all apply: harness/grader/contract.py).
STAGE_COMMANDS = {t.binary: (t.profile, t.command) for t in contract.TARGETS}

# ----------------------------------------------------------------------------------------------
# Comment syntaxes and markers
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Syntax:
    """How a file type writes a one-line comment: ``open text close``."""

    name: str
    open: str
    close: str = ""


CPP = Syntax("C++", "//")
HASH = Syntax("#", "#")
HTML = Syntax("Markdown", "<!--", "-->")

SUFFIXES = {
    ".cpp": CPP, ".hpp": CPP, ".cc": CPP, ".cxx": CPP, ".hh": CPP, ".h": CPP, ".c": CPP,
    ".py": HASH, ".sh": HASH, ".bash": HASH, ".cmake": HASH, ".toml": HASH, ".yml": HASH,
    ".yaml": HASH, ".cfg": HASH, ".ini": HASH, ".dict": HASH,
    ".md": HTML, ".html": HTML, ".htm": HTML,
}
FILE_NAMES = {
    "CMakeLists.txt": HASH, ".gitignore": HASH, ".clang-format": HASH, ".clang-tidy": HASH,
    "Dockerfile": HASH, "Makefile": HASH,
}

NAME_RE = re.compile(r"^(?P<part>[a-z0-9][a-z0-9-]*)/(?P<what>[A-Za-z0-9][A-Za-z0-9_.-]*)$")
# A comment that means to be a BEGIN or END marker, spelled right or not.
KEYWORD_RE = re.compile(r"^(?P<kw>BEGIN|END)\b[ \t_-]*SOLUTIONS?\b[ \t]*(?P<rest>.*)$", re.I)


def syntax_for(rel: str, text: str) -> Syntax | None:
    """The comment syntax of file @p rel, or None for a type that has none known here."""
    path = PurePosixPath(rel)
    if path.name in FILE_NAMES:
        return FILE_NAMES[path.name]
    if path.suffix in SUFFIXES:
        return SUFFIXES[path.suffix]
    if text.startswith("#!"):
        return HASH  # shell or Python script without a suffix (./lab, .ci/run)
    return None


class MarkerError(Exception):
    """Something wrong at one place of the reference: printed as FILE:LINE: message."""

    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass
class Block:
    """One solution block of a reference file."""

    path: str
    name: str
    line: int  #: the BEGIN SOLUTION line
    solution: list[tuple[int, str]] = field(default_factory=list)  #: (line number, text)
    stub: list[str] | None = None  #: uncommented; None when the block has no STUB section
    stub_line: int = 0
    end_line: int = 0

    @property
    def part(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class Parsed:
    """A reference text file cut into plain lines and blocks."""

    path: str
    syntax: Syntax
    segments: list[str | Block]
    trailing_newline: bool

    @property
    def blocks(self) -> list[Block]:
        return [s for s in self.segments if isinstance(s, Block)]


def marker(line: str, syntax: Syntax) -> tuple[str, str] | None:
    """What marker @p line is: ("begin", name), ("end", name or ""), ("stub", ""), or
    ("error", message) for a line that means to be one but is malformed; None for any other
    line."""
    stripped = line.strip()
    if not stripped.startswith(syntax.open):
        return None
    body = stripped[len(syntax.open):]
    closed = True
    if syntax.close:
        closed = body.endswith(syntax.close)
        if closed:
            body = body[:-len(syntax.close)]
    body = body.strip()
    keyword = KEYWORD_RE.match(body)
    if keyword is None and not re.match(r"^STUB\b", body):
        return None
    if not closed:
        return ("error", f"marker comment not closed with {syntax.close} on its line")
    if keyword is None:
        if body != "STUB":
            return ("error", f"malformed marker {body!r}: the stub marker is a comment holding "
                             f"just STUB")
        return ("stub", "")
    kw = keyword["kw"].upper()
    spelled = f"{kw} SOLUTION"
    if not re.match(rf"^{spelled}(\s|$)", body):
        return ("error", f"malformed marker {body!r}: write {spelled}, in capitals, one space "
                         f"apart")
    rest = body[len(spelled):].strip()
    if kw == "BEGIN":
        if not rest:
            return ("error", "BEGIN SOLUTION without a name: write BEGIN SOLUTION PART/WHAT")
        return ("begin", rest)
    return ("end", rest)


def uncomment(line: str, syntax: Syntax) -> str | None:
    """A stub line without its comment marker (indentation kept), or None if it is not a
    comment of @p syntax. A blank line stays blank."""
    if not line.strip():
        return ""
    match = re.match(r"^([ \t]*)(.*?)[ \t]*$", line)
    indent, rest = match[1], match[2]
    if not rest.startswith(syntax.open):
        return None
    rest = rest[len(syntax.open):]
    if syntax.close:
        if not rest.endswith(syntax.close):
            return None
        rest = rest[:-len(syntax.close)]
        rest = rest[1:] if rest.startswith(" ") else rest
        rest = rest[:-1] if rest.endswith(" ") else rest
    elif rest.startswith(" "):
        rest = rest[1:]
    return indent + rest if rest.strip() else ""


def parse(path: str, text: str, syntax: Syntax) -> tuple[Parsed, list[MarkerError]]:
    """Cuts @p text into plain lines and blocks; returns every marker error found."""
    errors: list[MarkerError] = []
    lines = text.split("\n")
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    segments: list[str | Block] = []
    names: dict[str, int] = {}
    block: Block | None = None
    in_stub = False
    for number, line in enumerate(lines, 1):
        found = marker(line, syntax)
        if found is None:
            if block is None:
                segments.append(line)
            elif not in_stub:
                block.solution.append((number, line))
            else:
                plain = uncomment(line, syntax)
                if plain is None:
                    errors.append(MarkerError(path, number, (
                        f"stub line of block {block.name} is not a {syntax.name} comment "
                        f"(write each stub line behind {syntax.open}"
                        f"{' … ' + syntax.close if syntax.close else ''})")))
                else:
                    block.stub.append(plain)
            continue
        kind, value = found
        if kind == "error":
            errors.append(MarkerError(path, number, value))
        elif kind == "begin":
            if block is not None:
                errors.append(MarkerError(path, number, (
                    f"BEGIN SOLUTION {value} inside block {block.name} (opened at line "
                    f"{block.line}): blocks do not nest; close it with END SOLUTION first")))
                continue
            name_match = NAME_RE.match(value)
            if name_match is None:
                errors.append(MarkerError(path, number, (
                    f"bad block name {value!r}: write PART/WHAT, e.g. stage3/try-acquire "
                    f"(lower-case part; letters, digits, '.', '_' and '-')")))
            elif name_match["part"] not in PARTS:
                errors.append(MarkerError(path, number, (
                    f"block {value}: unknown part {name_match['part']!r}; known parts: "
                    f"{', '.join(PARTS)}")))
            elif value in names:
                errors.append(MarkerError(path, number, (
                    f"block name {value} is used twice in this file (first at line "
                    f"{names[value]})")))
            names.setdefault(value, number)
            block = Block(path, value, number)
            in_stub = False
        elif kind == "stub":
            if block is None:
                errors.append(MarkerError(path, number, "STUB outside a solution block"))
            elif in_stub:
                errors.append(MarkerError(path, number, (
                    f"second STUB in block {block.name} (the first is at line {block.stub_line})")))
            else:
                in_stub = True
                block.stub, block.stub_line = [], number
        else:  # end
            if block is None:
                errors.append(MarkerError(path, number, "END SOLUTION without BEGIN SOLUTION"))
                continue
            if value and value != block.name:
                errors.append(MarkerError(path, number, (
                    f"END SOLUTION {value} closes block {block.name} (opened at line "
                    f"{block.line})")))
            if not block.solution and not block.stub:
                errors.append(MarkerError(path, block.line, f"block {block.name} is empty"))
            block.end_line = number
            segments.append(block)
            block, in_stub = None, False
    if block is not None:
        errors.append(MarkerError(path, block.line, (
            f"block {block.name} is never closed: END SOLUTION missing before the end of the "
            f"file")))
    return Parsed(path, syntax, segments, trailing), errors


def render(parsed: Parsed, kept: set[str]) -> str:
    """The file with every block replaced by its reference lines (part in @p kept) or its stub.

    A block that leaves nothing behind takes one neighbouring blank line with it, so that
    removing a paragraph or a line does not leave two blank lines where there was one.
    """
    out: list[str] = []
    swallow_blank = False
    for segment in parsed.segments:
        if isinstance(segment, Block):
            lines = ([text for _, text in segment.solution] if segment.part in kept
                     else list(segment.stub or []))
            out.extend(lines)
            swallow_blank = not lines and (not out or not out[-1].strip())
            continue
        if swallow_blank and not segment.strip():
            swallow_blank = False
            continue
        swallow_blank = False
        out.append(segment)
    return "\n".join(out) + ("\n" if parsed.trailing_newline and out else "")


# ----------------------------------------------------------------------------------------------
# The reference's files
# ----------------------------------------------------------------------------------------------

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
                        "(add its suffix to SUFFIXES in harness/handout.py)")))
            continue
        item.parsed, found = parse(rel, item.text, syntax)
        errors += found
    return files, errors


def owner(rel: str) -> Part | None:
    """The part whose paths hold file @p rel, if any."""
    for part in PARTS.values():
        for path in part.paths:
            if rel == path or (path.endswith("/") and rel.startswith(path)):
                return part
    return None


def left_out(rel: str) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in LEFT_OUT)


# ----------------------------------------------------------------------------------------------
# The files the generator writes
# ----------------------------------------------------------------------------------------------


class GenerationError(Exception):
    """The tree cannot be generated; the message says where and why."""


def fenced_lines(text: str):
    """Yields (line number, line, inside a fenced code block) for Markdown @p text."""
    fence = ""
    for number, line in enumerate(text.split("\n"), 1):
        opening = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if opening and (not fence or opening[1].startswith(fence)):
            fence = "" if fence else opening[1]
            yield number, line, True
            continue
        yield number, line, bool(fence)


def answers_template(text: str) -> str:
    """The reference's ANSWERS.md reduced to its title and questions, with room to answer."""
    title = "# Answers to the course questions"
    questions = []
    for _, line, in_code in fenced_lines(text):
        if in_code:
            continue
        if line.startswith("# ") and not questions:
            title = line.rstrip()
        elif re.match(r"^##\s+\d+\.\s", line):
            questions.append(line.rstrip())
    if not questions:
        raise GenerationError(f"{ANSWERS}:1: no question headings (## 1. ...) found")
    out = [
        title, "",
        "Answer each question below under its heading, about the code in this repository as you",
        "have completed it. Say what your code does and why, give the command or the test that",
        "shows it, and quote the figures you measured (with the machine they come from). The guide",
        "in `docs/` (start at [docs/index.md](docs/index.md)) explains each stage.",
    ]
    for question in questions:
        out += ["", "---", "", question, "", "Your answer:", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def check_ids(checks_text: str) -> set[str]:
    """The ids of the checks registered in the grader's checks.py."""
    return set(re.findall(r"@check\(\s*[\"']([^\"']+)[\"']", checks_text))


def visible_rubric(text: str, builtin: set[str]) -> tuple[str, list[str]]:
    """The rubric without the entries of hidden checks; returns it and the ids dropped.

    An entry is hidden when its visibility is anything but "visible", or when it gives none and
    names no built-in check (a --hidden-dir check is hidden by default). A built-in check cannot
    be hidden this way: its code would still ship in checks.py.
    """
    try:
        checks = tomllib.loads(text).get("checks", {})
    except tomllib.TOMLDecodeError as error:
        raise GenerationError(f"{RUBRIC}:1: {error}") from error
    hidden = [cid for cid, entry in checks.items()
              if entry.get("visibility", "visible" if cid in builtin else "hidden") != "visible"]
    lines = text.split("\n")
    header = re.compile(r"^\s*\[\s*checks\s*\.\s*\"?([^\]\"]+)\"?\s*\]\s*(#.*)?$")
    keep: list[str] = []
    dropping = False
    for number, line in enumerate(lines, 1):
        table = header.match(line)
        if table or re.match(r"^\s*\[", line):
            dropping = bool(table) and table[1].strip() in hidden
            if dropping and table[1].strip() in builtin:
                raise GenerationError(
                    f"{RUBRIC}:{number}: check {table[1].strip()!r} is not visible, but it is "
                    f"built into {CHECKS}, which every handout ships: move it to a hidden-check "
                    f"directory (harness/hidden/) or put its code in a block named "
                    f"hidden/{table[1].strip()}")
        if not dropping:
            keep.append(line)
    result = re.sub(r"\n{3,}", "\n\n", "\n".join(keep))
    left = tomllib.loads(result).get("checks", {})
    assert not set(left) & set(hidden), "hidden rubric entries survived"
    return result, hidden


def profile_maxima(rubric_text: str) -> dict[str, float]:
    """Points available per profile in a rubric (entries that give their points)."""
    totals: dict[str, float] = {}
    for entry in tomllib.loads(rubric_text).get("checks", {}).values():
        for profile in entry.get("profiles", []):
            totals[profile] = totals.get(profile, 0) + entry.get("points", 0)
    return totals


def conftest_shim(absent: list[Part]) -> str:
    """Text appended to the handout's harness/conftest.py when parts are left out: their
    binaries leave the stage lists, and tests named after them are deselected (they would only
    fail for a missing binary)."""
    binaries = sorted({b for part in absent for b in part.binaries})
    words = sorted({w for part in absent for w in part.test_words})
    names = ", ".join(part.name for part in absent)
    return f'''

# ---- Added by ./lab handout: this handout leaves out {names}. ----
# Their binaries are never built, so they leave the stage lists above, and tests named after
# them are deselected instead of failing for a missing binary.
_HANDOUT_ABSENT_BINARIES = {binaries!r}
_HANDOUT_ABSENT_WORDS = {words!r}

for _name in ("STAGES", "THREADED_STAGES", "LIMITED_STAGES"):
    _stages = globals().get(_name)
    if isinstance(_stages, list):
        _stages[:] = [stage for stage in _stages if stage not in _HANDOUT_ABSENT_BINARIES]


def pytest_collection_modifyitems(config, items):
    """Deselects the tests of the parts this handout leaves out."""
    def absent(item):
        params = getattr(getattr(item, "callspec", None), "params", {{}})
        return (any(word in item.nodeid for word in _HANDOUT_ABSENT_WORDS)
                or any(value in _HANDOUT_ABSENT_BINARIES for value in params.values()
                       if isinstance(value, str)))

    dropped = [item for item in items if absent(item)]
    if dropped:
        items[:] = [item for item in items if not absent(item)]
        config.hook.pytest_deselected(items=dropped)
'''


CONTROL_WORDS = {"if", "for", "while", "switch", "catch", "return", "sizeof", "try"}
SIGNATURE = re.compile(
    r"(?<![\w.>])(?P<name>(?:[A-Za-z_~][\w~]*::)*(?:operator\s*[^\s(]+|[A-Za-z_~][\w~]*))\s*\(")


def enclosing_function(lines: list[str], index: int) -> str:
    """The name of the function around line @p index (0-based), found by walking out through
    the scopes that enclose it (each opened by a line ending in "{" or ":" and indented less
    than what it holds); "" when none is found."""
    indent = len(lines[index]) - len(lines[index].lstrip())
    above = index - 1
    while above >= 0:
        code = lines[above].strip()
        if not code.endswith(("{", ":")) or code.startswith(("//", "#", "*", "/*")):
            above -= 1
            continue
        # A signature can span lines: take earlier ones until its parentheses balance.
        text, first = code, above
        while text.count("(") < text.count(")") and first > 0:
            first -= 1
            text = lines[first].strip() + " " + text
        depth = len(lines[first]) - len(lines[first].lstrip())
        if depth < indent:
            indent = depth
            name = SIGNATURE.search(text)
            if name and name["name"] not in CONTROL_WORDS:
                return name["name"]
        above = first - 1
    return ""


def todo_list(tree: dict[str, "Output"]) -> list[str]:
    """Markdown list items, one per TODO(student) comment of the tree: where, in which
    function, and the comment's first sentence."""
    items = []
    for rel in sorted(tree):
        out = tree[rel]
        syntax = syntax_for(rel, out.text) if out.text is not None else None
        if syntax not in (CPP, HASH):
            continue
        comment = re.compile(rf"^\s*{re.escape(syntax.open)}\s?(?P<text>.*)$")
        lines = out.text.split("\n")
        for index, line in enumerate(lines):
            found = comment.match(line)
            if not found or not found["text"].startswith("TODO(student):"):
                continue
            words = [found["text"][len("TODO(student):"):].strip()]
            for following in lines[index + 1:]:
                more = comment.match(following)
                if not more or not more["text"].strip() or "TODO(" in more["text"]:
                    break
                words.append(more["text"].strip())
            text = re.sub(r"@p (\w+)", r"`\1`", " ".join(words))
            summary = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
            name = enclosing_function(lines, index)
            where = f" in `{name}()`" if name else ""
            items += textwrap.wrap(f"- `{rel}:{index + 1}`{where}: {summary}.", 96,
                                   subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False)
    return items


def wrapped(text: str, indent: str = "") -> list[str]:
    """@p text in lines up to 96 characters (later ones indented by @p indent), never breaking
    a `code span`, so that a command in one reads and copies whole."""
    text = re.sub(r"`[^`]*`", lambda m: m[0].replace(" ", "\0"), text)
    return [line.replace("\0", " ") for line in textwrap.wrap(
        text, 96, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)]


def paragraph(text: str) -> list[str]:
    """@p text wrapped as a Markdown paragraph of lines up to 96 characters."""
    return wrapped(text)


def bullets(items: list[str]) -> list[str]:
    """@p items as a Markdown list, each item wrapped to lines up to 96 characters."""
    return [line for item in items for line in wrapped("- " + item, "  ")]


def question5(servers: str, build: str) -> list[str]:
    """The README section on question 5: the one command, and what to hand in."""
    return [
        "## Question 5: what to hand in", "",
    ] + paragraph(
        "Question 5 of `ANSWERS.md` asks for the times and speedups of the two concurrent-fetch "
        "test cases: test case 1, many small files (200 files, 3.5 MiB in all), and test case 2, "
        "a few large files (4 files, 32 MiB in all). Each is fetched twice: by one client, file "
        "after file (sequential), and by 12 client threads sharing the list (concurrent); the "
        "speedup is the sequential time over the concurrent one. On loopback a whole pass takes "
        "milliseconds, which measures the machine's noise rather than the server, so measure "
        "them through a simulated network:") + [
        "",
        "<!-- doctest: skip — runs for about 5 minutes -->",
        "```sh",
        "./lab speedup",
        "```", "",
    ] + paragraph(
        f"It {build}serves a generated site with {servers} and `python3 -m http.server`, sends "
        "every connection through a proxy that adds a 20 ms round trip and 100 Mbit/s each way "
        "(`harness/benchlib/shaper.py`), and runs 5 rounds, the servers in turns. It refuses "
        "fewer than 3 rounds and runs without the simulated network, and marks with ⚠ any time "
        "shorter than 0.5 s. It takes 4 to 5 minutes, prints one table per test case, and "
        "writes them to `build/bench-shaped/shaped.md` (every single run in "
        "`build/bench-shaped/shaped_runs.csv`); `harness/bench_shaped.py --help` lists the "
        "options it passes on. Hand in, under question 5 of `ANSWERS.md`:") + [
        "",
        "1. the two tables of `shaped.md` as they are (for each server: the median sequential and",
        "   concurrent times in seconds, the speedup with its min–max over the rounds, the errors),",
        "   and its `Produced by ... Machine: ...` line;",
        "2. for each test case, which servers gain from the 12 concurrent clients and how much, and",
        "   why the sequential server's speedup differs between the two cases: where is the time",
        "   spent waiting?",
        "3. every cell marked ⚠ or with errors, and what you did about it (a rerun on a quieter",
        "   machine, or `./lab speedup --rtt-ms 50`, said as such).",
        "",
    ]


def doctest_note(server: str) -> list[str]:
    """The README's paragraph on ./lab doctest, which checks the guide's blocks on @p server."""
    return paragraph(
        "`./lab doctest` runs the command blocks of this README, `docs/` and `ANSWERS.md` that "
        f"can run unattended, against {server}, and checks that they print what the pages say "
        "(`harness/doctest_guide.py --help`); those that need code you write fail until it "
        "does its job.") + [""]


def grade_section(intro: str, targets: list[tuple[str, str]], maxima: dict[str, float],
                  detail: str = "") -> list[str]:
    """The README's "Check your work with the grader" section: @p intro, the ./lab grade
    command of each (profile, --server-cmd) of @p targets, and what those checks are (@p
    detail: a sentence of the track's own on how the grader runs the server)."""
    out = ["## Check your work with the grader", "", intro, "",
           "<!-- doctest: skip — grades for a minute each; the autograder runs the same checks -->",
           "```sh"]
    for profile, command in targets:
        limits = " --maxclient 12 --maxtotal 60" if profile == "limited" else ""
        out.append(f'./lab grade --profile {profile}{limits} \\\n    --server-cmd "{command}"')
    out += ["```", ""]
    points = [f"{maxima[p]:g} on the {p} profile" for p in ("threaded", "limited") if p in maxima]
    return out + paragraph(
        "These are the visible checks of `harness/rubric.toml`"
        + (f" ({' and '.join(points)} at most)" if points else "") + ". " + detail
        + "`harness/README-grading.md` explains each check, what its failure messages mean, "
          "and the reports it writes (`grade-results/`). The autograder runs the same checks on "
          "your submission, and may add hidden ones.") + [""]


def contract_section(specific: list[str], limited: str) -> list[str]:
    """The README's "The submission contract": the track's @p specific items, then what every
    track shares: stage 3's refusals (@p limited: who refuses), ANSWERS.md, and the grader
    left alone."""
    return ["## The submission contract", ""] + bullets(specific + [
        f"{limited} refuses a connection over the per-client limit with `429 Too Many Requests` "
        "and one over the total limit with `503 Service Unavailable`, at once, without a thread.",
        "`ANSWERS.md` holds your answers to the course's questions.",
        "The grader, the rubric and the harness stay as they are: the autograder uses its own copy.",
    ]) + [""]


def submitting_section(workflow: str) -> list[str]:
    """The README's "Submitting": push (or bundle), with @p workflow, what a push runs."""
    return ["## Submitting", ""] + paragraph(
        "Commit your work and push it to the repository your course gave you (with GitHub "
        "Classroom, the assignment repository made for you): what is pushed at the deadline is "
        "what gets graded. " + workflow + "If your course collects files instead, hand in a "
        "bundle of your history, made with `git bundle create submission.bundle HEAD`.") + [""]


def python_readme(tree: dict[str, "Output"], solution: bool, maxima: dict[str, float]) -> str:
    """The README of a Python tree (--lang python)."""
    out = ["# Concurrent HTTP server lab, in Python" + (": solution tree" if solution else ""), ""]
    if solution:
        out += [
            "> **Solution tree, for the instructor: keep it private.** It is the Python handout",
            "> with every stub filled in with the reference's code and the answered questions'",
            "> headings; students get it cut with `./lab handout --lang python DIR`.", ""]
    out += paragraph(
        "`http_server.py` is the sequential static-file server of the earlier project, run as "
        "`python3 http_server.py -p 8080`: it serves its working directory over HTTP/1.0, one "
        "client at a time. You grow it into a server that serves every connection on a thread "
        "of its own (stage 2) and limits how many connections one client, and all clients "
        "together, may hold (stage 3, `-maxclient N -maxtotal M`). Standard library only; "
        "Python 3.8 or newer.") + [""]
    out += ["| stage | run as | in this repository |", "| --- | --- | --- |",
            "| 1, sequential | `python3 http_server.py -p 8080 --sequential` | complete: read it first |",
            "| 2, a thread per connection | `python3 http_server.py -p 8080` | "
            + ("complete |" if solution else "you write `hand_off()` |"),
            "| 3, admission control | `python3 http_server.py -p 8080 -maxclient 12 -maxtotal 60` | "
            + ("complete |" if solution else "you write the limiter and `admit()` |"), ""]
    todos = todo_list(tree)
    out += ["## What " + ("students implement" if solution else "you implement"), ""]
    out += paragraph(
        "[docs/index.md](docs/index.md) walks through the given server and states what each "
        "stage must do.") + [""]
    if todos:
        out += ["Every place to fill in is marked `TODO(student)`, with a comment saying what the",
                "code must do; until it is written, the server says `TODO(student): ...` on stderr",
                "and answers 503:", ""] + todos + [""]
    out += [
        "## Run it", "",
        "<!-- doctest: skip — serves until Ctrl-C -->",
        "```sh",
        "./lab run                        # serve www/ on http://localhost:8080/ (Ctrl-C stops it)",
        "./lab run --sequential           # the same with stage 1",
        "python3 http_server.py --help    # every option",
        "./lab doctest                    # the guide's commands, run and checked",
        "```", "",
    ] + doctest_note("`http_server.py`")
    out += grade_section(
        "`./lab grade` runs the checks your submission will be scored with, against your server:",
        [(profile, command) for _, profile, command in PYTHON_TARGETS], maxima,
        "The grader starts your server for each check with a copy of the sample site as its "
        "working directory, on a free port, and stops it afterwards. ")
    out += contract_section([
        "`http_server.py` stays at the top of the repository and runs with Python 3 and its "
        "standard library alone.",
        f"The grader runs it as `{PYTHON_TARGETS[0][2]}` (stage 2) and `{PYTHON_TARGETS[1][2]}` "
        "(stage 3), with a copy of the document root as its working directory, and connects to "
        "`127.0.0.1:{port}`."], "With `-maxclient` and `-maxtotal` (stage 3), the server")
    out += submitting_section(
        f"Each push runs `{WORKFLOW}` on GitHub: one step per visible check, each worth the "
        "check's points in Classroom's gradebook when the check passes whole. ")
    out += question5("your server (stage 1 with `--sequential`, and threaded)", "")
    out += [
        "## Reading", "",
        "- [docs/index.md](docs/index.md): the lab guide for this track.",
        "- [ANSWERS.md](ANSWERS.md): the questions to answer.",
        "- [harness/README-grading.md](harness/README-grading.md): the grader.",
    ]
    return "\n".join(out) + "\n"


def student_readme(tree: dict[str, "Output"], kept: set[str], solution: bool,
                   maxima: dict[str, float]) -> str:
    """The README of a generated tree: what to implement, the contract, checking, submitting."""
    exercises = [p for p in PARTS.values() if p.kind == SOLUTION and p.readme]
    extensions = [p for p in PARTS.values() if p.kind == EXTENSION]
    included = [p for p in extensions if p.name in kept]
    absent = [p for p in extensions if p.name not in kept]
    workflows = sorted(rel for rel in tree if rel.startswith(WORKFLOWS))
    has_stage4 = "stage4" in kept
    out = ["# Concurrent HTTP server lab" + (": solution tree" if solution else ""), ""]
    if solution:
        out += [
            "> **Solution tree, for the instructor and the autograder: keep it private.** It is the",
            "> student handout with every stub filled in with the reference's code, the answered",
            "> questions (ANSWERS.md) and the autograder's hidden checks and tests. Students get the",
            "> same tree without them, cut with `./lab handout DIR`.", ""]
    out += [
        "Three small HTTP/1.0 static-file servers in C++20, one per stage of the lab, built on one",
        "shared core library; a test harness that runs them against real clients; and the grader",
    ] + (paragraph(
        "that scores them. In the student handout, part of the code is left for students to "
        "write, as described below; in this tree it is filled in.") if solution else [
        "that scores them. Part of the code is yours to write. Where it goes, the code compiles",
        "but does not do its job yet, and says so when it runs."]) + [
        "",
        "| executable | model | in this repository |",
        "| --- | --- | --- |",
        "| `stage1_sequential` | accept, serve, close: one client at a time | complete: read it first |",
        "| `stage2_threaded` | a new thread for each connection | you write the hand-off to the thread |",
        "| `stage3_limited` | stage 2 plus admission control (per-client and total limits) "
        "| you write the admission control |",
    ]
    if has_stage4:
        out.append("| `stage4_event` | a few event loops, stage 3's limits | complete, for comparison |")
    if solution:
        out = [line.replace("| you write ", "| students write ") for line in out]
    out += ["", "The shared core (`common/`: request parser, path resolution, responses, sockets,",
            "options, logging, the thread set's helpers) is complete, and so are its tests.", "",
            "## What students implement" if solution else "## What you implement", ""]
    for part in exercises + included:
        out += paragraph(part.readme) + [""]
    todos = todo_list(tree)
    if todos:
        out += ["Every place to fill in is marked `TODO(student)`, with a comment saying what the",
                "code must do:", ""] + todos + [""]
    elif solution:
        out += ["(In the student handout each of these places holds a stub marked",
                "`TODO(student)`.)", ""]
    if absent:
        out += ["Not in this repository:", ""]
        for part in absent:
            if part.name == "stage4":
                out.append("- stage 4, the event-driven server, with its tests and guide page;")
            elif part.name == "reclaim-idle":
                out.append("- `--reclaim-idle`: the option is still accepted, but the limiter never "
                           "reclaims a slot (a full server refuses), and its tests are left out;")
            else:
                out.append(f"- {part.summary};")
        out[-1] = out[-1].rstrip(";") + "."
        out.append("")
    out += [
        "## Build, run, test", "",
        "On Debian 12 (as root or with `sudo`; `./lab setup` installs what is missing):", "",
        "<!-- doctest: skip — builds, serves until Ctrl-C and runs every test -->",
        "```sh",
        "./lab build                      # configure and build into build/ (binaries in build/bin/)",
        "./lab run stage2_threaded        # serve www/ on http://localhost:8080/ (Ctrl-C stops it)",
        "./lab test                       # every unit test and the harness, through CTest",
        "build/bin/limiter_tests          # stage 3's unit tests alone",
        "./lab doctest                    # the guide's commands, run and checked",
        "```", "",
        "Every stage prints its options with `--help`. The unit tests and harness tests of the",
        "given parts pass from the start; those of stages 2 and 3 fail until your code does its",
        "job, and a failing limiter test prints the `TODO(student)` it ran into.", "",
    ] + doctest_note("the stages, which it builds first")
    out += grade_section(
        "`./lab grade` builds, then runs the checks your submission will be scored with:",
        list(STAGE_COMMANDS.values()), maxima)
    out += contract_section([
        "The repository builds with `./lab build` (CMake's `default` preset: `cmake --preset "
        "default && cmake --build --preset default`) on Debian 12 with g++ 12, without a warning "
        "(`-Wall -Wextra -Wpedantic -Wshadow -Wconversion`).",
        "The build produces `build/bin/stage2_threaded` and `build/bin/stage3_limited` (and "
        "keeps `build/bin/stage1_sequential`).",
        "The command lines stay as they are: the grader starts the servers as "
        f"`{STAGE_COMMANDS['stage2_threaded'][1]}` and `{STAGE_COMMANDS['stage3_limited'][1]}`, "
        "and connects to `127.0.0.1:{port}`."], "Stage 3")
    workflow = ""
    if workflows:
        workflow = ("Each push also runs " + ", ".join(f"`{w}`" for w in workflows) + " on GitHub"
                    + (f"; `{WORKFLOW}` builds your code and grades it with the visible checks, "
                       "one step per check, each worth the check's points in GitHub Classroom's "
                       "gradebook when the check passes whole. " if WORKFLOW in workflows else ". "))
    out += submitting_section(workflow)
    out += question5("each stage of this repository", "builds the stages, ")
    out += [
        "## Reading", "",
        "- [docs/index.md](docs/index.md): the lab guide, one page per stage, and the design notes",
        "  on the shared core.",
        "- [ANSWERS.md](ANSWERS.md): the questions to answer.",
        "- [harness/README.md](harness/README.md): the pytest harness, and how to run part of it.",
        "- [harness/README-grading.md](harness/README-grading.md): the grader.",
    ]
    return "\n".join(out) + "\n"


# ----------------------------------------------------------------------------------------------
# Generating a tree
# ----------------------------------------------------------------------------------------------


@dataclass
class Output:
    """One file of the generated tree."""

    data: bytes
    mode: int
    symlink: bool = False
    text: str | None = None
    origin: str = ""  #: "copy", "rendered" or "generated"


def kept_parts(solution: bool, extensions: list[str]) -> set[str]:
    """The parts whose blocks keep the reference's lines, and whose files are included."""
    kept = set(extensions)
    if solution:
        kept |= {p.name for p in PARTS.values() if p.kind == SOLUTION}
    return kept


def placed(rel: str, lang: str) -> str | None:
    """Where reference file @p rel goes in a tree of language @p lang; None: left out."""
    if lang == "python":
        if rel.startswith(PYTHON_DIR):
            return rel[len(PYTHON_DIR):]
        shared = any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in PYTHON_SHARED)
        return rel if shared else None
    return None if rel.startswith(PYTHON_DIR) else rel


def output_of(item: Source, kept: set[str]) -> Output:
    """Reference file @p item as it goes into a tree: rendered when it has solution blocks
    (those of the @p kept parts keep the reference's lines), else copied as it is."""
    if item.symlink:
        return Output(item.data, item.mode, symlink=True, origin="copy")
    if item.parsed is not None:
        text = render(item.parsed, kept)
        return Output(text.encode("utf-8"), item.mode, text=text, origin="rendered")
    return Output(item.data, item.mode, text=item.text, origin="copy")


def build_tree(files: dict[str, Source], kept: set[str], solution: bool,
               lang: str = "cpp") -> dict[str, Output]:
    """The generated tree, in memory: rel path → Output."""
    if lang == "python":
        return build_python_tree(files, kept, solution)
    tree: dict[str, Output] = {}
    for rel, item in files.items():
        part = owner(rel)
        if (left_out(rel) or (part is not None and part.name not in kept) or rel in (README, ANSWERS)
                or placed(rel, lang) is None):
            continue
        tree[rel] = output_of(item, kept)

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        tree[rel] = Output(text.encode("utf-8"), mode, text=text, origin="generated")

    if ANSWERS in files and files[ANSWERS].text is not None:
        reference = files[ANSWERS].text
        put(ANSWERS, reference if solution else answers_template(reference))
    if RUBRIC in tree and not solution:
        builtin = check_ids(tree[CHECKS].text or "") if CHECKS in tree else set()
        text, _ = visible_rubric(tree[RUBRIC].text or "", builtin)
        put(RUBRIC, text)
    absent = [p for p in PARTS.values()
              if p.kind == EXTENSION and p.name not in kept and (p.binaries or p.test_words)]
    if CONFTEST in tree and absent:
        conftest = tree[CONFTEST].text or ""
        if re.search(r"^def pytest_collection_modifyitems\b", conftest, re.M):
            raise GenerationError(
                f"{CONFTEST}:1: it defines pytest_collection_modifyitems, which the handout's "
                f"shim for left-out parts would replace: merge the two in conftest_shim() of "
                f"harness/handout.py")
        put(CONFTEST, conftest.rstrip("\n") + "\n" + conftest_shim(absent), tree[CONFTEST].mode)
    maxima = profile_maxima(tree[RUBRIC].text or "") if RUBRIC in tree else {}
    if RUBRIC in tree:
        targets = [(t.binary, t.profile, t.command) for t in contract.TARGETS]
        put(WORKFLOW, classroom_workflow(tree[RUBRIC].text or "", targets, "./lab build"))
    put(README, student_readme(tree, kept, solution, maxima))
    return tree


def build_python_tree(files: dict[str, Source], kept: set[str],
                      solution: bool) -> dict[str, Output]:
    """The Python track's tree: PYTHON_DIR's files at its top, the shared files beside them."""
    tree: dict[str, Output] = {}
    for rel, item in files.items():
        dest = placed(rel, "python")
        part = owner(rel)
        if dest is None or left_out(rel) or (part is not None and part.name not in kept):
            continue
        tree[dest] = output_of(item, kept)
    for needed in ("http_server.py", "lab", RUBRIC):
        if needed not in tree:
            raise GenerationError(f"{PYTHON_DIR}: the Python track needs {needed}")

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        tree[rel] = Output(text.encode("utf-8"), mode, text=text, origin="generated")

    if ANSWERS in files and files[ANSWERS].text is not None:
        put(ANSWERS, answers_template(files[ANSWERS].text))
    rubric = tree[RUBRIC].text or ""
    if not solution:
        builtin = check_ids(tree[CHECKS].text or "") if CHECKS in tree else set()
        rubric, _ = visible_rubric(rubric, builtin)
        put(RUBRIC, rubric)
    put(".gitignore", "__pycache__/\n*.pyc\n/build/\n/grade-results/\n")
    put(WORKFLOW, classroom_workflow(rubric, list(PYTHON_TARGETS), None))
    put(README, python_readme(tree, solution, profile_maxima(rubric)))
    return tree


def yaml_quoted(text: str) -> str:
    """@p text as a single-quoted YAML scalar."""
    return "'" + text.replace("'", "''") + "'"


def classroom_workflow(rubric_text: str, targets: list[tuple[str, str, str]],
                       build: str | None) -> str:
    """The GitHub Classroom workflow: one autograding-command-grader step per visible check of
    each graded program, worth the check's points, and the reporter that sends them to
    Classroom's gradebook. A step earns its points when its check passes whole."""
    checks = tomllib.loads(rubric_text).get("checks", {})
    steps, runners = [], []
    for name, profile, command in targets:
        short = re.sub(r"[^a-z0-9]+", "-", name.split()[0].lower()).strip("-")
        if "(" in name:
            short += "-" + re.sub(r"[^a-z0-9]+", "-", name.split("(", 1)[1].lower()).strip("-")
        limits = " --maxclient 12 --maxtotal 60" if profile == "limited" else ""
        for cid, entry in checks.items():
            if profile not in entry.get("profiles", []) or entry.get(
                    "visibility", "visible") != "visible" or not entry.get("points"):
                continue
            step_id = f"{short}-{cid}".replace("_", "-")
            points = entry["points"]
            run = (f"./lab grade --profile {profile}{limits} --checks {cid} --fail-under "
                   f"{points:g} --out grade-results/{step_id} --server-cmd \"{command}\"")
            minutes = max(2, int(entry.get("timeout", 60) * 3 // 60) + 1)
            steps += [
                f"      - name: {yaml_quoted(f'{name}: {cid}')}",
                f"        id: {step_id}",
                "        uses: classroom-resources/autograding-command-grader@v1",
                "        with:",
                f"          test-name: {yaml_quoted(f'{name}: {cid}')}",
                "          setup-command: ''",
                f"          command: {yaml_quoted(run)}",
                f"          timeout: {minutes}",
                f"          max-score: {points:g}",
            ]
            runners.append(step_id)
    if not runners:
        raise GenerationError(f"{RUBRIC}:1: no visible check with points for the workflow")
    out = [
        "# GitHub Classroom: every push grades the submission with the visible checks of",
        "# harness/rubric.toml, one step per check, and reports each check's points to Classroom's",
        "# gradebook (Classroom's autograding actions). A step earns its check's points only when",
        "# the check passes whole. The same commands run locally: see the README.",
        "# Written by ./lab handout; the reports of every step are kept as \"grade-results\".",
        "name: Autograding Tests",
        "on: [push, workflow_dispatch, repository_dispatch]",
        "permissions:",
        "  checks: write",
        "  actions: read",
        "  contents: read",
        "jobs:",
        "  run-autograding-tests:",
        "    runs-on: ubuntu-24.04",
        "    timeout-minutes: 30",
        "    if: github.actor != 'github-classroom[bot]'",
        "    steps:",
        "      - name: Checkout code",
        "        uses: actions/checkout@v4",
    ]
    if build:
        out += ["      - name: Build (installs the packages it needs with sudo)",
                f"        run: {build}"]
    out += steps
    out += ["      - name: Autograding Reporter",
            "        uses: classroom-resources/autograding-grading-reporter@v1",
            "        env:"]
    out += [f"          {r.upper()}_RESULTS: \"${{{{steps.{r}.outputs.result}}}}\"" for r in runners]
    out += ["        with:",
            f"          runners: {','.join(runners)}",
            "      - name: Keep the reports",
            "        if: ${{ !cancelled() }}",
            "        uses: actions/upload-artifact@v4",
            "        with:",
            "          name: grade-results",
            "          path: grade-results/"]
    return "\n".join(out) + "\n"


def normalized(line: str) -> str:
    return " ".join(line.split())


def distinctive(line: str) -> bool:
    """Whether a solution line says enough to count as leaked when it shows up elsewhere: not
    blank, not a comment, not just punctuation, and not too short to be anyone's."""
    text = normalized(line)
    return (len(text) >= 12 and re.search(r"[A-Za-z0-9]", text) is not None
            and not text.startswith(("//", "#", "/*", "*", "<!--")))


#: An identifier long enough to be the solution's own (``reclaimable``, ``try_acquire``).
IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_]\w{5,}(?!\w)")
#: A call or member access chain with its arguments: ``std::move(admission.slot)``.
EXPRESSION = re.compile(r"(?<![\w.>:])(?:[A-Za-z_]\w*(?:::|\.|->))*[A-Za-z_]\w*\([^()\n]*\)")


def fragments(line: str) -> set[str]:
    """The pieces of a code line that can leak on their own: its long identifiers, and its
    calls with their arguments that are long enough to be distinctive, whitespace normalised."""
    code = re.split(r"\s(?://|#)\s", " " + line, maxsplit=1)[0]  # not its trailing comment
    found = {m.group(0) for m in IDENTIFIER.finditer(code)}
    found |= {normalized(m.group(0)) for m in EXPRESSION.finditer(code)
              if len(normalized(m.group(0))) >= 14}
    return found


def find_leaks(files: dict[str, Source], kept: set[str], tree: dict[str, Output],
               lang: str = "cpp") -> list[str]:
    """Where the text of a replaced block shows up in @p tree.

    A line of a replaced block is secret when it is distinctive and the tree has no other
    reason to hold it: it is not among the plain lines of a code file the tree ships, nor in
    a stub the tree ships, nor in a kept block. Plain lines of Markdown files do not count: a
    guide that quotes the solution outside a block is exactly the leak to catch.

    Fragments count too: a long identifier, or a call with its arguments, of the code of an
    exercise's replaced block (a part of kind SOLUTION) that appears nowhere in the code the
    tree ships must not appear anywhere in it, a guide quoting ``std::move(admission.slot)``
    in a sentence included.
    """
    given: set[str] = set()
    given_code: list[str] = []
    replaced: list[Block] = []
    replaced_here: list[Block] = []  #: of the files this tree ships (fragments are per tree)
    for item in files.values():
        if item.parsed is None:
            continue
        shipped = placed(item.rel, lang) in tree
        code = item.parsed.syntax is not HTML
        for segment in item.parsed.segments:
            if isinstance(segment, str):
                if shipped and code:
                    given.add(normalized(segment))
                    given_code.append(segment)
                continue
            if shipped:
                given.update(normalized(line) for line in segment.stub or [])
                if code:
                    given_code.extend(segment.stub or [])
            if segment.part in kept:
                given.update(normalized(line) for _, line in segment.solution)
                if code:
                    given_code.extend(line for _, line in segment.solution)
            else:
                replaced.append(segment)
                if shipped:
                    replaced_here.append(segment)
    leaks = line_leaks(replaced, given, tree)
    return leaks + fragment_leaks(files, replaced_here, given_code, tree, leaks)


def fragment_leaks(files: dict[str, Source], replaced: list[Block], given_code: list[str],
                   tree: dict[str, Output], already: list[str]) -> list[str]:
    """The fragment half of find_leaks()."""
    shipped_code = normalized(" \n ".join(given_code))
    shipped_words = set(IDENTIFIER.findall(shipped_code))
    secret: dict[str, Block] = {}
    for block in replaced:
        if PARTS[block.part].kind != SOLUTION or files[block.path].parsed.syntax is HTML:
            continue
        for _, line in block.solution:
            if not distinctive(line):
                continue
            for piece in fragments(line):
                known = (piece in shipped_words if IDENTIFIER.fullmatch(piece)
                         else piece in shipped_code)
                if not known:
                    secret.setdefault(piece, block)
    if not secret:
        return []
    seen = {leak.split(": solution text", 1)[0] for leak in already}
    pattern = re.compile("|".join(
        rf"(?<![\w.]){re.escape(p)}(?!\w)" for p in sorted(secret, key=len, reverse=True)))
    leaks = []
    for rel in sorted(tree):
        out = tree[rel]
        if out.text is None:
            continue
        for number, line in enumerate(out.text.split("\n"), 1):
            if f"{rel}:{number}" in seen:
                continue
            hit = pattern.search(normalized(line))
            if hit:
                block = secret[hit.group(0)]
                leaks.append(f"{rel}:{number}: solution fragment of block {block.name} "
                             f"({block.path}) appears in the generated tree: {hit.group(0)!r}")
    return leaks


def line_leaks(replaced: list[Block], given: set[str], tree: dict[str, Output]) -> list[str]:
    """The whole-line half of find_leaks()."""
    secret: dict[str, tuple[Block, int]] = {}
    for block in replaced:
        for number, line in block.solution:
            text = normalized(line)
            if distinctive(line) and text not in given:
                secret.setdefault(text, (block, number))
    leaks = []
    for rel in sorted(tree):
        out = tree[rel]
        if out.text is None or not secret:
            continue
        for number, line in enumerate(out.text.split("\n"), 1):
            hit = secret.get(normalized(line))
            if hit:
                block, origin = hit
                leaks.append(f"{rel}:{number}: solution text of block {block.name} "
                             f"({block.path}:{origin}) appears in the generated tree: "
                             f"{normalized(line)!r}")
    return leaks


def dead_links(tree: dict[str, Output]) -> list[str]:
    """Relative Markdown links of the tree whose target it does not hold (notes, not errors)."""
    notes = []
    for rel in sorted(tree):
        out = tree[rel]
        if not rel.endswith(".md") or out.text is None:
            continue
        for number, line, in_code in fenced_lines(out.text):
            if in_code:
                continue
            for target in re.findall(r"\]\(([^)\s]+)\)", line):
                if re.match(r"^([a-z]+:|#)", target):
                    continue
                path = os.path.normpath(os.path.join(os.path.dirname(rel), target.split("#")[0]))
                if path not in tree and not any(k.startswith(path + "/") for k in tree):
                    notes.append(f"{rel}:{number}: link to {target}, which this tree does not hold")
    return notes


def write_tree(dest: Path, tree: dict[str, Output]) -> None:
    for rel in sorted(tree):
        out = tree[rel]
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if out.symlink:
            os.symlink(out.data.decode(), path)
            continue
        path.write_bytes(out.data)
        os.chmod(path, out.mode)


def git_commit(dest: Path, message: str) -> str:
    """Makes @p dest a git repository with one commit by "lab handout"; returns its id.

    The user's git configuration is ignored (no signing, no hooks, no template), and nothing
    touches the network."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "lab handout", "GIT_AUTHOR_EMAIL": "lab-handout@localhost",
           "GIT_COMMITTER_NAME": "lab handout", "GIT_COMMITTER_EMAIL": "lab-handout@localhost",
           "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(dest), "-c", "core.hooksPath=/dev/null",
                              "-c", "commit.gpgsign=false", *args],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise GenerationError(f"{dest}: git {' '.join(args)} failed: {run.stderr.strip()}")
        return run.stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", message)
    return git("rev-parse", "--short", "HEAD")


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


def check_destination(dest: Path, source: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GenerationError(f"{dest}: exists and is not an empty directory; remove it or "
                              f"name another")
    inside = dest.resolve() == source or source in dest.resolve().parents
    if inside:
        ignored = shutil.which("git") and subprocess.run(
            ["git", "-C", str(source), "check-ignore", "-q", str(dest.resolve())]).returncode == 0
        if not ignored:
            raise GenerationError(f"{dest}: inside the reference, where the next handout would "
                                  f"pick it up; write it outside (or under build/)")


def describe(kept: set[str], solution: bool) -> str:
    words = []
    for part in PARTS.values():
        if part.kind == SOLUTION and part.readme:
            words.append(f"{part.name} {'solved' if solution else 'stubbed'}")
        elif part.kind == EXTENSION:
            words.append(f"{part.name} {'included' if part.name in kept else 'left out'}")
    return ", ".join(words)


# ----------------------------------------------------------------------------------------------
# Command line
# ----------------------------------------------------------------------------------------------


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def display(source: Path, rel: str) -> str:
    """@p rel as a path from the current directory when the source is beneath it."""
    absolute = source / rel
    shown = os.path.relpath(absolute)
    return absolute.as_posix() if shown.startswith("..") else shown


def parse_args(argv: list[str]) -> argparse.Namespace:
    extensions = [p for p in PARTS.values() if p.kind == EXTENSION]
    parser = argparse.ArgumentParser(
        prog="./lab handout",
        description="Write a student handout of the kit to DIR: the reference with each "
                    "solution block replaced by its stub, the questions without answers, the "
                    "visible checks only, a student README, as a git repository with one "
                    "commit. See docs/instructor.md.",
        epilog="parts:\n" + "\n".join(f"  {p.name:<13} {p.kind:<11} {p.summary}"
                                      for p in PARTS.values())
               + "\n\nexit status: 0 done, 1 malformed markers, leaked solution text or an "
                 "unusable DIR (FILE:LINE: message on stderr), 2 usage errors",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", nargs="?", metavar="DIR", type=Path,
                        help="where to write the tree (must not exist, or be empty)")
    parser.add_argument("--solution", action="store_true",
                        help="keep the solutions: the instructor's private tree, which the "
                             "autograder uses (answers and hidden checks included)")
    parser.add_argument("--with", dest="extensions", action="append", default=[],
                        metavar="PART", choices=[p.name for p in extensions],
                        help="include an extension, whole ("
                             + " or ".join(p.name for p in extensions)
                             + "); repeatable; extensions are left out by default")
    parser.add_argument("--check", action="store_true",
                        help="only check the markers of the reference and list its blocks")
    parser.add_argument("--lang", choices=("cpp", "python"), default="cpp",
                        help="the track: cpp (default) the C++ stages; python the Python "
                             "starter (http_server.py, the sequential server given, the "
                             "thread and the limits to write), graded with the same checks")
    parser.add_argument("--no-git", action="store_true", help="do not make DIR a git repository")
    parser.add_argument("--source", type=Path, default=REPO, metavar="DIR",
                        help="the reference to cut from (default: this kit)")
    args = parser.parse_args(argv)
    if not args.check and args.dest is None:
        parser.error("DIR is required (or --check)")
    if args.lang == "python" and args.extensions:
        parser.error("--with adds parts of the C++ track; the Python track has none")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    source = args.source.resolve()
    files, errors = load(source)
    for error in errors:
        print(f"{display(source, error.path)}:{error.line}: {error.message}", file=sys.stderr)
    if errors:
        print(f"lab handout: {len(errors)} marker error(s); nothing written", file=sys.stderr)
        return 1
    blocks = [b for item in files.values() if item.parsed for b in item.parsed.blocks]
    if args.check:
        for block in blocks:
            stub = f"stub of {plural(len(block.stub), 'line')}" if block.stub else "no stub"
            print(f"{display(source, block.path)}:{block.line}: {block.name} "
                  f"({plural(len(block.solution), 'line')}, {stub})")
        print(f"lab handout: {len(blocks)} blocks, markers well-formed")
        return 0
    kept = kept_parts(args.solution, args.extensions)
    try:
        check_destination(args.dest, source)
        tree = build_tree(files, kept, args.solution, args.lang)
        leaks = find_leaks(files, kept, tree, args.lang)
        if leaks:
            for leak in leaks:
                print(leak, file=sys.stderr)
            raise GenerationError(f"{len(leaks)} line(s) of solution text would leak; mark the "
                                  f"text that holds them, or reword it")
        for note in dead_links(tree):
            print(f"lab handout: note: {note}", file=sys.stderr)
        args.dest.mkdir(parents=True, exist_ok=True)
        write_tree(args.dest, tree)
        kind = "solution tree" if args.solution else "student handout"
        if args.lang == "python":
            kind = "Python " + kind
        commit = ""
        if not args.no_git:
            commit = git_commit(args.dest, (
                f"Concurrent HTTP server lab: {kind}\n\n"
                f"Cut with ./lab handout{' --solution' if args.solution else ''}"
                + (" --lang python" if args.lang == "python" else "")
                + "".join(f" --with {name}" for name in args.extensions)
                + f" from the reference at {reference_version(source)}.\n"
                f"Parts: {describe(kept, args.solution)}.\n"))
    except GenerationError as error:
        print(f"lab handout: {error}", file=sys.stderr)
        return 1
    replaced = sum(1 for b in blocks if b.part not in kept)
    print(f"lab handout: wrote the {kind} to {args.dest} ({describe(kept, args.solution)}): "
          f"{len(tree)} files, {replaced} of {len(blocks)} blocks replaced by their stubs"
          + (f", git commit {commit}" if commit else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
