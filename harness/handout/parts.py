"""The parts of the kit a handout stubs, leaves out or keeps, and where files go: the tables
the rest of the generator reads (the docstring of the package explains the scheme)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from grader import contract  # the submission contract lives with the grader


REPO = Path(__file__).resolve().parents[2]


#: kind of a part: when the reference's lines of its blocks (and its files) are kept.
SOLUTION = "solution"  # only in --solution trees (the exercises, the autograder's secrets)
EXTENSION = "extension"  # only with --with PART, in handouts and solution trees alike
INSTRUCTOR = "instructor"  # never: the instructor's own tooling
TRACK = "track"  # in the trees of its language only (the C++ stages' commands in shared pages)


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
         "harness/tests/testdata/hidden_checks/) and the grader's own tests, which load them",
         paths=("harness/hidden/", "harness/tests/testdata/hidden_checks/",
                "harness/tests/test_grader.py", "harness/tests/testdata/quirky_server.py")),
    Part("stage4", EXTENSION,
         "stage 4, the event-driven server: stage4_event/, its tests and docs/stage4.md "
         "(no solution markers: included whole; it runs on the student's stage 3 limiter)",
         paths=("stage4_event/", "harness/tests/test_event.py", "docs/stage4.md",
                "docs/diagrams/stage4.dot"),
         binaries=("stage4_event",), test_words=("stage4",),
         readme=(
             "**Stage 4, the event-driven server**, is included complete, for comparison: "
             "`stage4_event/` serves every connection from a few event loops instead of a thread "
             "each, with stage 3's limits. It uses your `ConnectionLimiter`, so it refuses "
             "everyone until stage 3 is done. Its guide page is [docs/stage4.md](docs/stage4.md).")),
    Part("reclaim-idle", EXTENSION,
         "--reclaim-idle: the limiter's reclaim of idle slots, its unit and harness tests and its "
         "section of docs/stage3.md",
         paths=("stage3_limited/test/reclaim_test.cpp", "harness/tests/test_reclaim.py"),
         test_words=("reclaim",),
         readme=(
             "**`--reclaim-idle`** is included: when the server is full, the limiter takes the slot "
             "of the oldest connection still waiting for its request head "
             "(`reclaim_oldest_locked()`, given) instead of refusing the newcomer. Your "
             "`try_acquire()` must call it when the total limit is reached and the option is on; "
             "`stage3_limited/test/reclaim_test.cpp` and `harness/tests/test_reclaim.py` check it, and "
             "[docs/stage3.md](docs/stage3.md) describes it.")),
    Part("cpp", TRACK,
         "what only the C++ track runs, in pages both tracks carry (the stages' build/bin "
         "commands): kept in C++ trees; a Python tree (--lang python) gets the block's stub"),
    Part("instructor", INSTRUCTOR,
         "the handout generator (harness/handout/), the batch and Gradescope grading "
         "(grader/batch.py), the similarity ranking (grader/similarity.py), their tests (the "
         "hostile submissions' payload too) and the instructor's page",
         paths=("harness/handout/", "harness/tests/test_handout.py", "docs/instructor.md",
                "harness/tests/studentside.py", "harness/tests/test_student_cpp.py",
                "harness/tests/test_student_python.py",
                "harness/grader/batch.py", "harness/grader/submission.py",
                "harness/tests/test_autograde.py",
                "harness/grader/similarity.py", "harness/tests/test_similarity.py",
                "harness/tests/testdata/hostile_payload.py")),
)}

#: Left out of every generated tree: the reference's benchmark figures answer question 5.
LEFT_OUT = ("docs/bench/",)

#: The Python track's own files: left out of C++ trees; in a Python tree (--lang python) they
#: go to its top directory (python/http_server.py → http_server.py, python/docs/ → docs/).
PYTHON_DIR = "python/"
#: What a Python tree takes from the rest of the kit, besides PYTHON_DIR: the sample site; the
#: grader with its rubric and manual (its instructor-only modules go with that part) and the
#: flawed server its manual grades; of the benchmarks only question 5's (``harness/bench
#: shaped``) and the pieces it imports; and the guide's runner (./lab doctest) with the tool
#: its blocks use.
PYTHON_SHARED = ("www/", "harness/subcommands.py", "harness/grader/",
                 "harness/bench/__init__.py", "harness/bench/__main__.py", "harness/bench/shaped.py",
                 *(f"harness/bench/lib/{name}.py" for name in (
                     "__init__", "client", "ctxsw", "machine", "servers", "shaper", "site",
                     "spans", "stats")),
                 "harness/tests/testdata/flawed_server.py",
                 "harness/guidetest/",
                 "docs/tools/hold.py")
#: The programs a Python tree's grader runs: (name, profile, --server-cmd), one file for both.
PYTHON_TARGETS = (
    ("http_server.py (threaded)", "threaded", "python3 http_server.py -p {port}"),
    ("http_server.py (limited)", "limited",
     "python3 http_server.py -p {port} -maxclient {maxclient} -maxtotal {maxtotal}"),
)

#: Written by the generator instead of copied.
README = "README.md"
ANSWERS = "ANSWERS.md"
RUBRIC = "harness/grader/rubric.toml"
CONFTEST = "harness/tests/conftest.py"
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


class GenerationError(Exception):
    """The tree cannot be generated; the message says where and why."""


def owner(rel: str) -> Part | None:
    """The part whose paths hold file @p rel, if any."""
    for part in PARTS.values():
        for path in part.paths:
            if rel == path or (path.endswith("/") and rel.startswith(path)):
                return part
    return None


def left_out(rel: str) -> bool:
    return any(rel == p or (p.endswith("/") and rel.startswith(p)) for p in LEFT_OUT)


def kept_parts(solution: bool, extensions: list[str], lang: str = "cpp") -> set[str]:
    """The parts whose blocks keep the reference's lines, and whose files are included."""
    kept = set(extensions)
    if lang in PARTS and PARTS[lang].kind == TRACK:
        kept.add(lang)  # the blocks only this language's track runs
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


def describe(kept: set[str], solution: bool) -> str:
    words = []
    for part in PARTS.values():
        if part.kind == SOLUTION and part.readme:
            words.append(f"{part.name} {'solved' if solution else 'stubbed'}")
        elif part.kind == EXTENSION:
            words.append(f"{part.name} {'included' if part.name in kept else 'left out'}")
    return ", ".join(words)
