"""Tests of grading at course scale (harness/autograde.py):

- the Gradescope zip has setup.sh and run_autograder at its root, and its run_autograder,
  run on a fake /autograder tree (AUTOGRADER_ROOT), under the oldest Python on the machine,
  gives the reference full marks, a fresh handout few points, and a submission that does not
  compile 0 points with the compiler's message;
- the GitHub Classroom workflow is in every handout, and its grading steps, run here on the
  reference, pass their --fail-under;
- `all` grades a folder of submissions into grades.csv (ok, build-failed, timeout), and SIGTERM
  stops every submission's processes, removes temporary directories and marks what did not
  finish incomplete.

Submissions for `all` are tiny CMake projects without a compiler (their "stages" are shell
wrappers around harness/testdata/quirky_server.py), so the batch logic is tested in seconds.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import time
import uuid
import zipfile
from pathlib import Path

import pytest

from conftest import HARNESS_DIR
from test_grader import GRADER_PYTHON, no_process_mentions, sigterm_once_started
from test_handout import skip_under_sanitizers

REPO_DIR = HARNESS_DIR.parent
AUTOGRADE = HARNESS_DIR / "autograde.py"
HANDOUT = HARNESS_DIR / "handout.py"
HIDDEN = HARNESS_DIR / "testdata" / "hidden_checks"
QUIRKY = HARNESS_DIR / "testdata" / "quirky_server.py"
#: The kit's own files, without build output or history: what a student's repository holds.
WORKFLOW = ".github/workflows/classroom.yml"
NOT_SOURCE = shutil.ignore_patterns(".git", "build", "build-*", "__pycache__", "grade-results")


@pytest.fixture(autouse=True)
def plain_build_only():
    """Nothing here runs the build under test (submissions are built afresh, with the default
    preset): run these once, with the plain build, not again under each sanitizer preset."""
    skip_under_sanitizers()


def autograde(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([GRADER_PYTHON, str(AUTOGRADE), *args], capture_output=True, text=True,
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
    assert {"setup.sh", "run_autograder", "autograder.json", "harness/grade.py",
            "harness/autograde.py", "harness/grader/cli.py", "rubric.toml", "www/index.html",
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
    assert results["score"] == 0 and results["max_score"] == 180
    assert results["extra_data"]["status"] == "build-failed"
    assert "The submission was not built" in results["output"]
    assert "main.cpp" in results["output"] and "error:" in results["output"]
    assert all(t["output"].startswith("not run: the submission was not built") for t in results["tests"])


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
    proc = subprocess.run([GRADER_PYTHON, str(HARNESS_DIR / "grade.py"), "--profile", "limited",
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


def fake_submission(root: Path, name: str, server: str, cmake_extra: str = "") -> Path:
    """A CMake project whose two stages are shell wrappers running @p server, with a copy of
    quirky_server.py (a server may run ``${CMAKE_SOURCE_DIR}/quirky_server.py``: the grader
    builds and runs a copy of the submission, which sees nothing of the kit)."""
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


def test_grade_all_stops_cleanly_on_sigterm(tmp_path, submissions):
    out = tmp_path / "out"
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    token = (submissions / "carol" / "token").read_text()
    shutil.rmtree(submissions / "bob")
    proc = subprocess.Popen([GRADER_PYTHON, str(AUTOGRADE), "all", str(submissions), "--out",
                             str(out), "--jobs", "2", "--budget", "300"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, "TMPDIR": str(scratch)})
    _, stderr = sigterm_once_started(proc, token, "carol's server")
    assert proc.returncode == 128 + signal.SIGTERM, stderr
    assert not no_process_mentions(token), "a server outlived the batch"
    assert not list(scratch.iterdir()), "temporary directories left behind"
    rows = {row["student"]: row for row in csv.DictReader((out / "grades.csv").open())}
    assert rows["carol"]["status"] == "incomplete"
    assert rows["alice"]["status"] == "incomplete"  # 300 s of checks cannot have finished

