"""The C++ handout tested from the student's side (slow: builds two trees).

The kit cuts a student handout (stubs) and a solution tree with ./lab handout, then, inside
each, runs what the handout's own README lists, with the handout's own ./lab: ./lab build, the
unit tests (through CTest, and limiter_tests run directly: every failing test shows the
TODO(student) it reached), ./lab run (a stub answers 503, the solution 200), each ./lab grade
command (stubs at most 40 per profile, the solution full marks), every script its pages name
(--help), its Classroom workflow step by step (the solution green with every point, the stubs
red with the points of the checks they pass), ./lab speedup (question 5) in the solution tree,
and ./lab doctest over the solution tree's pages (0 failed). Every relative link of each
tree's Markdown resolves.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import studentside as ss
from test_handout import skip_under_sanitizers

#: Unit tests the handout ships whose code is all given: they pass as handed out.
GIVEN_UNIT_TESTS = {"ConnectionLimiter.ReportsItsLimits", "ConnectionLimiter.DefaultSlotHoldsNothing",
                    "StatusJson.IdleServerShowsZerosAndItsLimits"}
#: Unit tests of stubbed code: they fail in the handout, naming the TODO they reached.
STUBBED_UNIT_TESTS = {"ConnectionLimiter.AdmitsUpToPerClientLimit",
                      "ConnectionLimiter.AdmitsUpToTotalLimit",
                      "ConnectionLimiter.DestructionReleasesAndErasesEntry",
                      "ConnectionLimiter.MoveAssignmentReleasesTheOldSlot",
                      "ConnectionLimiter.ConcurrentUseNeverExceedsLimits",
                      "ThreadSet.RunsEachHandlerOnItsOwnThreadWithItsConnection",
                      "ThreadSet.FinishedThreadsAreReapedWithoutANewSpawn"}
#: The README's commands this test knows how to run; a new one fails the test until it does.
KNOWN = re.compile(r"^(\./lab (build|run|test|grade|speedup|doctest)\b|build/bin/limiter_tests$)")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    """The handout and the solution tree, each built with its own `./lab build` (the README's
    first command), at low priority so that tests beside it keep their timing."""
    skip_under_sanitizers()
    base = tmp_path_factory.mktemp("student-cpp")
    made = {"stubs": ss.generate(base / "handout"), "solution": ss.generate(base / "solution", "--solution")}
    for name, tree in made.items():
        assert "./lab build" in ss.shell_blocks((tree / "README.md").read_text())
        proc = ss.sh("nice -n 10 ./lab build", tree, timeout=1500)
        output = proc.stdout + proc.stderr
        assert proc.returncode == 0, f"{name}: ./lab build failed:\n{output[-5000:]}"
        warnings = [line for line in output.splitlines() if "warning:" in line]
        assert not warnings, f"{name} builds with warnings:\n" + "\n".join(warnings[:20])
    return made


@pytest.fixture(scope="module")
def readme_grades(trees, tmp_path_factory) -> dict[str, dict[str, dict]]:
    """Each README ./lab grade command run in each tree: tree → profile → results.json."""
    return ss.readme_grades(trees, tmp_path_factory)


def test_readme_lists_only_commands_this_test_runs(trees):
    ss.check_readme_commands(trees, KNOWN)


def test_grade_scores(readme_grades):
    ss.check_grade_scores(readme_grades)


def unit_tests(tree: Path) -> dict[str, tuple[str, str]]:
    """The GoogleTest cases of @p tree through CTest (what ./lab test runs first): name →
    (status, output)."""
    junit = tree / "build" / "unit.xml"
    ss.sh(f"ctest --test-dir build -E '^harness\\.' -j 2 --output-junit {junit}", tree)
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        output = "".join(node.text or "" for node in case.iter() if node.tag in ("system-out", "failure"))
        results[case.get("name")] = (case.get("status"), output)
    assert results, f"no unit tests ran in {tree}"
    return results


def test_unit_tests(trees):
    solved = unit_tests(trees["solution"])
    failed = {name: out[-2000:] for name, (status, out) in solved.items() if status != "run"}
    assert not failed, f"solution tree: unit tests fail: {failed}"
    handed = unit_tests(trees["stubs"])
    assert set(handed) == set(solved), "the handout and the solution tree run different tests"
    assert {status for status, _ in handed.values()} <= {"run", "fail"}
    failing = {name for name, (status, _) in handed.items() if status == "fail"}
    for name in failing:
        assert "TODO(student)" in handed[name][1], f"{name} fails without naming its TODO"
    assert STUBBED_UNIT_TESTS <= failing, STUBBED_UNIT_TESTS - failing
    assert not GIVEN_UNIT_TESTS & failing
    # Only tests of what the student writes may fail: the limiter and the thread set, and the
    # status page's views of the limiter (JSON and the HTML scoreboard).
    assert not [n for n in failing
                if not n.startswith(("ConnectionLimiter.", "StatusJson.", "StatusHtml.", "ThreadSet."))]


def test_limiter_tests_run_directly_name_their_todo(trees):
    """`build/bin/limiter_tests`, as the README runs it: one process for every test, and yet
    each failing test's section of the output shows the TODO(student) it reached."""
    solution = ss.sh("build/bin/limiter_tests", trees["solution"], timeout=300)
    assert solution.returncode == 0, solution.stdout[-3000:]
    stubs = ss.sh("build/bin/limiter_tests 2>&1", trees["stubs"], timeout=300)
    assert stubs.returncode != 0
    sections = re.findall(r"^\[ RUN +\] (\S+)\n(.*?)^\[ +(OK|FAILED) +\] \1", stubs.stdout, re.M | re.S)
    failed = [(name, body) for name, body, verdict in sections if verdict == "FAILED"]
    assert len(failed) >= 5, stubs.stdout[-3000:]
    silent = [name for name, body in failed if "TODO(student)" not in body]
    assert not silent, f"failing tests whose output shows no TODO(student): {silent}"


