"""Tests of grading at course scale (harness/grader/batch.py, ``harness/grader batch``):

- the Gradescope zip has setup.sh and run_autograder at its root, and its run_autograder,
  run on a fake /autograder tree (AUTOGRADER_ROOT), under the oldest Python on the machine,
  gives the reference full marks, a fresh handout few points, and a submission that does not
  compile 0 points with the compiler's message;
- the GitHub Classroom workflow is in every handout, and its grading steps, run here on the
  reference, pass their --fail-under;
- `all` grades a folder of submissions into grades.csv (ok, build-failed, timeout), and SIGTERM
  stops every submission's processes, removes temporary directories and marks what did not
  finish incomplete;
- each stage is built and graded on its own (a stage 3 that does not build leaves stage 2's
  points); a lone http_server.py (the earlier project's layout) gets full marks with no
  options, and lab-submission.toml submissions are graded as they say;
- a regrade merges into grades.csv, --roster adds ids and names (and grades-lms.csv), and
  hidden checks others can read are reported once, before the batch;
- a batch of hostile submissions, one per attack on the grader, graded with the default
  options and again through the Gradescope dry run, changes no score, reads nothing hidden,
  harms no neighbour and leaves nothing running (the uid-only layer too, for what it stops).

Submissions for `all` are tiny CMake projects without a compiler (their "stages" are shell
wrappers around harness/tests/testdata/quirky_server.py), so the batch logic is tested in seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import socket
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import HARNESS_DIR, TESTDATA
from test_grader import GRADER_PYTHON, no_process_mentions, sigterm_once_started
from test_grader import grader_reads_toml  # noqa: F401 (autouse: tomli for an old GRADER_PYTHON)
from test_handout import skip_under_sanitizers

REPO_DIR = HARNESS_DIR.parent
GRADER = HARNESS_DIR / "grader"
HANDOUT = HARNESS_DIR / "handout"
HIDDEN = TESTDATA / "hidden_checks"
QUIRKY = TESTDATA / "quirky_server.py"
#: The kit's own files, without build output or history: what a student's repository holds.
WORKFLOW = ".github/workflows/classroom.yml"
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "build-*", "__pycache__", "grade-results")
#: Grading student code takes root (to run it as a uid of its own).
needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="grading student code needs root")


@pytest.fixture(autouse=True)
def plain_build_only():
    """Nothing here runs the build under test (submissions are built afresh, with the default
    preset): run these once, with the plain build, not again under each sanitizer preset."""
    skip_under_sanitizers()


def autograde(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([GRADER_PYTHON, str(GRADER), "batch", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL, **kwargs)


# --------------------------------------------------------------------------------------------
# Gradescope
# --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gradescope_zip(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("zip") / "autograder.zip"
    proc = autograde("package", "gradescope", str(out), "--hidden-dir", str(HIDDEN))
    assert proc.returncode == 0, proc.stderr
    return out


def test_zip_has_gradescope_layout(gradescope_zip, tmp_path):
    with zipfile.ZipFile(gradescope_zip) as zf:
        names = set(zf.namelist())
        modes = {info.filename: info.external_attr >> 16 for info in zf.infolist()}
        zf.extractall(tmp_path)
    assert {"setup.sh", "run_autograder", "autograder.json", "harness/grader/__main__.py",
            "harness/grader/batch.py", "harness/grader/cli.py", "rubric.toml", "www/index.html",
            "hidden/0/subdir_index.py"} <= names
    for script in ("setup.sh", "run_autograder"):
        assert modes[script] & stat.S_IXUSR, f"{script} must be executable"
        assert subprocess.run(["bash", "-n", str(tmp_path / script)]).returncode == 0
    assert not any(name.startswith(("common/", "stage", "build")) for name in names)
    settings = json.loads((tmp_path / "autograder.json").read_text())
    assert settings["sandbox"] == "auto" and settings["hidden_dirs"] == ["hidden/0"]


def fake_autograder(tmp_path: Path, gradescope_zip: Path, submission: Path) -> dict:
    """Unpacks the zip into a fake /autograder, puts @p submission in, runs run_autograder as
    Gradescope would (python3 on PATH is the oldest one here), returns its results.json."""
    prefix = tmp_path / "autograder"
    with zipfile.ZipFile(gradescope_zip) as zf:
        zf.extractall(prefix / "source")
    shutil.copy(prefix / "source" / "run_autograder", prefix / "run_autograder")
    shutil.copytree(submission, prefix / "submission", symlinks=True, ignore=NOT_SOURCE)
    (prefix / "results").mkdir()
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3").symlink_to(GRADER_PYTHON)
    env = {**os.environ, "AUTOGRADER_ROOT": str(prefix), "PATH": f"{shims}:{os.environ['PATH']}"}
    proc = subprocess.run(["bash", str(prefix / "run_autograder")], env=env, capture_output=True,
                          text=True, timeout=800, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((prefix / "results" / "results.json").read_text())
    assert results["max_score"] == pytest.approx(sum(t["max_score"] for t in results["tests"]))
    assert results["score"] == pytest.approx(sum(t["score"] for t in results["tests"]))
    return results


def test_gradescope_reference_gets_full_marks(tmp_path, gradescope_zip):
    results = fake_autograder(tmp_path, gradescope_zip, REPO_DIR)
    failed = {t["name"]: t["output"] for t in results["tests"] if t["status"] != "passed"}
    assert not failed, failed
    assert results["score"] == results["max_score"] == 70 + 100 + 2 * 5  # + the hidden check
    assert results["extra_data"] == {"complete": True, "status": "ok", "sandbox": "bwrap"}
    names = {t["name"].split(":")[0] for t in results["tests"]}
    assert {"stage2_threaded/index_html", "stage3_limited/per_client_limit",
            "stage3_limited/subdir_index"} <= names
    assert "subdir_index" not in results["output"]  # hidden checks stay out of the summary


def test_gradescope_fresh_handout_scores_low(tmp_path, gradescope_zip):
    tree = tmp_path / "handout"
    proc = subprocess.run([sys.executable, str(HANDOUT), str(tree), "--no-git"], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert (tree / WORKFLOW).is_file(), "the handout must carry the Classroom workflow"
    results = fake_autograder(tmp_path, gradescope_zip, tree)
    print(f"fresh handout: {results['score']:g}/{results['max_score']:g}")
    assert results["extra_data"]["status"] == "ok"
    assert results["score"] <= 0.25 * results["max_score"], results["output"]


def test_gradescope_submission_that_does_not_compile(tmp_path, gradescope_zip):
    broken = tmp_path / "broken"
    shutil.copytree(REPO_DIR, broken, symlinks=True, ignore=NOT_SOURCE)
    main = broken / "stage3_limited" / "main.cpp"
    main.write_text(main.read_text() + "\nint this_does_not_compile = ;\n")
    results = fake_autograder(tmp_path, gradescope_zip, broken)
    # Each stage is built on its own: stage 2 keeps its points (issue 21, Found 3).
    stage2 = [t for t in results["tests"] if t["name"].startswith("stage2_threaded/")]
    stage3 = [t for t in results["tests"] if t["name"].startswith("stage3_limited/")]
    assert all(t["status"] == "passed" for t in stage2), [t["output"] for t in stage2]
    assert results["score"] == 70 + 5 and results["max_score"] == 180
    assert results["extra_data"]["status"] == "build-failed"
    assert "stage3_limited: not graded: stage3_limited was not built" in results["output"]
    assert "main.cpp" in results["output"] and "error:" in results["output"]
    assert stage3 and all(t["output"].startswith("not run: stage3_limited was not built")
                          for t in stage3)


# --------------------------------------------------------------------------------------------
# GitHub Classroom
# --------------------------------------------------------------------------------------------


def test_classroom_workflow_grades_the_reference(tmp_path):
    """The workflow's ./lab grade steps, run as they are written, on the reference: each passes
    its --fail-under (the step would be red otherwise)."""
    yaml = pytest.importorskip("yaml")  # python3-yaml: ./lab setup installs it
    bin_dir = Path(os.environ.get("LAB_BIN_DIR", REPO_DIR / "build" / "bin"))
    if bin_dir.resolve() != (REPO_DIR / "build" / "bin").resolve():
        pytest.skip("./lab grade uses the default build; this run tests another one")
    workflow = yaml.safe_load((REPO_DIR / WORKFLOW).read_text())
    steps = [step["run"] for step in workflow["jobs"]["grade"]["steps"]
             if step.get("run", "").startswith("./lab grade")]
    assert len(steps) == 2 and all("--fail-under" in run for run in steps)
    for run in steps:
        out = tmp_path / "out"
        shutil.rmtree(out, ignore_errors=True)
        command = run.replace("--out grade-results/", f"--out {out}/")
        proc = subprocess.run(["bash", "-c", command], cwd=REPO_DIR, capture_output=True,
                              text=True, timeout=300, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, f"{run}\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
    # And --fail-under does fail: the same step against a server with no limits.
    quirky = f"{sys.executable} {QUIRKY} -p {{port}} -r {{root}} --no-limits"
    proc = subprocess.run([GRADER_PYTHON, str(GRADER), "grade", "--profile", "limited",
                           "--fail-under", "100", "--checks", "index_html,total_limit", "--out",
                           str(tmp_path / "low"), "--server-cmd", quirky], capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr


def test_lab_grade_paths_are_the_callers(tmp_path):
    """./lab grade run from elsewhere: a relative --out and a relative server file mean the
    caller's directory, not the kit's."""
    bin_dir = Path(os.environ.get("LAB_BIN_DIR", REPO_DIR / "build" / "bin"))
    if bin_dir.resolve() != (REPO_DIR / "build" / "bin").resolve():
        pytest.skip("./lab grade uses the default build; this run tests another one")
    shutil.copy(QUIRKY, tmp_path / "my_server.py")
    proc = subprocess.run([str(REPO_DIR / "lab"), "grade", "--profile", "threaded", "--checks",
                           "index_html", "--out", "rel-out", "--server-cmd",
                           f"{sys.executable} my_server.py -p {{port}}"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-2000:]
    results = json.loads((tmp_path / "rel-out" / "results.json").read_text())
    assert results["score"] == 10, results
    assert not (REPO_DIR / "rel-out").exists()


# --------------------------------------------------------------------------------------------
# A folder of submissions
# --------------------------------------------------------------------------------------------

PRESETS = json.dumps({
    "version": 3,
    "configurePresets": [{"name": "default", "binaryDir": "${sourceDir}/build",
                          "cacheVariables": {"CMAKE_BUILD_TYPE": "Release"}}],
    "buildPresets": [{"name": "default", "configurePreset": "default"}],
})


def fake_submission(root: Path, name: str, server: str, cmake_extra: str = "",
                    broken: str = "") -> Path:
    """A CMake project whose two stages are shell wrappers running @p server, with a copy of
    quirky_server.py (a server may run ``${CMAKE_SOURCE_DIR}/quirky_server.py``: the grader
    builds and runs a copy of the submission, which sees nothing of the kit); building the
    stage named @p broken fails, as a compiler error would."""
    folder = root / name
    folder.mkdir(parents=True)
    shutil.copy(QUIRKY, folder / "quirky_server.py")
    (folder / "CMakePresets.json").write_text(PRESETS)
    (folder / "CMakeLists.txt").write_text(f"""
