"""Tests of the grader itself (harness/grade.py), run as a subprocess like a course would.

- the kit's own stages, each with its matching profile, get full marks (stage 4 with
  "limited", like stage 3: it takes the same options and keeps the same limits);
- the deliberately flawed server (per-client limit keyed by IP:port) loses the per-client
  check, with a message that says what was observed;
- a server that never listens, one that crashes, one that accepts and never answers, a check
  that hangs and a check that raises: reports are still written, the checks fail, the grader
  exits 0 in bounded time and leaves no process behind;
- results.json has Gradescope's shape, junit.xml is well-formed JUnit;
- a check from --hidden-dir shows up with visibility "hidden".
"""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import HARNESS_DIR, STAGE1, STAGE2, STAGE3, STAGE4, binary

GRADE = HARNESS_DIR / "grade.py"
FLAWED = HARNESS_DIR / "testdata" / "flawed_server.py"
HIDDEN = HARNESS_DIR / "testdata" / "hidden_checks"
#: The interpreter running these tests (Debian's, with pytest); the grader needs only stdlib.
PYTHON = sys.executable

CHECKS = {
    "sequential": {"index_html", "content_types", "not_found", "head", "traversal",
                   "concurrent_fetch", "silent_client_blocks"},
    "threaded": {"index_html", "content_types", "not_found", "head", "traversal",
                 "concurrent_fetch", "silent_client_does_not_block"},
}
CHECKS["limited"] = CHECKS["threaded"] | {"per_client_limit", "per_client_release",
                                          "total_limit", "total_release"}
GRADESCOPE_STATUSES = {"passed", "failed"}
GRADESCOPE_VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def grade(tmp_path: Path, server_cmd: str, profile: str, *extra: str, timeout: float = 150):
    """Runs the grader; returns (completed process, results.json dict, junit root)."""
    out = tmp_path / "out"
    args = [PYTHON, str(GRADE), "--server-cmd", server_cmd, "--profile", profile,
            "--out", str(out), *extra]
    start = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"grader still running after {timeout} s: {error.stdout!r} {error.stderr!r}",
                    pytrace=False)
    proc.elapsed = time.monotonic() - start
    assert proc.returncode == 0, f"grader exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    results = json.loads((out / "results.json").read_text())
    validate_gradescope(results)
    junit = ET.parse(out / "junit.xml").getroot()
    validate_junit(junit, results)
    return proc, results, junit


def validate_gradescope(results: dict) -> None:
    """Gradescope's results.json: score, tests with name/score/max_score/status/output/visibility."""
    assert isinstance(results.get("score"), (int, float)), results
    assert isinstance(results.get("max_score"), (int, float)), results
    assert isinstance(results.get("tests"), list), results
    for test in results["tests"]:
        for key, kind in (("name", str), ("score", (int, float)), ("max_score", (int, float)),
                          ("status", str), ("output", str), ("visibility", str)):
            assert isinstance(test.get(key), kind), f"{key} of {test}"
        assert test["status"] in GRADESCOPE_STATUSES, test
        assert test["visibility"] in GRADESCOPE_VISIBILITIES, test
        assert 0 <= test["score"] <= test["max_score"], test
        assert (test["score"] == test["max_score"]) == (test["status"] == "passed"), test
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
    assert results["max_score"] == pytest.approx(sum(t["max_score"] for t in results["tests"]))
    json.dumps(results)  # plain JSON types only


def validate_junit(root: ET.Element, results: dict) -> None:
    """One testsuite with a testcase per check; failures counted and carrying a message."""
    assert root.tag == "testsuites"
    suites = root.findall("testsuite")
    assert len(suites) == 1
    suite = suites[0]
    cases = suite.findall("testcase")
    assert int(suite.get("tests")) == len(cases) == len(results["tests"])
    failures = [case.find("failure") for case in cases if case.find("failure") is not None]
    assert int(suite.get("failures")) == len(failures)
    assert len(failures) == sum(t["status"] == "failed" for t in results["tests"])
    for case in cases:
        assert case.get("name") and case.get("classname") and float(case.get("time")) >= 0
    for failure in failures:
        assert failure.get("message"), "a failure needs a message"


def by_id(results: dict) -> dict[str, dict]:
    return {test["name"].split(":", 1)[0]: test for test in results["tests"]}


def stage_cmd(stage: str, *extra: str) -> str:
    return " ".join([shlex.quote(str(binary(stage))), "-p", "{port}", "-r", "{root}", *extra])