def test_lab_run_serves(trees):
    """`./lab run stage2_threaded`, as the README says: the stub answers 503 and says which
    TODO; the solution serves the page."""
    command = next(c for c in ss.shell_blocks((trees["stubs"] / "README.md").read_text())
                   if c.startswith("./lab run"))
    status, stderr = ss.serve_and_get(command, trees["stubs"])
    assert " 503 " in status + " " and "TODO(student)" in stderr, (status, stderr[-2000:])
    status, _ = ss.serve_and_get(command, trees["solution"])
    assert " 200 " in status + " ", status


def test_help_of_every_command_and_script(trees):
    """./lab help, ./lab grade --help (the handout built stage 4 before), ./lab speedup
    --help, and --help of every script the pages name."""
    for name, tree in trees.items():
        for command in ("./lab help", "./lab grade --help", "./lab speedup --help"):
            proc = ss.sh(command, tree, timeout=600)
            assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (name, command, proc.stderr[-2000:])
        scripts = ss.named_scripts(tree)
        assert "harness/bench shaped" in scripts and "harness/grader" in scripts, scripts
        for script in scripts:
            proc = ss.sh(f"{ss.PYTHON} {script} --help", tree, timeout=60)
            assert proc.returncode == 0, (name, script, proc.stderr[-2000:])
    # Question 5's command refuses what would give no figures worth quoting.
    for bad in ("--reps 1", "--rtt-ms 0"):
        proc = ss.sh(f"./lab speedup {bad}", trees["stubs"], timeout=600)
        assert proc.returncode == 2 and "error" in proc.stderr, (bad, proc.stderr[-1000:])


def test_links_resolve(trees, tmp_path):
    """In the handout, the solution tree and a handout with every extension: every relative
    link of every Markdown page (inline, reference or HTML; #fragments too) leads to a file,
    directory or heading of the tree, and every .py or .sh file a page names is one of the
    tree's (test_help_of_every_command_and_script runs those that are scripts with --help)."""
    extended = ss.generate(tmp_path / "extended", "--no-git", "--with", "stage4", "--with", "reclaim-idle")
    for tree in (*trees.values(), extended):
        assert not ss.dead_links(tree), ss.dead_links(tree)
        named, missing = ss.named_files(tree)
        assert not missing, f"{tree.name}: pages name files the tree does not hold: {missing}"
        assert "docs/tools/hold.py" in named, named
        tools = ss.named_tools(tree)
        assert {"harness/grader grade", "harness/guidetest", "harness/bench shaped"} <= tools, tools


def test_classroom_workflow(trees, readme_grades):
    """The workflow's steps run as GitHub would run them: the solution green with every
    point; the stubs red, earning the points of exactly the checks they pass whole."""
    yaml = pytest.importorskip("yaml")  # python3-yaml: ./lab setup of the kit installs it
    ss.check_classroom_workflow(trees, readme_grades, yaml)


def test_speedup_in_the_solution_tree(trees):
    """Question 5's command, shortened (3 rounds, 5 ms round trip, 1 Gbit/s), so short that
    its runs are flagged as noise: every stage of the
    handout and python -m http.server, both test cases, no errors, no stage 4."""
    table = ss.check_short_speedup(trees["solution"], ("stage1", "stage2", "stage3", "python"))
    assert "stage4" not in table


def test_doctest_of_the_solution_tree(trees):
    """`./lab doctest` (listed in the README) over the solution tree's own pages: 0 failed."""
    assert "./lab doctest" in ss.shell_blocks((trees["solution"] / "README.md").read_text())
    proc = ss.sh("./lab doctest", trees["solution"], timeout=900)
    summary = re.findall(r"(\d+) passed, (\d+) failed", proc.stdout + proc.stderr)
    assert summary and summary[-1][1] == "0" and proc.returncode == 0, (proc.stdout + proc.stderr)[-5000:]
