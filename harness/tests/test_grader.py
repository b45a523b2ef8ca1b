"""Tests of the grader itself (``harness/grader grade``), run as a subprocess like a course would.

- the kit's own stages, each with its matching profile, get full marks (stage 4 with
  "limited", like stage 3: it takes the same options and keeps the same limits);
- the deliberately flawed server (per-client limit keyed by IP:port) loses the per-client
  check, with a message that says what was observed;
- a server that never listens, one that crashes, one that accepts and never answers, a check
  that hangs and a check that raises: reports are still written, the checks fail, the grader
  exits 0 in bounded time and leaves no process behind;
- results.json has Gradescope's shape, junit.xml is well-formed JUnit;
- a check from --hidden-dir shows up with visibility "hidden", and stays out of what students
  see (the visible summary, results.json's top-level output);
- each rough edge an instructor met is reported for what it is (harness/tests/testdata/quirky_server.py
  breaks one thing per switch): silence is "no reply", a shell-reported signal is decoded, the
  reasons of a timed-out check are kept, content types earn partial credit, a limit failure says
  which kind it is, a crash after a few requests is caught, a sequential server does not pass
  concurrent_fetch;
- interrupting the grader (SIGTERM) stops the server, removes temporary files and leaves
  results marked incomplete; a server that escapes its process group is stopped anyway;
  --fail-under, --run-as, --log-lines and usage errors behave as documented.

The grader runs under the OLDEST Python 3.8+ on the machine (GRADER_PYTHON; pyenv builds are
looked for), since Gradescope's image and students' machines are older than Debian 12's 3.11.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import HARNESS_DIR, STAGE1, STAGE2, STAGE3, STAGE4, TESTDATA, binary

GRADER = HARNESS_DIR / "grader"
FLAWED = TESTDATA / "flawed_server.py"
HIDDEN = TESTDATA / "hidden_checks"
QUIRKY = TESTDATA / "quirky_server.py"
#: The interpreter running these tests (Debian's, with pytest); test servers run under it.
PYTHON = sys.executable
#: The oldest version the grader supports (Gradescope's Ubuntu 22.04 has 3.10).
GRADER_MIN_VERSION = (3, 8)


def oldest_python() -> str:
    """The oldest Python >= GRADER_MIN_VERSION on this machine: the grader must run there."""
    candidates = {PYTHON}
    pyenv = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv")) / "versions"
    candidates.update(str(p) for p in pyenv.glob("3.*/bin/python3"))
    for minor in range(GRADER_MIN_VERSION[1], 12):
        found = shutil.which(f"python3.{minor}")
        if found:
            candidates.add(found)
    versions = []
    for candidate in candidates:
        try:
            out = subprocess.run([candidate, "-c", "import sys; print(*sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
        except (OSError, subprocess.TimeoutExpired):
            continue
        if len(out) == 2 and tuple(map(int, out)) >= GRADER_MIN_VERSION:
            versions.append((tuple(map(int, out)), candidate))
    return min(versions)[1]


#: The interpreter the grader runs under in these tests.
GRADER_PYTHON = os.environ.get("GRADER_PYTHON") or oldest_python()


@pytest.fixture(scope="session", autouse=True)
def grader_reads_toml(tmp_path_factory):
    """Every grader run can read the TOML rubric, as after setup.sh on Gradescope: when
    GRADER_PYTHON has neither tomllib nor tomli (a pyenv build sees no Debian package; it stands
    in for Gradescope's Python < 3.11), PYTHONPATH gets a folder holding only Debian's tomli
    (pure Python, 3.7+). Session-wide, so module fixtures that run the grader see it too
    (test_autograde.py imports this fixture)."""
    probe = "try:\n import tomllib\nexcept ImportError:\n import tomli\n"
    if subprocess.run([GRADER_PYTHON, "-c", probe], capture_output=True, timeout=30).returncode == 0:
        yield
        return
    import tomli  # python3-tomli, for Debian's python3 running these tests
    path = tmp_path_factory.mktemp("tomli-only")
    (path / "tomli").symlink_to(Path(tomli.__file__).parent, target_is_directory=True)
    with pytest.MonkeyPatch.context() as patch:
        old = os.environ.get("PYTHONPATH")
        patch.setenv("PYTHONPATH", str(path) + (os.pathsep + old if old else ""))
        yield


CHECKS = {
    "sequential": {"index_html", "content_types", "not_found", "head", "traversal",
                   "many_requests", "silent_client_blocks"},
    "threaded": {"index_html", "content_types", "not_found", "head", "traversal",
                 "many_requests", "silent_client_does_not_block", "concurrent_fetch"},
}
CHECKS["limited"] = CHECKS["threaded"] | {"per_client_limit", "per_client_release",
                                          "total_limit", "total_release"}
GRADESCOPE_STATUSES = {"passed", "failed"}
GRADESCOPE_VISIBILITIES = {"visible", "hidden", "after_due_date", "after_published"}


def grade(tmp_path: Path, server_cmd: str, profile: str, *extra: str, timeout: float = 150,
          status: int = 0):
    """Runs the grader; returns (completed process, results.json dict, junit root)."""
    out = tmp_path / "out"
    args = [GRADER_PYTHON, str(GRADER), "grade", "--server-cmd", server_cmd, "--profile", profile,
            "--out", str(out), *extra]
    start = time.monotonic()
    try:
        proc = subprocess.run(args, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
                              text=True, timeout=timeout)
    except subprocess.TimeoutExpired as error:
        pytest.fail(f"grader still running after {timeout} s: {error.stdout!r} {error.stderr!r}",
                    pytrace=False)
    proc.elapsed = time.monotonic() - start
    assert proc.returncode == status, f"grader exited {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
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
        if test["status"] == "passed":
            assert test["score"] == test["max_score"], test
    assert isinstance(results["extra_data"]["complete"], bool)
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
    outcomes = {tag: [case.find(tag) for case in cases if case.find(tag) is not None]
                for tag in ("failure", "error", "skipped")}
    assert int(suite.get("failures")) == len(outcomes["failure"])
    assert int(suite.get("errors")) == len(outcomes["error"])
    assert int(suite.get("skipped")) == len(outcomes["skipped"])
    assert sum(map(len, outcomes.values())) == sum(t["status"] == "failed" for t in results["tests"])
    for case in cases:
        assert case.get("name") and case.get("classname") and float(case.get("time")) >= 0
    for failure in outcomes["failure"] + outcomes["error"]:
        assert failure.get("message"), "a failure needs a message"


def by_id(results: dict) -> dict[str, dict]:
    return {test["name"].split(":", 1)[0]: test for test in results["tests"]}


def stage_cmd(stage: str, *extra: str) -> str:
    return " ".join([shlex.quote(str(binary(stage))), "-p", "{port}", "-r", "{root}", *extra])


def wait_for_process(token: str, timeout: float = 60, besides: int = 0) -> bool:
    """Waits until a live process's command line contains @p token (not counting process
    @p besides, whose own arguments may hold it); False if none does."""
    deadline = time.monotonic() + timeout
    while not [line for line in no_process_mentions(token) if not line.startswith(f"{besides}: ")]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)
    return True


def sigterm_once_started(proc: subprocess.Popen, token: str, what: str, settle: float = 0.0,
                         timeout: float = 60) -> tuple[str, str]:
    """Waits until a process carrying @p token runs (@p what names it in the failure), lets
    @p settle seconds pass, sends SIGTERM to @p proc and returns its (stdout, stderr); @p proc is
    killed if anything fails on the way."""
    try:
        # The grader's own command line may carry the token too: the server's is awaited.
        assert wait_for_process(token, besides=proc.pid), f"{what} never started"
        time.sleep(settle)
        proc.send_signal(signal.SIGTERM)
        return proc.communicate(timeout=timeout)
    finally:
        if proc.poll() is None:
            proc.kill()


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
    assert "The total limit refused connection 61" in per_client["output"]  # the diagnosis
    assert results["score"] == 85
    # Only the per-client limit is broken: files, concurrency and the total limit pass.
    for name in ("index_html", "content_types", "many_requests", "concurrent_fetch",
                 "silent_client_does_not_block", "total_limit", "total_release"):
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


def test_server_command_not_found(tmp_path):
    """A misspelt program: the shell's 127 is explained, and the reason ends its sentence."""
    proc, results, _ = grade(tmp_path, "no-such-server-program -p {port}", "threaded",
                             "--checks", "index_html", timeout=60)
    output = results["tests"][0]["output"]
    assert "exited with status 127 (command not found" in output, output
    assert output.split("\n", 1)[0].endswith("."), output


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
    proc, results, junit = grade(tmp_path, cmd, "threaded", "--hidden-dir", str(hidden),
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
    # JUnit: a broken check is an error, not a failure of the server.
    assert junit.find("testsuite").get("errors") == "1"
    assert [c.get("name") for c in junit.iter("testcase") if c.find("error") is not None] == ["raises"]


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
    (["--server-cmd", "server -p {port}", "--profile", "limited", "--fail-under", "-1"], ">= 0"),
], ids=["no-port", "unknown-placeholder", "bad-profile", "bad-limit", "no-rubric", "bad-check", "no-cmd",
        "bad-fail-under"])