cmake_minimum_required(VERSION 3.21)
project(fake NONE)
{cmake_extra}
foreach(stage stage2_threaded stage3_limited)
  file(WRITE ${{CMAKE_BINARY_DIR}}/bin/${{stage}} "#!/bin/sh\\nexec {server} \\"$@\\"\\n")
  file(CHMOD ${{CMAKE_BINARY_DIR}}/bin/${{stage}} PERMISSIONS OWNER_READ OWNER_WRITE OWNER_EXECUTE
       GROUP_READ GROUP_EXECUTE WORLD_READ WORLD_EXECUTE)
  add_custom_target(${{stage}})
endforeach()
""")
    if broken:
        text = (folder / "CMakeLists.txt").read_text()
        (folder / "CMakeLists.txt").write_text(text.replace(
            "  add_custom_target(${stage})\n",
            f'  if(stage STREQUAL "{broken}")\n'
            f'    add_custom_target(${{stage}} COMMAND sh -c "echo main.cpp:7: error: {broken} broken; exit 1")\n'
            f"  else()\n    add_custom_target(${{stage}})\n  endif()\n"))
    return folder


@pytest.fixture
def submissions(tmp_path) -> Path:
    root = tmp_path / "submissions"
    fake_submission(root, "alice", f"{sys.executable} ${{CMAKE_SOURCE_DIR}}/quirky_server.py")
    fake_submission(root, "bob", "true", 'message(FATAL_ERROR "bob forgot a semicolon")')
    token = f"grader-test-{uuid.uuid4().hex}"
    fake_submission(root, "carol", f"{sys.executable} -c 'import time; time.sleep(1000)' {token}")
    (root / "carol" / "token").write_text(token)
    return root


def test_grade_all(tmp_path, submissions):
    out = tmp_path / "out"
    token = (submissions / "carol" / "token").read_text()
    start = time.monotonic()
    proc = autograde("all", str(submissions), "--out", str(out), "--jobs", "2", "--budget", "12",
                     "--checks", "index_html,traversal", timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert time.monotonic() - start < 120
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert set(rows) == {"alice", "bob", "carol"}
    assert rows["alice"]["status"] == "ok"
    assert rows["alice"]["score"] == rows["alice"]["max"] == "40"
    assert rows["alice"]["stage3_limited/traversal"] == "10"
    assert rows["bob"]["status"] == "build-failed" and rows["bob"]["score"] == "0"
    assert "bob forgot a semicolon" in json.loads((out / "bob" / "results.json").read_text())["output"]
    assert rows["carol"]["status"] == "timeout"
    assert json.loads((out / "carol" / "results.json").read_text())["output"].startswith("INCOMPLETE")
    assert not no_process_mentions(token), "carol's server outlived her time budget"


def test_grade_all_stage_that_does_not_build_keeps_the_others(tmp_path):
    """Each stage is built and graded on its own: a stage 3 that does not compile scores 0,
    stage 2 keeps its points (issue 21, Found 3)."""
    root = tmp_path / "submissions"
    server = f"{sys.executable} ${{CMAKE_SOURCE_DIR}}/quirky_server.py"
    fake_submission(root, "dave", server, broken="stage3_limited")
    out = tmp_path / "out"
    proc = autograde("all", str(root), "--out", str(out), "--budget", "60",
                     "--checks", "index_html,traversal", timeout=300)
    assert proc.returncode == 0, proc.stderr
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    dave = rows["dave"]
    assert dave["status"] == "build-failed"
    assert dave["score"] == "20" and dave["max"] == "40", dave
    assert dave["stage2_threaded/index_html"] == "10" and dave["stage2_threaded/traversal"] == "10"
    assert dave["stage3_limited/index_html"] == "0"
    results = json.loads((out / "dave" / "results.json").read_text())
    assert "stage3_limited: not graded: stage3_limited was not built" in results["output"]
    assert "main.cpp:7: error: stage3_limited broken" in results["output"]
    stage3 = [t for t in results["tests"] if t["name"].startswith("stage3_limited/")]
    assert stage3 and all(t["output"].startswith("not run: stage3_limited was not built")
                          for t in stage3)


PYTHON_SERVER = REPO_DIR / "python" / "http_server.py"


@needs_root
def test_grade_all_python_submission_in_the_earlier_layout(tmp_path):
    """One http_server.py alone, as the earlier project handed it in: ./lab grade-all with no
    options runs it as `python3 http_server.py -p PORT` (+ the limits for stage 3) in a copy of
    the document root, sandboxed, and gives the reference full marks (issue 21, Found 2)."""
    folder = tmp_path / "submissions" / "erin"
    folder.mkdir(parents=True)
    shutil.copy(PYTHON_SERVER, folder / "http_server.py")
    out = tmp_path / "out"
    proc = subprocess.run([str(REPO_DIR / "lab"), "grade-all", str(tmp_path / "submissions"),
                           "--out", str(out)], capture_output=True, text=True, timeout=900,
                          stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    results = json.loads((out / "erin" / "results.json").read_text())
    failed = {t["name"]: t["output"] for t in results["tests"] if t["status"] != "passed"}
    assert not failed, failed
    assert rows["erin"]["status"] == "ok"
    assert rows["erin"]["score"] == rows["erin"]["max"] == "170"
    assert results["extra_data"]["sandbox"] == "bwrap"
    build_log = (out / "erin" / "build.log").read_text()
    assert "http_server.py (Python" in build_log


MANIFEST_TEXT = """
# the same server, under another name, its own way
[stage2_threaded]
run = "python3 my_server.py -p {port} -r {root}"

