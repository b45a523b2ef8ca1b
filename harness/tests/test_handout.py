"""Tests of the handout generator (harness/handout/, ``./lab handout``).

- the reference's solution markers are well-formed, and each kind of malformed marker stops
  the generation with FILE:LINE: message, exit status 1 and nothing written;
- blocks render as they should: stubs uncommented with their indentation, a removed block
  takes one blank line with it, parts follow --solution and --with, files keep their modes,
  the tree is a git repository with one commit by "lab handout";
- no solution text leaks: every distinctive line of a replaced block is absent from the
  handout, and a guide that quotes the solution outside a block stops the generation;
- the handout holds what a student needs and nothing more: no stage 4, no benchmark figures,
  no hidden checks or hidden rubric entries, questions without answers, a student README;
- the round trip (building, unit tests and grading both trees) is tested from the student's
  side, with the trees' own commands, in test_student_cpp.py and test_student_python.py.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import textwrap
import tomllib
from pathlib import Path

import pytest

from conftest import HARNESS_DIR, REPO_DIR

import handout  # harness/handout/: its parent folder is on sys.path (see conftest)

GENERATOR = HARNESS_DIR / "handout"
PYTHON = sys.executable
#: Lines of the reference's solutions that must never reach a handout, whatever else changes.
KNOWN_SOLUTION_LINES = [
    "auto admission = limiter.try_acquire(connection->peer_ip);",
    "const auto self = running_.emplace(running_.end());",
    "if (count->second >= max_per_client_) return {Verdict::client_full, {}};",
    "if (limiter_ != nullptr) std::exchange(limiter_, nullptr)->release(entry_);",
]


def skip_under_sanitizers():
    """Tests whose outcome does not depend on the build under test, because they build trees
    of their own with the default preset (test_student_cpp.py, test_autograde.py) or run no
    C++ at all (test_student_python.py): run them with the plain build, not again under each
    sanitizer preset."""
    bin_dir = os.environ.get("LAB_BIN_DIR")
    cache = Path(bin_dir).parent / "CMakeCache.txt" if bin_dir else None
    if cache is not None and cache.is_file():
        found = re.search(r"^LAB_SANITIZE:\w+=(.*)$", cache.read_text(errors="replace"), re.M)
        if found and found[1].strip():
            pytest.skip(f"this runs with the plain build only, not under "
                        f"LAB_SANITIZE={found[1].strip()} (it builds its own trees)")


def run_generator(*args: str, cwd: Path = REPO_DIR, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([PYTHON, str(GENERATOR), *args], cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL)


def generate(dest: Path, *args: str) -> subprocess.CompletedProcess:
    """Cuts a tree of the kit into @p dest; fails the test if the generator fails."""
    proc = run_generator(*args, str(dest))
    assert proc.returncode == 0, f"./lab handout {' '.join(args)} {dest} failed:\n{proc.stderr}"
    return proc


def files_of(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*")
            if p.is_file() and ".git" not in p.relative_to(root).parts}


def write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text).lstrip("\n"))
    path.chmod(mode)


@pytest.fixture(scope="module")
def handout_tree(tmp_path_factory) -> Path:
    """The default handout of the kit, without git (the fast tests only read it)."""
    dest = tmp_path_factory.mktemp("handout") / "tree"
    generate(dest, "--no-git")
    return dest


# --------------------------------------------------------------------------------------------
# Markers
# --------------------------------------------------------------------------------------------


def test_reference_markers_are_well_formed():
    proc = run_generator("--check")
    assert proc.returncode == 0, proc.stderr
    names = re.findall(r": (\S+/\S+) \(", proc.stdout)
    parts = {name.split("/")[0] for name in names}
    # The exercises the issue asks for are marked, and so are the parts a handout leaves out.
    assert {"stage2", "stage3", "stage4", "reclaim-idle", "instructor"} <= parts, proc.stdout
    assert "stage2/spawn" in names and "stage3/try-acquire" in names and "stage3/admission" in names


def test_lab_runs_the_generator():
    proc = subprocess.run([str(REPO_DIR / "lab"), "handout", "--check"], cwd=REPO_DIR,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "markers well-formed" in proc.stdout
    proc = subprocess.run([str(REPO_DIR / "lab"), "handout", "--with", "nonsense", "x"],
                          cwd=REPO_DIR, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "invalid choice" in proc.stderr


# (file name, text, line of the error, words the message must hold). Each marker line is built
# with the file's own comment syntax so that this file holds no marker of its own.
C, H, M, E = "//", "#", "<!--", "-->"
MALFORMED = [
    ("a.cpp", f"int a;\n{C} BEGIN SOLUTION stage3/x\nint b;\n", 2, "never closed"),
    ("a.cpp", f"int a;\n{C} END SOLUTION\n", 2, "END SOLUTION without BEGIN"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage3/x\n{C} BEGIN SOLUTION stage3/y\nint b;\n{C} END SOLUTION\n",
     2, "do not nest"),
    ("a.cpp", f"{C} BEGIN SOLUTION\nint b;\n{C} END SOLUTION\n", 1, "without a name"),
    ("a.cpp", f"{C} BEGIN SOLUTION nopart\nint b;\n{C} END SOLUTION\n", 1, "bad block name"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage9/x\nint b;\n{C} END SOLUTION\n", 1, "unknown part"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage3/x\nint b;\n{C} END SOLUTION\n"
              f"{C} BEGIN SOLUTION stage3/x\nint c;\n{C} END SOLUTION\n", 4, "used twice"),
    ("a.cpp", f"int a;\n{C} STUB\n", 2, "STUB outside"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage3/x\nint b;\n{C} STUB\n{C} int c;\n{C} STUB\n{C} END SOLUTION\n",
     5, "second STUB"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage3/x\nint b;\n{C} STUB\nint c;\n{C} END SOLUTION\n",
     4, "not a C++ comment"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage3/x\nint b;\n{C} END SOLUTION stage3/y\n", 3, "closes block"),
    ("a.cpp", f"{C} Begin Solution stage3/x\nint b;\n", 1, "malformed marker"),
    ("a.cpp", f"{C} BEGIN SOLUTIONS stage3/x\nint b;\n", 1, "malformed marker"),
    ("a.cpp", f"{C} BEGIN SOLUTION stage3/x\n{C} END SOLUTION\n", 1, "is empty"),
    ("CMakeLists.txt", f"{H} BEGIN SOLUTION stage4/x\nadd_subdirectory(x)\n", 1, "never closed"),
    ("guide.md", f"text\n{M} BEGIN SOLUTION stage3/x\nmore\n", 2, "not closed with -->"),
    ("data.json", '{"a": 1}\n"BEGIN SOLUTION x"\n', 2, "comment syntax is not known"),
]


@pytest.mark.parametrize("name,text,line,words", MALFORMED,
                         ids=[f"{case[0]}-{case[3].replace(' ', '_')}" for case in MALFORMED])
def test_malformed_marker_fails_with_file_and_line(tmp_path, name, text, line, words):
    source = tmp_path / "src"
    write(source, "ok.cpp", f"int f() {{\n    {C} BEGIN SOLUTION stage2/f\n    return 1;\n"
                            f"    {C} STUB\n    {C} return 0;\n    {C} END SOLUTION\n}}\n")
    (source / name).write_text(text)
    dest = tmp_path / "out"
    proc = run_generator("--source", str(source), str(dest), cwd=tmp_path)
    assert proc.returncode == 1, (proc.stdout, proc.stderr)
    errors = [l for l in proc.stderr.splitlines() if l.startswith(f"src/{name}:")]
    assert errors, f"no src/{name}:LINE: error in {proc.stderr!r}"
    assert errors[0].startswith(f"src/{name}:{line}: "), errors
    assert words in errors[0], errors
    assert not dest.exists(), "a malformed marker must stop the generation before it writes"
    # --check reports the same error.
    check = run_generator("--source", str(source), "--check", cwd=tmp_path)
    assert check.returncode == 1 and errors[0] in check.stderr


# --------------------------------------------------------------------------------------------
# Rendering, on a small made-up reference
# --------------------------------------------------------------------------------------------


@pytest.fixture
def small_reference(tmp_path) -> Path:
    source = tmp_path / "src"
    write(source, "lib/f.cpp", f"""
        int f(int x) {{
            {C} BEGIN SOLUTION stage3/f
            return x * 42 + secret_offset();
            {C} STUB
            {C} // TODO(student): compute f.
            {C} static_cast<void>(x);
            {C}     return 0;
            {C} END SOLUTION
        }}
        """)
    write(source, "CMakeLists.txt", f"""
        add_subdirectory(lib)
        {H} BEGIN SOLUTION stage4/build
        add_subdirectory(stage4_event)
        {H} END SOLUTION

        add_subdirectory(docs)
        """)
    write(source, "docs/guide.md", f"""
        # Guide

        {M} BEGIN SOLUTION stage3/guide {E}
        The answer is in the details of the multiplication by 42.
        {M} STUB {E}
        {M} Work it out yourself. {E}
        {M} END SOLUTION {E}

        The end.
        """)
    write(source, "tool.sh", "#!/bin/sh\necho tool\n", mode=0o755)
    write(source, "stage4_event/main.cpp", "int main() { return 0; }\n")
    write(source, "ANSWERS.md", "# Answers\n\n## 1. Why?\n\nBecause of the secret offset.\n\n"
                                "```sh\n## 2. not a question, a shell comment\n```\n\n"
                                "## 2. How?\n\nCarefully.\n")
    return source


def test_handout_and_solution_of_a_small_reference(tmp_path, small_reference):
    stubbed, solved, extended = tmp_path / "stubbed", tmp_path / "solved", tmp_path / "extended"
    for dest, args in ((stubbed, ()), (solved, ("--solution",)), (extended, ("--with", "stage4"))):
        proc = run_generator("--source", str(small_reference), *args, str(dest), cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr

    assert (stubbed / "lib/f.cpp").read_text() == (
        "int f(int x) {\n"
        "    // TODO(student): compute f.\n"
        "    static_cast<void>(x);\n"
        "        return 0;\n"  # indentation after the comment marker is kept
        "}\n")
    assert (solved / "lib/f.cpp").read_text() == "int f(int x) {\n    return x * 42 + secret_offset();\n}\n"
    assert (extended / "lib/f.cpp").read_text() == (stubbed / "lib/f.cpp").read_text()
    # A block without a stub disappears with one blank line; --with stage4 keeps it.
    assert (stubbed / "CMakeLists.txt").read_text() == "add_subdirectory(lib)\n\nadd_subdirectory(docs)\n"
    assert (solved / "CMakeLists.txt").read_text() == "add_subdirectory(lib)\n\nadd_subdirectory(docs)\n"
    assert "add_subdirectory(stage4_event)\n" in (extended / "CMakeLists.txt").read_text()
    assert "# BEGIN" not in (extended / "CMakeLists.txt").read_text()
    # Markdown stubs are HTML comments.
    assert (stubbed / "docs/guide.md").read_text() == "# Guide\n\nWork it out yourself.\n\nThe end.\n"
    assert "multiplication by 42" in (solved / "docs/guide.md").read_text()
    # A part's files follow the part.
    assert not (stubbed / "stage4_event").exists() and not (solved / "stage4_event").exists()
    assert (extended / "stage4_event/main.cpp").is_file()
    # Modes are kept.
    assert os.stat(stubbed / "tool.sh").st_mode & stat.S_IXUSR
    # ANSWERS.md: the questions only (a heading inside a code block is not one); the answers
    # only in the solution tree.
    answers = (stubbed / "ANSWERS.md").read_text()
    assert re.findall(r"^## .*", answers, re.M) == ["## 1. Why?", "## 2. How?"]
    assert answers.count("Your answer:") == 2 and "secret offset" not in answers
    assert "secret offset" in (solved / "ANSWERS.md").read_text()
    assert "TODO(student)" in (stubbed / "README.md").read_text()
    # One commit, by "lab handout", and nothing left to commit.
    log = subprocess.run(["git", "-C", str(stubbed), "log", "--format=%an|%ae|%s"],
                         capture_output=True, text=True, check=True).stdout.splitlines()
    assert len(log) == 1 and log[0].startswith("lab handout|"), log
    status = subprocess.run(["git", "-C", str(stubbed), "status", "--porcelain"],
                            capture_output=True, text=True, check=True).stdout
    assert status == ""


def test_leaked_solution_text_stops_the_generation(tmp_path, small_reference):
    # A guide that quotes the solution outside any block.
    write(small_reference, "docs/notes.md", "Hint:\n\n    return x * 42 + secret_offset();\n")
    dest = tmp_path / "out"
    proc = run_generator("--source", str(small_reference), str(dest), cwd=tmp_path)
    assert proc.returncode == 1
    assert re.search(r"^docs/notes\.md:3: solution text of block stage3/f \(lib/f\.cpp:3\)",
                     proc.stderr, re.M), proc.stderr
    assert not dest.exists()
    # The solution tree holds the solution anyway: nothing leaks there.
    assert run_generator("--source", str(small_reference), "--solution", str(dest),
                         cwd=tmp_path).returncode == 0


def test_leaked_solution_fragment_stops_the_generation(tmp_path, small_reference):
    """A sentence that quotes a piece of a solution line (an identifier or a call found only
    in the block) leaks as surely as the whole line."""
    write(small_reference, "docs/notes.md", "Hint: the answer adds `secret_offset()` to x.\n")
    dest = tmp_path / "out"
    proc = run_generator("--source", str(small_reference), str(dest), cwd=tmp_path)
    assert proc.returncode == 1
    assert re.search(r"^docs/notes\.md:1: solution fragment of block stage3/f \(lib/f\.cpp\)"
                     r".*'secret_offset", proc.stderr, re.M), proc.stderr
    assert not dest.exists()
    # Words the shipped code holds are no secret: a guide may name them.
    write(small_reference, "docs/notes.md", "Hint: `f(int x)` returns an int.\n")
    assert run_generator("--source", str(small_reference), str(dest), cwd=tmp_path).returncode == 0


def test_destination_must_be_new_or_empty(tmp_path, small_reference):
    dest = tmp_path / "out"
    dest.mkdir()
    (dest / "keep.txt").write_text("mine\n")
    proc = run_generator("--source", str(small_reference), str(dest), cwd=tmp_path)
    assert proc.returncode == 1 and "not an empty directory" in proc.stderr
    assert (dest / "keep.txt").read_text() == "mine\n"


def test_hidden_rubric_entries_are_dropped():
    rubric = textwrap.dedent("""
        # header comment
        [checks.index_html]
        points = 10
        visibility = "visible"

        [checks.secret_one]
        points = 5
        visibility = "hidden"

        [checks.from_hidden_dir]
        points = 5

        [checks.later]
        points = 1
        visibility = "after_due_date"
        """)
    text, dropped = handout.visible_rubric(rubric, builtin={"index_html"})
    assert sorted(dropped) == ["from_hidden_dir", "later", "secret_one"]
    assert "# header comment" in text and "[checks.index_html]" in text
    assert "secret_one" not in text and "from_hidden_dir" not in text and "later" not in text
    # A built-in check cannot be hidden by the rubric alone: its code would ship.
    with pytest.raises(handout.GenerationError, match=r"rubric\.toml:7: check 'secret_one'"):
        handout.visible_rubric(rubric, builtin={"index_html", "secret_one"})


# --------------------------------------------------------------------------------------------
# The kit's own handout
# --------------------------------------------------------------------------------------------


#: The parts whose blocks keep the reference's lines in the default (C++) handout: its track's.
DEFAULT_KEPT = handout.parts.kept_parts(solution=False, extensions=[], lang="cpp")


def replaced_blocks(kept: set[str]) -> list[handout.Block]:
    files, errors = handout.load(REPO_DIR)
    assert not errors
    return [b for item in files.values() if item.parsed for b in item.parsed.blocks
            if b.part not in kept]


def test_no_solution_text_leaks(handout_tree):
    """Every distinctive line of every replaced block (not blank, not braces or a comment, and
    not also written outside the blocks of the reference's code or in a stub) is absent."""
    files, _ = handout.load(REPO_DIR)
    outside: set[str] = set()
    for item in files.values():
        if item.parsed is None:
            continue
        for segment in item.parsed.segments:
            if isinstance(segment, str):
                if item.parsed.syntax is not handout.HTML:  # a guide quoting code is no excuse
                    outside.add(" ".join(segment.split()))
            else:
                outside.update(" ".join(line.split()) for line in segment.stub or [])
    lines_of_handout: dict[str, str] = {}
    for rel in files_of(handout_tree):
        try:
            text = (handout_tree / rel).read_text()
        except UnicodeDecodeError:
            continue
        for number, line in enumerate(text.split("\n"), 1):
            lines_of_handout.setdefault(" ".join(line.split()), f"{rel}:{number}")
    checked = 0
    for block in replaced_blocks(kept=DEFAULT_KEPT):
        for number, line in block.solution:
            text = " ".join(line.split())
            if (not re.search(r"[A-Za-z0-9]", text) or text.startswith(("//", "#", "<!--", "*"))
                    or len(text) < 12 or text in outside):
                continue
            checked += 1
            assert text not in lines_of_handout, (
                f"{block.path}:{number} (block {block.name}) leaks into "
                f"{lines_of_handout[text]}: {text!r}")
    assert checked > 50, f"only {checked} distinctive solution lines: is the test still looking?"
    for line in KNOWN_SOLUTION_LINES:
        assert line not in lines_of_handout, f"{line!r} in {lines_of_handout.get(line)}"


def test_handout_contents(handout_tree):
    files = files_of(handout_tree)
    for absent in ("stage4_event/CMakeLists.txt", "docs/stage4.md", "harness/tests/test_event.py",
                   "harness/tests/test_reclaim.py", "stage3_limited/test/reclaim_test.cpp",
                   "docs/bench/summary.md", "harness/tests/test_grader.py",
                   "harness/tests/testdata/hidden_checks/subdir_index.py",
                   "harness/handout/__main__.py", "harness/tests/test_handout.py",
                   "harness/grader/batch.py", "harness/grader/similarity.py",
                   "harness/grader/submission.py", "docs/instructor.md"):
        assert absent not in files, absent
    for present in ("stage1_sequential/main.cpp", "common/src/request.cpp",
                    "harness/grader/__main__.py", "harness/grader/checks.py",
                    "harness/grader/rubric.toml", "harness/bench/shaped.py",
                    "harness/guidetest/__main__.py", "harness/tests/conftest.py", "docs/stage1.md",
                    "docs/stage2.md", "docs/stage3.md", "stage3_limited/test/limiter_test.cpp",
                    "www/index.html", "lab", "ANSWERS.md", "README.md", ".gitignore"):
        assert present in files, present
    # Stage 1 and the shared core are handed out as they are (bar the stub of spawn()).
    for rel in files:
        if rel.startswith(("stage1_sequential/", "common/src/", "www/")):
            assert (handout_tree / rel).read_bytes() == (REPO_DIR / rel).read_bytes(), rel
    assert os.access(handout_tree / "lab", os.X_OK)
    # No marker is left, and the instructor's command is gone from ./lab.
    for rel in files:
        data = (handout_tree / rel).read_bytes()
        assert b"BEGIN SOLUTION" not in data and b"END SOLUTION" not in data, rel
    lab = (handout_tree / "lab").read_text()
    assert "handout" not in lab
    cmake = (handout_tree / "CMakeLists.txt").read_text()
    assert "stage4_event" not in cmake and "add_subdirectory(stage3_limited)" in cmake
    # The reclaim section of the stage 3 guide is gone, the rest is there.
    guide = (handout_tree / "docs/stage3.md").read_text()
    assert "## Reclaiming idle slots" not in guide and "## The reset problem" in guide
    assert "TODO(student)" in guide


def test_handout_questions_rubric_and_readme(handout_tree):
    reference = (REPO_DIR / "ANSWERS.md").read_text()
    questions = re.findall(r"^## \d+\..*$", reference, re.M)
    answers = (handout_tree / "ANSWERS.md").read_text()
    assert re.findall(r"^## .*$", answers, re.M) == questions
    assert answers.count("Your answer:") == len(questions)
    body = [l for l in reference.splitlines() if len(l) > 40 and not l.startswith("#")]
    assert not [l for l in body if l in answers.splitlines()], "answer text in the handout"

    rubric = tomllib.loads((handout_tree / "harness/grader/rubric.toml").read_text())["checks"]
    assert rubric and all(entry.get("visibility", "visible") == "visible" for entry in rubric.values())

    readme = (handout_tree / "README.md").read_text()
    for needed in ("build/bin/stage2_threaded", "build/bin/stage3_limited", "./lab build",
                   "./lab grade --profile limited", "-maxclient {maxclient}", "TODO(student)",
                   "threads.hpp", "limiter.cpp", "git bundle"):
        assert needed in readme, needed
    log = subprocess.run(["git", "-C", str(handout_tree), "rev-parse"], capture_output=True)
    assert log.returncode != 0, "--no-git wrote a repository"


def test_handout_harness_leaves_out_stage4(handout_tree):
    """The handout's pytest harness collects no test of the parts it leaves out, and still
    collects the rest without errors."""
    proc = subprocess.run([PYTHON, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "harness/tests"], cwd=handout_tree, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    collected = [l for l in proc.stdout.splitlines() if "::" in l]
    assert any("stage1" in l for l in collected) and any("stage3" in l for l in collected)
    assert not [l for l in collected if "stage4" in l or "reclaim" in l], collected


def test_with_extensions(tmp_path):
    dest = tmp_path / "tree"
    generate(dest, "--no-git", "--with", "stage4", "--with", "reclaim-idle")
    files = files_of(dest)
    assert {"stage4_event/main.cpp", "harness/tests/test_event.py", "docs/stage4.md",
            "harness/tests/test_reclaim.py", "stage3_limited/test/reclaim_test.cpp"} <= files
    assert "add_subdirectory(stage4_event)" in (dest / "CMakeLists.txt").read_text()
    assert "## Reclaiming idle slots" in (dest / "docs/stage3.md").read_text()
    limiter = (dest / "stage3_limited/limiter.cpp").read_text()
    assert "entry.reclaimable.reclaim()" in limiter  # the reclaim is given...
    assert "TODO(student): take a slot" in limiter  # ...the admission is still the student's
    assert "Added by ./lab handout" not in (dest / "harness/tests/conftest.py").read_text()


def test_stubs_are_clang_format_clean(handout_tree):
    if shutil.which("clang-format") is None:
        pytest.skip("clang-format is not installed (./lab lint installs it)")
    stubbed = sorted({b.path for b in replaced_blocks(kept=DEFAULT_KEPT)
                      if b.path.endswith((".cpp", ".hpp")) and (handout_tree / b.path).exists()})
    assert stubbed
    proc = subprocess.run(["clang-format", "--dry-run", "-Werror", *stubbed], cwd=handout_tree,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