def test_usage_errors_exit_2(tmp_path, args, says):
    out = tmp_path / "out"
    out.mkdir()
    for stale in ("results.json", "junit.xml", "summary.txt"):  # a previous run's reports
        (out / stale).write_text("{}")
    proc = subprocess.run([GRADER_PYTHON, str(GRADER), "grade", "--out", str(out), *args],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert says in proc.stderr, proc.stderr
    assert not list(out.iterdir()), "a usage error must not leave an old run's reports behind"


def test_bad_rubric_entry_is_a_usage_error(tmp_path):
    rubric = tmp_path / "rubric.toml"
    rubric.write_text('[checks.index_html]\npoints = "ten"\n')
    proc = subprocess.run([GRADER_PYTHON, str(GRADER), "grade", "--server-cmd", "x {port}", "--profile", "threaded",
                           "--rubric", str(rubric)], capture_output=True, text=True, timeout=30,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert "points must be a number" in proc.stderr


def test_help_documents_every_placeholder():
    proc = subprocess.run([GRADER_PYTHON, str(GRADER), "grade", "--help"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0
    for placeholder in ("{port}", "{root}", "{maxclient}", "{maxtotal}"):
        assert placeholder in proc.stdout
    for profile in ("sequential", "threaded", "limited"):
        assert profile in proc.stdout


# --------------------------------------------------------------------------------------------
# Rough edges: each fault reported for what it is
# --------------------------------------------------------------------------------------------


def quirky(*switches: str) -> str:
    return (f"{shlex.quote(PYTHON)} {shlex.quote(str(QUIRKY))} -p {{port}} -maxclient {{maxclient}} "
            f"-maxtotal {{maxtotal}} " + " ".join(switches))


def test_grader_runs_on_the_oldest_python():
    version = subprocess.run([GRADER_PYTHON, "-c", "import sys; print(sys.version_info[:2])"],
                             capture_output=True, text=True, timeout=30).stdout.strip()
    print(f"grader tests run the grader under {GRADER_PYTHON} {version}")
    proc = subprocess.run([GRADER_PYTHON, str(GRADER), "grade", "--profile", "limited", "--list",
                           "--server-cmd", "x {port}"], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr  # imports everything, reads the TOML rubric
    assert "per_client_limit" in proc.stdout


def test_silence_is_no_reply_and_limits_say_which_kind(tmp_path):
    """A server that accepts and never answers is "no reply within N s", never "closed";
    a server with no limits at all is told so."""
    server = tmp_path / "mute.py"
    server.write_text("import socket, sys\n"
                      "s = socket.create_server(('127.0.0.1', int(sys.argv[1])), backlog=256)\n"
                      "conns = []\n"
                      "while True:\n"
                      "    conns.append(s.accept()[0])\n")
    _, results, _ = grade(tmp_path, f"{shlex.quote(PYTHON)} {shlex.quote(str(server))} {{port}}",
                          "limited", "--checks", "per_client_limit", timeout=90)
    output = by_id(results)["per_client_limit"]["output"]
    assert "no reply within 10 s" in output, output
    assert "closed the connection" not in output
    assert "No limit at all" in output


@pytest.mark.parametrize("switch, says", [
    ("--limit-constant 20", "the per-client limit seems to be 20, not the -maxclient 12"),
    ("--limit-constant 5", "refused as connection 6 from that address"),
    ("--no-limits", "No limit at all: 61 connections from this one address"),
], ids=["constant-above", "constant-below", "none"])
def test_limit_failures_say_what_kind(tmp_path, switch, says):
    _, results, _ = grade(tmp_path, quirky(switch), "limited", "--checks", "per_client_limit",
                          timeout=90)
    test = by_id(results)["per_client_limit"]
    assert test["status"] == "failed"
    assert says in test["output"], test["output"]


def test_stub_refusal_blames_the_stub_not_the_limits(tmp_path):
    """With stage 2's stub in place (a TODO(student) line in the log, 503 to everyone), the
    per_client_limit hint quotes that line instead of blaming ignored limits (issue 21, 8)."""
    _, results, _ = grade(tmp_path, quirky("--stub-503"), "limited", "--checks", "per_client_limit",
                          timeout=90)
    test = by_id(results)["per_client_limit"]
    assert test["status"] == "failed"
    assert "TODO(student): ThreadSet::spawn() is not written yet: 503, no thread" in test["output"]
    assert "not from the limits" in test["output"], test["output"]
    assert "ignore the limits" not in test["output"], test["output"]


def test_no_total_limit_is_told(tmp_path):
    _, results, _ = grade(tmp_path, quirky("--no-limits"), "limited", "--checks", "total_limit",
                          timeout=90)
    assert "No total limit: 120 connections in all were admitted" in by_id(results)["total_limit"]["output"]


def test_content_types_partial_credit_and_reasons_kept(tmp_path):
    """One wrong type costs a third of the check; a file that hangs does not hide the verdicts
    on the others."""
    _, results, _ = grade(tmp_path, quirky("--wrong-type .css", "--hang-on .pdf"), "threaded",
                          "--checks", "content_types", timeout=90)
    test = by_id(results)["content_types"]
    assert test["status"] == "failed"
    assert test["score"] == pytest.approx(10 / 3, abs=0.01)
    output = test["output"]
    assert "/logo.png: image/png: right" in output
    assert "GET /style.css: Content-Type 'text/plain', expected text/css" in output
    assert "GET /guide.pdf: no reply within" in output


def test_signal_death_under_the_shell_is_decoded(tmp_path):
    _, results, _ = grade(tmp_path, quirky("--segfault"), "threaded", "--checks", "index_html",
                          timeout=60)
    output = by_id(results)["index_html"]["output"]
    assert "status 139 (killed by SIGSEGV, segmentation fault" in output, output


def test_a_crash_after_a_few_requests_is_caught(tmp_path):
    _, results, _ = grade(tmp_path, quirky("--crash-after 4"), "threaded", timeout=120)
    tests = by_id(results)
    many = tests["many_requests"]
    assert many["status"] == "failed"
    assert "request 5 of 300" in many["output"] and "SIGABRT" in many["output"], many["output"]
    assert results["score"] < 60


def test_sequential_server_does_not_pass_concurrent_fetch(tmp_path):
    _, results, _ = grade(tmp_path, stage_cmd(STAGE1), "limited", "--checks", "concurrent_fetch",
                          timeout=90)
    test = by_id(results)["concurrent_fetch"]
    assert test["status"] == "failed"
    assert "while one client stalled" in test["output"]


def test_hidden_checks_stay_out_of_what_students_see(tmp_path):
    cmd = stage_cmd(STAGE2)
    proc, results, _ = grade(tmp_path, cmd, "threaded", "--hidden-dir", str(HIDDEN),
                             "--checks", "index_html,subdir_index", "--stdout-visibility",
                             "visible", "--visibility", "after_published", timeout=60)
    assert results["stdout_visibility"] == "visible"
    assert results["visibility"] == "after_published"
    assert "subdir_index" not in proc.stdout  # the printed summary students may see
    # The total students see counts the visible checks only. (Only the TOTAL line is read: the
    # lines after it name report paths, and pytest's tmp_path may hold "15" as in pytest-153.)
    total_line = proc.stdout.split("TOTAL", 1)[1].splitlines()[0]
    assert "10/10" in proc.stdout and "15" not in total_line
    assert not re.search(r"\b15\s*/|/\s*15\b|\b15 points", proc.stdout)
    assert "subdir_index" not in results["output"]
    assert "10/10 points on the visible checks" in results["output"]
    assert results["score"] == 15  # hidden points still count
    summary = (tmp_path / "out" / "summary.txt").read_text()
    assert "subdir_index" in summary  # the instructor's copy keeps everything


def test_log_tails_are_cut_to_log_lines(tmp_path):
    cmd = "for i in $(seq 1 50); do echo log-line-$i; done; exit 4 # {port}"
    _, results, _ = grade(tmp_path, cmd, "threaded", "--checks", "index_html", "--log-lines", "3",
                          timeout=60)
    output = by_id(results)["index_html"]["output"]
    assert "log-line-50" in output and "log-line-48" in output
    assert "log-line-47" not in output


@pytest.mark.parametrize("floor, status", [(10, 0), (10.5, 1)], ids=["at", "below"])
def test_fail_under(tmp_path, floor, status):
    proc, results, _ = grade(tmp_path, stage_cmd(STAGE2), "threaded", "--checks", "index_html",
                             "--fail-under", str(floor), status=status, timeout=60)
    assert results["score"] == 10
    assert ("below --fail-under" in proc.stderr) == (status == 1)


def test_sigterm_stops_everything_and_marks_results_incomplete(tmp_path):
    token = f"grader-test-{uuid.uuid4().hex}"
    out = tmp_path / "out"
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}  # the checks' temporary directories
    proc = subprocess.Popen([GRADER_PYTHON, str(GRADER), "grade", "--profile", "limited", "--out", str(out),
                             "--server-cmd", quirky(f"--leave-behind {token}")],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    # Once the first server has started (and left its process behind).
    stdout, stderr = sigterm_once_started(proc, token, "the server", settle=0.5, timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert "stopped by SIGTERM" in stderr
    time.sleep(0.5)
    assert not no_process_mentions(token), "the server, or what it left behind, still runs"
    assert not list((tmp_path / "tmp").iterdir()), "temporary directories left behind"
    results = json.loads((out / "results.json").read_text())
    validate_gradescope(results)
    assert results["extra_data"]["complete"] is False
    assert results["output"].startswith("INCOMPLETE: grading was stopped by SIGTERM")
    assert any("not run: grading was stopped by SIGTERM" in t["output"] for t in results["tests"])
    assert "INCOMPLETE" in stdout
    validate_junit(ET.parse(out / "junit.xml").getroot(), results)


def test_a_process_that_leaves_the_group_is_stopped(tmp_path):
    token = f"grader-test-{uuid.uuid4().hex}"
    _, results, _ = grade(tmp_path, quirky(f"--leave-behind {token}"), "threaded",
                          "--checks", "index_html", timeout=60)
    test = by_id(results)["index_html"]
    assert test["status"] == "passed"
    assert "left 1 process(es) running outside its process group" in test["output"], test["output"]
    assert not no_process_mentions(token)


@pytest.mark.skipif(os.geteuid() != 0, reason="--run-as needs root")
def test_run_as_another_user(tmp_path):
    uid = 61000 + uuid.uuid4().int % 3000  # a throwaway uid: no passwd entry needed
    token = f"grader-test-{uuid.uuid4().hex}"
    # pytest's tmp_path sits in a root-only directory: put what that uid must reach elsewhere.
    shared = Path(tempfile.mkdtemp(prefix="grader-run-as-"))
    try:
        run_as_user(tmp_path, shared, uid, token)
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def run_as_user(tmp_path: Path, shared: Path, uid: int, token: str) -> None:
    os.chmod(shared, 0o755)
    server = shared / "quirky_server.py"
    shutil.copy(QUIRKY, server)
    os.chmod(server, 0o644)
    cmd = (f"{shlex.quote(PYTHON)} {shlex.quote(str(server))} -p {{port}} -maxclient {{maxclient}} "
           f"-maxtotal {{maxtotal}} --print-uid --leave-behind {token}")
    hidden = shared / "hidden"
    shutil.copytree(HIDDEN, hidden)
    os.chmod(hidden, 0o755)
    for path in hidden.iterdir():
        os.chmod(path, 0o644)
    proc = subprocess.run([GRADER_PYTHON, str(GRADER), "grade", "--profile", "threaded", "--out",
                           str(tmp_path / "out"), "--server-cmd", cmd, "--run-as", str(uid),
                           "--hidden-dir", str(hidden)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "can read the hidden check" in proc.stderr, proc.stderr
    os.chmod(hidden, 0o700)
    _, results, _ = grade(tmp_path, cmd, "threaded", "--run-as", str(uid), "--hidden-dir",
                          str(hidden), "--checks", "index_html,traversal", timeout=60)
    tests = by_id(results)
    assert all(t["status"] == "passed" for t in tests.values()), tests
    log = (tmp_path / "out" / "logs" / "index_html.stdout").read_text()
    assert f"running as uid {uid}" in log
    assert not no_process_mentions(token)


# --------------------------------------------------------------------------------------------
# The rubric's TOML: tomllib (3.11+) else tomli, never a reader of our own
# --------------------------------------------------------------------------------------------

RUBRIC = GRADER / "rubric.toml"


def without_modules(*names: str) -> str:
    """Python code that makes `import NAME` fail for each of @p names, as on a bare install."""
    return "import sys\n" + "".join(f"sys.modules[{name!r}] = None\n" for name in names)


def test_rubric_loads_through_tomllib_or_tomli(monkeypatch):
    from grader import rubric
    import tomli  # python3-tomli: ./lab setup installs it with the grading packages
    expected = tomli.loads(RUBRIC.read_text())["checks"]
    assert rubric.load(RUBRIC) == expected
    assert "per_client_limit" in expected
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.8-3.10
    assert rubric.load(RUBRIC) == expected
    bad = RUBRIC.parent / "no-such-dir" / "x.toml"
    with pytest.raises(rubric.RubricError, match="cannot read rubric"):
        rubric.load(bad)


def test_rubric_without_a_toml_library_is_a_clear_usage_error(tmp_path):
    """Neither tomllib nor tomli: the grader says what to install and exits 2; a JSON rubric
    still works there."""
    script = (without_modules("tomllib", "tomli")
              + f"import runpy\nsys.argv = [{str(GRADER)!r}, 'grade'] + sys.argv[1:]\n"
              + f"runpy.run_path({str(GRADER)!r}, run_name='__main__')\n")
    args = ["--server-cmd", "x {port}", "--profile", "limited", "--list"]
    proc = subprocess.run([GRADER_PYTHON, "-c", script, *args, "--rubric", str(RUBRIC)],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 2, proc
    assert "python3-tomli" in proc.stderr and "pip install tomli" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    import tomli
    as_json = tmp_path / "rubric.json"
    as_json.write_text(json.dumps(tomli.loads(RUBRIC.read_text())))
    proc = subprocess.run([GRADER_PYTHON, "-c", script, *args, "--rubric", str(as_json)],
                          capture_output=True, text=True, timeout=30, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "per_client_limit" in proc.stdout