def no_process_mentions(token: str) -> list[str]:
    """Command lines of live processes that contain @p token (should be none)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if token in cmdline:
                found.append(f"{entry.name}: {cmdline}")
    return found


# --------------------------------------------------------------------------------------------
# The kit's own stages get full marks
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage, profile, extra", [
    (STAGE1, "sequential", ()),
    (STAGE2, "threaded", ()),
    (STAGE3, "limited", ("-maxclient", "{maxclient}", "-maxtotal", "{maxtotal}")),
    (STAGE4, "limited", ("-maxclient", "{maxclient}", "-maxtotal", "{maxtotal}")),
], ids=["stage1-sequential", "stage2-threaded", "stage3-limited", "stage4-limited"])
def test_own_stage_gets_full_marks(tmp_path, stage, profile, extra):
    proc, results, _ = grade(tmp_path, stage_cmd(stage, *extra), profile)
    tests = by_id(results)
    assert set(tests) == CHECKS[profile]
    failed = {name: t["output"] for name, t in tests.items() if t["status"] != "passed"}
    assert not failed, failed
    assert results["score"] == results["max_score"] > 0
    assert f"{results['score']:g}/{results['max_score']:g}" in proc.stdout  # the summary table


@pytest.mark.parametrize("stage", [STAGE3, STAGE4], ids=["stage3", "stage4"])
def test_small_limits_and_hidden_check(tmp_path, stage):
    cmd = stage_cmd(stage, "-maxclient", "{maxclient}", "-maxtotal", "{maxtotal}")
    _, results, junit = grade(tmp_path, cmd, "limited", "--maxclient", "3", "--maxtotal", "7",
                              "--hidden-dir", str(HIDDEN))
    tests = by_id(results)
    assert tests["subdir_index"]["visibility"] == "hidden"
    assert tests["subdir_index"]["status"] == "passed"
    assert tests["index_html"]["visibility"] == "visible"
    assert results["score"] == results["max_score"], {n: t["output"] for n, t in tests.items()
                                                      if t["status"] != "passed"}
    assert "subdir_index" in {case.get("name") for case in junit.iter("testcase")}


# --------------------------------------------------------------------------------------------
# Servers the grader must find fault with
# --------------------------------------------------------------------------------------------


def test_flawed_server_loses_the_per_client_check(tmp_path):
    cmd = f"{shlex.quote(PYTHON)} {shlex.quote(str(FLAWED))} -p {{port}} -maxclient {{maxclient}} -maxtotal {{maxtotal}}"
    proc, results, junit = grade(tmp_path, cmd, "limited")
    tests = by_id(results)
    per_client = tests["per_client_limit"]
    assert per_client["status"] == "failed" and per_client["score"] == 0
    # The output says what was seen: the extra connection from the same IP was served.
    assert "was not refused" in per_client["output"]
    assert "200 OK" in per_client["output"]
    assert "IP:port" in per_client["output"]
    assert results["score"] < results["max_score"]
    # Only the per-client limit is broken: files, concurrency and the total limit pass.
    for name in ("index_html", "content_types", "concurrent_fetch", "silent_client_does_not_block",
                 "total_limit", "total_release"):
        assert tests[name]["status"] == "passed", (name, tests[name]["output"])
    failure = [c for c in junit.iter("testcase") if c.get("name") == "per_client_limit"][0].find("failure")
    assert "was not refused" in failure.get("message")
    assert "per_client_limit" in proc.stdout and "FAIL" in proc.stdout


def test_server_that_never_listens(tmp_path):
    token = f"grader-test-{uuid.uuid4().hex}"
    cmd = f"sh -c 'sleep 1000' {token} {{port}}"
    proc, results, _ = grade(tmp_path, cmd, "threaded", "--startup-timeout", "1.5", timeout=90)
    assert results["score"] == 0
    assert len(results["tests"]) == len(CHECKS["threaded"])
    for test in results["tests"]:
        assert test["status"] == "failed"
        assert "did not accept connections" in test["output"], test["output"]
    assert proc.elapsed < 60
    assert not no_process_mentions(token), "the grader left the server running"


def test_server_that_crashes_at_start(tmp_path):
    cmd = "echo 'cannot start: no such option' >&2; exit 3 # {port}"
    proc, results, junit = grade(tmp_path, cmd, "limited", timeout=60)
    assert results["score"] == 0 and results["max_score"] == 100
    for test in results["tests"]:
        assert test["status"] == "failed"
        assert "exited with status 3" in test["output"], test["output"]
        assert "cannot start: no such option" in test["output"]  # the stderr tail
    assert proc.elapsed < 30
    assert len(list(junit.iter("failure"))) == len(CHECKS["limited"])


def test_server_that_accepts_but_never_answers(tmp_path):
    token = f"grader-test-{uuid.uuid4().hex}"
    server = tmp_path / "mute.py"
    server.write_text(
        "import socket, sys, time\n"
        "s = socket.create_server(('127.0.0.1', int(sys.argv[1])), backlog=64)\n"
        "conns = []\n"
        "while True:\n"
        "    conns.append(s.accept()[0])  # and never a byte back\n")
    rubric = tmp_path / "rubric.json"
    rubric.write_text(json.dumps({"checks": {"index_html": {"timeout": 2},
                                             "not_found": {"timeout": 2}}}))
    cmd = f"{shlex.quote(PYTHON)} {shlex.quote(str(server))} {{port}} {token}"
    proc, results, junit = grade(tmp_path, cmd, "threaded", "--rubric", str(rubric),
                                 "--checks", "index_html,not_found", timeout=60)
    tests = by_id(results)
    assert set(tests) == {"index_html", "not_found"}
    for test in tests.values():
        assert test["status"] == "failed"
        assert "timed out after 2 s" in test["output"], test["output"]
    assert proc.elapsed < 30
    assert not no_process_mentions(token), "the grader left the server running"
    assert {f.get("type") for f in junit.iter("failure")} == {"timeout"}


def test_check_that_hangs_or_raises(tmp_path):
    hidden = tmp_path / "hidden"
    hidden.mkdir()
    (hidden / "bad_checks.py").write_text(
        "import time\n"
        "from grader import check\n\n"
        "@check('hangs', 'a check that never ends', points=3, timeout=2)\n"
        "def hangs(ctx):\n"
        "    time.sleep(1000)\n\n"
        "@check('raises', 'a check with a bug', points=4)\n"
        "def raises(ctx):\n"
        "    raise RuntimeError('bug in the check')\n\n"
        "@check('shown', 'a hidden-dir check made visible', points=1, visibility='visible')\n"
        "def shown(ctx):\n"
        "    ctx.expect(ctx.request('/index.html').status == 200, 'not served')\n")
    cmd = stage_cmd(STAGE2)
    proc, results, _ = grade(tmp_path, cmd, "threaded", "--hidden-dir", str(hidden),
                             "--checks", "index_html,hangs,raises,shown", timeout=60)
    tests = by_id(results)
    assert tests["index_html"]["status"] == "passed"
    assert tests["hangs"]["status"] == "failed"
    assert "timed out after 2 s" in tests["hangs"]["output"]
    assert tests["raises"]["status"] == "failed"
    assert "Traceback" in tests["raises"]["output"]
    assert "RuntimeError: bug in the check" in tests["raises"]["output"]
    assert tests["hangs"]["visibility"] == tests["raises"]["visibility"] == "hidden"
    assert tests["shown"]["visibility"] == "visible" and tests["shown"]["status"] == "passed"
    assert results["score"] == 11 and results["max_score"] == 18
    assert proc.elapsed < 30


# --------------------------------------------------------------------------------------------
# Usage errors
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("args, says", [
    (["--server-cmd", "server -p 8080", "--profile", "limited"], "{port}"),
    (["--server-cmd", "server -p {port} {bogus}", "--profile", "limited"], "{bogus}"),
    (["--server-cmd", "server -p {port}", "--profile", "fancy"], "invalid choice"),
    (["--server-cmd", "server -p {port}", "--profile", "limited", "--maxclient", "0"], "at least 1"),
    (["--server-cmd", "server -p {port}", "--profile", "limited", "--rubric", "/nonexistent.toml"],
     "cannot read rubric"),
    (["--server-cmd", "server -p {port}", "--profile", "limited", "--checks", "nope"], "nope"),
    (["--profile", "limited"], "--server-cmd"),
], ids=["no-port", "unknown-placeholder", "bad-profile", "bad-limit", "no-rubric", "bad-check", "no-cmd"])
def test_usage_errors_exit_2(tmp_path, args, says):
    proc = subprocess.run([PYTHON, str(GRADE), "--out", str(tmp_path / "out"), *args],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert says in proc.stderr, proc.stderr
    assert not (tmp_path / "out" / "results.json").exists()


def test_bad_rubric_entry_is_a_usage_error(tmp_path):
    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[checks.index_html]\npoints = "ten"\n')
    proc = subprocess.run([PYTHON, str(GRADE), "--server-cmd", "x {port}", "--profile", "threaded",
                           "--rubric", str(rubric)], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "points must be a number" in proc.stderr


def test_help_documents_every_placeholder():
    proc = subprocess.run([PYTHON, str(GRADE), "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for placeholder in ("{port}", "{root}", "{maxclient}", "{maxtotal}"):
        assert placeholder in proc.stdout
    for profile in ("sequential", "threaded", "limited"):
        assert profile in proc.stdout