[stage3_limited]
build = "cp my_server.py limited.py"
run = "cd {root} && python3 {src}/limited.py -p {port} -maxclient {maxclient} -maxtotal {maxtotal}"
"""


@needs_root
def test_grade_all_manifest_submission(tmp_path):
    """lab-submission.toml says per stage how to build and run: graded right; a manifest with
    an unknown placeholder is refused with a clear message, a missing stage scores 0 there."""
    root = tmp_path / "submissions"
    good = root / "frank"
    good.mkdir(parents=True)
    shutil.copy(PYTHON_SERVER, good / "my_server.py")
    (good / "lab-submission.toml").write_text(MANIFEST_TEXT)
    typo = root / "gina"
    typo.mkdir()
    shutil.copy(PYTHON_SERVER, typo / "my_server.py")
    (typo / "lab-submission.toml").write_text(
        '[stage2_threaded]\nrun = "python3 my_server.py -p {prot}"\n')
    half = root / "hank"
    half.mkdir()
    shutil.copy(PYTHON_SERVER, half / "my_server.py")
    (half / "lab-submission.toml").write_text(MANIFEST_TEXT.split("[stage3_limited]")[0])
    out = tmp_path / "out"
    proc = autograde("all", str(root), "--out", str(out), "--jobs", "2", "--checks",
                     "index_html,traversal", timeout=600)
    assert proc.returncode == 0, proc.stderr
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    frank = json.loads((out / "frank" / "results.json").read_text())
    failed = {t["name"]: t["output"] for t in frank["tests"] if t["status"] != "passed"}
    assert not failed, failed
    assert rows["frank"]["status"] == "ok" and rows["frank"]["score"] == rows["frank"]["max"]
    assert rows["gina"]["status"] == "build-failed" and rows["gina"]["score"] == "0"
    gina = json.loads((out / "gina" / "results.json").read_text())["output"]
    assert "unknown placeholder {prot}" in gina
    assert rows["hank"]["status"] == "build-failed"
    assert rows["hank"]["stage2_threaded/index_html"] == "10"
    assert rows["hank"]["stage3_limited/index_html"] == "0"
    hank = json.loads((out / "hank" / "results.json").read_text())["output"]
    assert "lab-submission.toml has no [stage3_limited]" in hank


def test_grade_all_regrade_merges_and_roster(tmp_path, submissions):
    """A regrade of one student merges into grades.csv (the other rows kept); --roster adds
    each student's id and name, and grades-lms.csv holds student_id,name,total (issue 21)."""
    out = tmp_path / "out"
    shutil.rmtree(submissions / "carol")
    first = autograde("all", str(submissions), "--out", str(out), "--checks", "index_html",
                      timeout=300)
    assert first.returncode == 0, first.stderr
    regrade = tmp_path / "regrade"
    fake_submission(regrade, "bob", f"{sys.executable} ${{CMAKE_SOURCE_DIR}}/quirky_server.py")
    roster = tmp_path / "roster.csv"
    roster.write_text("student_id,name,folder,section\n"
                      "s-001,\"Lovelace, Ada\",alice,A\ns-002,Bob Babbage,bob,B\n"
                      "s-003,Carol Absent,carol,B\n")
    again = autograde("all", str(regrade), "--out", str(out), "--checks", "index_html",
                      "--roster", str(roster), timeout=300)
    assert again.returncode == 0, again.stderr
    with (out / "grades.csv").open() as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames
        rows = {row["student"]: row for row in reader}
    assert header[:5] == ["student", "student_id", "name", "score", "max"]
    assert set(rows) == {"alice", "bob"}
    assert rows["alice"]["score"] == "20" and rows["alice"]["status"] == "ok"  # kept
    assert rows["bob"]["score"] == "20" and rows["bob"]["status"] == "ok"  # regraded
    assert (rows["alice"]["student_id"], rows["alice"]["name"]) == ("s-001", "Lovelace, Ada")
    assert (rows["bob"]["student_id"], rows["bob"]["name"]) == ("s-002", "Bob Babbage")
    lms = list(csv.reader((out / "grades-lms.csv").open()))
    assert lms == [["student_id", "name", "total"], ["s-001", "Lovelace, Ada", "20"],
                   ["s-002", "Bob Babbage", "20"]]
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temporary file left"
    bad = tmp_path / "bad.csv"
    bad.write_text("folder,name\nalice,Ada\n")
    refused = autograde("all", str(regrade), "--out", str(out), "--roster", str(bad))
    assert refused.returncode == 2 and "no column student_id" in refused.stderr
    assert list(csv.DictReader((out / "grades.csv").open())) == list(rows.values())


def test_grade_all_reports_readable_hidden_checks_once(tmp_path, submissions):
    """Hidden checks others can read are reported once, before the batch: refused where only
    permissions hide them (the uid layer), a note under bubblewrap."""
    hidden = tmp_path / "hidden"
    shutil.copytree(HIDDEN, hidden)
    os.chmod(hidden, 0o755)
    for path in hidden.iterdir():
        os.chmod(path, 0o644)
    shutil.rmtree(submissions / "carol")
    refused = autograde("all", str(submissions), "--out", str(tmp_path / "o1"), "--sandbox",
                        "uid", "--hidden-dir", str(hidden), "--checks", "index_html")
    assert refused.returncode == 2, refused.stderr
    assert refused.stderr.count("can be read by others") == 1, refused.stderr
    assert not (tmp_path / "o1" / "grades.csv").exists(), "refused before the batch"
    noted = autograde("all", str(submissions), "--out", str(tmp_path / "o2"), "--hidden-dir",
                      str(hidden), "--checks", "index_html", timeout=300)
    assert noted.returncode == 0, noted.stderr
    assert noted.stderr.count("can be read by others") == 1, noted.stderr
    missing = autograde("all", str(submissions), "--out", str(tmp_path / "o3"), "--hidden-dir",
                        str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "not a directory" in missing.stderr


def test_grade_all_stops_cleanly_on_sigterm(tmp_path, submissions):
    out = tmp_path / "out"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    token = (submissions / "carol" / "token").read_text()
    shutil.rmtree(submissions / "bob")
    proc = subprocess.Popen([GRADER_PYTHON, str(GRADER), "batch", "all", str(submissions), "--out",
                             str(out), "--jobs", "2", "--budget", "300"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    _, stderr = sigterm_once_started(proc, token, "carol's server")
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert not no_process_mentions(token), "a server outlived the batch"
    assert not list(scratch.iterdir()), "temporary directories left behind"
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert rows["carol"]["status"] == "incomplete"
    assert rows["alice"]["status"] == "incomplete"  # 300 s of checks cannot have finished


# --------------------------------------------------------------------------------------------
# Hostile submissions (issue 20)
# --------------------------------------------------------------------------------------------
# Hostile submissions against the grader (issue 20), graded as a course would grade them.
#
# One batch, ``./lab grade-all --jobs 2`` with the default options (the sandbox chooses its own
# layer), holds two honest copies (one sorted before, one after the hostile ones) and one hostile
# submission per attack (harness/tests/testdata/hostile_payload.py):
#
#   h-tamper     rewrites its results.json and grades.csv while it is graded, and keeps at it
#                from a daemon after grading is over
#   h-reader     prints the rubric, the hidden checks, the other students' sources and the
#                output directory into its build log and its server's log (and fails every check)
#   h-chain      a fork chain that changes its pid every 300 us and overwrites every graded
#                binary it finds with `exit 3`
#   h-kitwriter  writes into the kit's tree, the machine's /tmp and another student's sources
#   h-spy        logs its cwd, argv, environment and open files, to learn the hidden check's name
#   h-biglog     writes 2 GiB to its log
#   h-procs      starts 500 processes during its build
#
# Expected, every run: both honest copies at full marks; each hostile one at its true score
# (the payloads serve correctly otherwise; h-reader's server fails everything); no hidden check
# id, rubric text, hidden check source or other student's source in anything visible; no payload
# process 5 s after the batch; the kit's tree unchanged; the output directory under 200 MiB.
# The same batch then goes through the Gradescope dry run, one submission per /autograder.
#
# Honest submissions are cheap (quirky_server.py behind shell wrappers, no compiler) and only a
# few checks run, one of them hidden, so the batch takes about a minute.

PAYLOAD = TESTDATA / "hostile_payload.py"
#: Two visible checks and the hidden one, on both graded programs.
CHECKS = "index_html,traversal,subdir_index"
HIDDEN_ID = "subdir_index"
#: Text only the hidden check's source holds, and text only the rubric holds.
HIDDEN_TEXT = "An example hidden check"
RUBRIC_TEXT = "Maximum per profile"
ATTACKS = ("tamper", "reader", "chain", "kitwriter", "spy", "biglog", "procs")
#: What each submission truly earns, as a share of the maximum.
TRUE_SHARE = {**{f"h-{attack}": 1.0 for attack in ATTACKS}, "h-reader": 0.0,
              "aa-honest": 1.0, "zz-honest": 1.0}
MAX_OUTPUT_BYTES = 200 << 20


def make_batch(root: Path, aims: dict, marker: str) -> dict:
    """The submissions under @p root: honest ones with a secret in their sources, hostile ones
    with the payload and a config.json aiming at @p aims. Returns {name: secret}."""
    secrets = {}
    python = sys.executable
    for name in ("aa-honest", "zz-honest"):
        folder = fake_submission(root, name, f"{python} ${{CMAKE_SOURCE_DIR}}/quirky_server.py")
        secrets[name] = f"SOURCE-SECRET-{uuid.uuid4().hex}"
        (folder / "solution.txt").write_text(secrets[name] + "\n")
    for attack in ATTACKS:
        name = f"h-{attack}"
        folder = fake_submission(
            root, name, f"{python} ${{CMAKE_SOURCE_DIR}}/hostile_payload.py server "
                        f"${{CMAKE_SOURCE_DIR}}/config.json",
            f'execute_process(COMMAND {python} ${{CMAKE_SOURCE_DIR}}/hostile_payload.py build '
            f'${{CMAKE_SOURCE_DIR}}/config.json {marker})')
        shutil.copy(PAYLOAD, folder / "hostile_payload.py")
        (folder / "config.json").write_text(json.dumps({**aims, "attack": attack, "marker": marker}))
    return secrets


def aims_for(out_results: list, grades: list, submissions: list, outputs: list, tmp_plant: Path) -> dict:
    """What the payloads aim at: results to rewrite, secrets to read, files to plant, binaries
    to overwrite."""
    return {
        "results": [str(p) for p in out_results],
        "grades": [str(p) for p in grades],
        "read": [str(REPO_DIR / "harness" / "grader" / "rubric.toml"), str(HIDDEN / "*.py"),
                 *[f"{s}/**/solution.txt" for s in submissions], "/tmp/**/solution.txt",
                 *[f"{o}/**/*" for o in outputs]],
        "plant": [str(REPO_DIR / "harness" / "grader" / "planted.py"), str(REPO_DIR / "planted.txt"),
                  str(tmp_plant), *[f"{s}/aa-honest/CMakeLists.txt" for s in submissions]],
        "overwrite": ["/tmp/*/src/build/bin/stage*", "/tmp/*/*/src/build/bin/stage*",
                      *[f"{s}/*/build/bin/stage*" for s in submissions]],
    }


def payload_processes(marker: str) -> list:
    """Processes whose command line carries @p marker."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid():
            try:
                if marker.encode() in (entry / "cmdline").read_bytes():
                    found.append(entry.name)
            except OSError:
                continue
    return found


def visible_text(results: dict) -> str:
    """What a student sees of a results.json (Gradescope hides the hidden tests)."""
    return "\n".join([results.get("output", "")] + [
        f"{t['name']}\n{t.get('output', '')}" for t in results.get("tests", [])
        if t.get("visibility") == "visible"])


def tree_bytes(path: Path) -> int:
    return sum(p.lstat().st_size for p in path.rglob("*"))


def git_status() -> str:
    return subprocess.run(["git", "status", "--porcelain", "--ignored=no"], cwd=REPO_DIR,
                          capture_output=True, text=True, check=True).stdout


def check_secrets_kept(out: Path, secrets: dict, extra_text: str = "") -> None:
    """Nothing secret in anything of @p out (logs included), and no hidden check id in what
    students see."""
    for path in out.rglob("*"):
        if not path.is_file():
            continue
        text = path.read_bytes().decode("utf-8", "replace")
        for secret in (HIDDEN_TEXT, RUBRIC_TEXT, *secrets.values()):
            assert secret not in text, f"{secret} leaked into {path}"
        if path.parent.name == "logs" or path.name == "build.log":  # what the submission wrote
            assert HIDDEN_ID not in text, f"the hidden check's id reached the server: {path}"
    assert HIDDEN_ID not in extra_text


def check_scores(rows: dict, results: dict) -> None:
    full = results["aa-honest"]["max_score"]
    for name, share in TRUE_SHARE.items():
        assert results[name]["score"] == pytest.approx(share * full), (name, visible_text(results[name]))
        assert rows[name]["score"] == f"{share * full:g}", (name, rows[name])
        assert HIDDEN_ID not in visible_text(results[name]), name


@needs_root
def test_hostile_batch(tmp_path):
    marker = f"PAYLOAD-{uuid.uuid4().hex}"
    subs = tmp_path / "submissions"
    out = tmp_path / "out"
    tmp_plant = Path("/tmp") / f"planted-{uuid.uuid4().hex}"
    names = ["aa-honest", "zz-honest", *[f"h-{a}" for a in ATTACKS]]
    aims = aims_for([out / name / "results.json" for name in names], [out / "grades.csv"],
                    [subs], [out], tmp_plant)
    secrets = make_batch(subs, aims, marker)
    honest_cmake = (subs / "aa-honest" / "CMakeLists.txt").read_text()
    before = git_status()
    start = time.monotonic()
    try:
        proc = subprocess.run([str(REPO_DIR / "lab"), "grade-all", str(subs), "--out", str(out),
                               "--jobs", "2", "--hidden-dir", str(HIDDEN), "--checks", CHECKS,
                               "--budget", "120"], capture_output=True, text=True, timeout=600,
                              stdin=subprocess.DEVNULL)
        elapsed = time.monotonic() - start
        print(f"hostile batch: {elapsed:.0f} s\n{proc.stderr[-3000:]}")
        assert proc.returncode == 0, proc.stderr[-3000:]
        time.sleep(5)
        assert payload_processes(marker) == [], "a payload outlived the batch"
        rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
        results = {name: json.loads((out / name / "results.json").read_text()) for name in names}
        assert {row["status"] for row in rows.values()} == {"ok"}, rows
        check_scores(rows, results)
        assert all(r["extra_data"]["sandbox"] in ("bwrap", "unshare", "uid") for r in results.values())
        assert "Sandbox: " in results["aa-honest"]["output"]
        assert "a loopback network of its own" in results["aa-honest"]["output"]
        check_secrets_kept(out, secrets, proc.stdout + proc.stderr)
        assert git_status() == before, "a submission wrote into the kit's tree"
        assert not tmp_plant.exists(), "a submission wrote into the machine's /tmp"
        assert (subs / "aa-honest" / "CMakeLists.txt").read_text() == honest_cmake
        assert tree_bytes(out) < MAX_OUTPUT_BYTES
        assert "cap of 64 MiB per file" in visible_text(results["h-biglog"])
        assert "cap of 256 processes" in results["h-procs"]["output"]
        assert out.stat().st_mode & 0o077 == 0
        assert all((out / name / "results.json").stat().st_mode & 0o077 == 0 for name in names)
    finally:
        for path in (tmp_plant, REPO_DIR / "planted.txt", REPO_DIR / "harness" / "grader" / "planted.py"):
            path.unlink(missing_ok=True)


@needs_root
def test_hostile_batch_on_gradescope(tmp_path):
    """The same submissions through run_autograder, each in its own fake /autograder."""
    marker = f"PAYLOAD-{uuid.uuid4().hex}"
    names = ["aa-honest", "zz-honest", *[f"h-{a}" for a in ATTACKS]]
    prefixes = {name: tmp_path / "gs" / name / "autograder" for name in names}
    tmp_plant = Path("/tmp") / f"planted-{uuid.uuid4().hex}"
    aims = aims_for([p / "results" / "results.json" for p in prefixes.values()], [],
                    [p / "submission" for p in prefixes.values()] + [tmp_path / "subs"],
                    [p / "results" for p in prefixes.values()] + [p / "source" for p in prefixes.values()],
                    tmp_plant)
    subs = tmp_path / "subs"
    secrets = make_batch(subs, aims, marker)
    package = tmp_path / "autograder.zip"
    proc = autograde("package", "gradescope", str(package), "--hidden-dir", str(HIDDEN),
                     "--checks", CHECKS, "--budget", "120")
    assert proc.returncode == 0, proc.stderr
    before = git_status()
    shims = tmp_path / "shims"
    shims.mkdir()
    (shims / "python3").symlink_to(GRADER_PYTHON)
    results = {}
    start = time.monotonic()
    try:
        for name, prefix in prefixes.items():
            with zipfile.ZipFile(package) as zf:
                zf.extractall(prefix / "source")
            shutil.copy(prefix / "source" / "run_autograder", prefix / "run_autograder")
            shutil.copytree(subs / name, prefix / "submission", symlinks=True)
            (prefix / "results").mkdir()
        for name, prefix in prefixes.items():
            env = {**os.environ, "AUTOGRADER_ROOT": str(prefix), "PATH": f"{shims}:{os.environ['PATH']}"}
            run = subprocess.run(["bash", str(prefix / "run_autograder")], env=env, capture_output=True,
                                 text=True, timeout=300, stdin=subprocess.DEVNULL)
            assert run.returncode == 0, (name, run.stderr[-3000:])
            results[name] = json.loads((prefix / "results" / "results.json").read_text())
            assert HIDDEN_ID not in run.stdout, name
        print(f"Gradescope dry run of the batch: {time.monotonic() - start:.0f} s")
        time.sleep(5)
        assert payload_processes(marker) == [], "a payload outlived its run_autograder"
        for prefix in prefixes.values():
            check_secrets_kept(prefix / "results", secrets)
        rows = {name: {"score": f"{r['score']:g}"} for name, r in results.items()}
        check_scores(rows, results)
        assert git_status() == before, "a submission wrote into the kit's tree"
        assert not tmp_plant.exists(), "a submission wrote into the machine's /tmp"
    finally:
        for path in (tmp_plant, REPO_DIR / "planted.txt", REPO_DIR / "harness" / "grader" / "planted.py"):
            path.unlink(missing_ok=True)


@needs_root
def test_uid_layer_batch(tmp_path):
    """Where namespaces are not allowed (``--sandbox uid``, as in most containers), a uid per
    job and kill(-1) as that uid still keep results, neighbours and the machine safe from the
    attacks a uid can stop: a fork chain, tampering with results, 500 processes."""
    marker = f"PAYLOAD-{uuid.uuid4().hex}"
    subs = tmp_path / "submissions"
    out = tmp_path / "out"
    names = ["aa-honest", "zz-honest", "h-chain", "h-tamper", "h-procs"]
    aims = aims_for([out / name / "results.json" for name in names], [out / "grades.csv"],
                    [subs], [out], tmp_path / "unused")
    make_batch(subs, aims, marker)
    for attack in set(ATTACKS) - {"chain", "tamper", "procs"}:
        shutil.rmtree(subs / f"h-{attack}")
    hidden = tmp_path / "hidden"  # with only a uid, permissions must hide the hidden checks
    shutil.copytree(HIDDEN, hidden)
    os.chmod(hidden, 0o700)
    proc = autograde("all", str(subs), "--out", str(out), "--jobs", "2", "--sandbox", "uid",
                     "--hidden-dir", str(hidden), "--checks", CHECKS, "--budget", "120",
                     timeout=600)
    print(proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    time.sleep(5)
    assert payload_processes(marker) == [], "a payload outlived the batch"
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    results = {name: json.loads((out / name / "results.json").read_text()) for name in names}
    full = results["aa-honest"]["max_score"]
    for name in names:
        assert results[name]["score"] == full and rows[name]["score"] == f"{full:g}", name
        assert results[name]["extra_data"]["sandbox"] == "uid"
    assert "The build left" in results["h-procs"]["output"]


#: Connects to 127.0.0.1:argv[1] and prints what the listener there says (its name).
REACH = ("import socket, sys\n"
         "try:\n"
         "    with socket.create_connection(('127.0.0.1', int(sys.argv[1])), timeout=2) as s:\n"
         "        print(s.recv(64).decode())\n"
         "except OSError as error:\n"
         "    print('not reached:', error)\n")


class NamedListener:
    """A listener on 127.0.0.1, in the network namespace of the thread that makes it, that
    tells whoever connects its name (so that a port number taken by some other program in
    another namespace is never mistaken for it)."""

    def __init__(self, name: str):
        self.name = name
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            with client:
                client.sendall(self.name.encode())

    def reached_from_here(self) -> bool:
        """Whether a new process started from the calling thread reaches this listener."""
        proc = subprocess.run([sys.executable, "-c", REACH, str(self.port)],
                              capture_output=True, text=True, timeout=30)
        return proc.stdout.strip() == self.name


@needs_root
def test_each_job_has_a_loopback_of_its_own():
    """Jobs graded side by side (--jobs 2) cannot reach each other's servers: each grading
    thread moves into a network namespace of its own (private_loopback()), and what it starts
    reaches its own listeners only, while the machine's processes cannot reach the job's."""
    from grader.sandbox import private_loopback

    machine = NamedListener(f"machine-{uuid.uuid4().hex}")
    listeners: dict = {}
    seen: dict = {}
    ready, done = threading.Barrier(3), threading.Event()

    def job(name: str) -> None:
        seen[name, "own"] = private_loopback()
        listeners[name] = own = NamedListener(f"{name}-{uuid.uuid4().hex}")
        seen[name, "reaches itself"] = own.reached_from_here()
        seen[name, "reaches the machine"] = machine.reached_from_here()
        ready.wait(30)  # both jobs listen now: may one reach the other's server?
        seen[name, "reaches the other job"] = listeners["b" if name == "a" else "a"].reached_from_here()
        done.wait(30)
        own.sock.close()

    threads = [threading.Thread(target=job, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    ready.wait(30)
    machine_reaches = {name: listeners[name].reached_from_here() for name in "ab"}
    done.set()
    for thread in threads:
        thread.join(30)
    assert machine.reached_from_here(), "the test's own thread lost the machine's network"
    machine.sock.close()
    for name in "ab":
        assert seen[name, "own"], "unshare(CLONE_NEWNET) failed as root"
        assert seen[name, "reaches itself"], f"job {name} cannot reach its own server"
        assert not seen[name, "reaches the machine"], f"job {name} reached the machine's loopback"
        assert not seen[name, "reaches the other job"], f"job {name} reached the other job's server"
        assert not machine_reaches[name], f"the machine reached job {name}'s server"


@needs_root
def test_unsandboxed_as_me_is_reported(tmp_path):
    """Running as the invoking user takes an explicit option, and the report says so."""
    subs = tmp_path / "submissions"
    fake_submission(subs, "mine", f"{sys.executable} ${{CMAKE_SOURCE_DIR}}/quirky_server.py")
    out = tmp_path / "out"
    proc = autograde("submission", str(subs / "mine"), "--out", str(out), "--unsandboxed-as-me",
                     "--checks", "index_html", "--budget", "60")
    assert proc.returncode == 0, proc.stderr
    assert "--unsandboxed-as-me" in proc.stderr
    results = json.loads((out / "results.json").read_text())
    assert results["score"] == results["max_score"] == 20
    assert results["extra_data"]["sandbox"] == "none"
    assert "Sandbox: none: the code ran as the invoking user (--unsandboxed-as-me)." in results["output"]
    refused = autograde("package", "gradescope", str(tmp_path / "ag.zip"), "--unsandboxed-as-me")
    assert refused.returncode == 2 and "cannot go into a Gradescope autograder" in refused.stderr


def test_package_carries_every_option(tmp_path):
    """./lab package gradescope writes every grading option into the zip (none is dropped)."""
    package = tmp_path / "ag.zip"
    proc = autograde("package", "gradescope", str(package), "--timeout-scale", "3", "--checks",
                     "index_html", "--sandbox", "uid", "--uids", "61500-61510", "--memory", "1024",
                     "--max-procs", "100", "--max-file-size", "8", "--max-reply", "16",
                     "--log-bytes", "64", "--budget", "300", "--log-lines", "5")
    assert proc.returncode == 0, proc.stderr
    with zipfile.ZipFile(package) as zf:
        settings = json.loads(zf.read("autograder.json"))
    assert settings["timeout_scale"] == 3 and settings["checks"] == "index_html"
    assert settings["sandbox"] == "uid" and settings["uids"] == [61500, 61510]
    assert settings["caps"] == {"memory_mib": 1024, "procs": 100, "file_mib": 8}
    assert settings["max_reply_mib"] == 16 and settings["log_bytes_kib"] == 64
    assert settings["budget"] == 300 and settings["log_lines"] == 5
    old = autograde("package", "gradescope", str(package), "--run-as", "nobody")
    assert old.returncode == 2, "an option the zip cannot carry must be refused, not dropped"
    roster = autograde("package", "gradescope", str(package), "--roster", str(tmp_path / "r.csv"))
    assert roster.returncode == 2, "--roster is grade-all's: a zip grades one student at a time"
