"""Grading a whole submission: build it as the submission contract says, grade each of its
programs with its profile, and merge the reports into one results.json. Gradescope's
run_autograder and ``./lab grade-all`` both come here.

Everything the submission runs (its build, its servers) runs in its own session, under the
throwaway user when one is given, with a per-submission token in its environment; stopping a
submission (time budget spent, Ctrl-C) signals those sessions, then kills whatever still
carries the token. Python 3.8+, standard library only.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import contract
from .cli import resolve_user
from .server import as_user, find_processes, kill_all, stop_session, tail

HARNESS_DIR = Path(__file__).resolve().parent.parent
#: Environment variable marking every process a submission's grading starts.
BATCH_VARIABLE = "LAB_GRADE_SUBMISSION"
#: How long a stopped grader gets to stop its server and write its reports before SIGKILL.
GRADER_GRACE = 15.0
#: Lines of the build log shown with a build failure.
BUILD_LOG_LINES = 60
#: Not copied from a submission: build output (it must be built from source) and history.
IGNORED = shutil.ignore_patterns(".git", "build", "build-*", "grade-results")


@dataclass
class Config:
    """How submissions are graded (the same for every student of a batch)."""

    site: Path = HARNESS_DIR.parent / "www"
    rubric: Path = HARNESS_DIR / "rubric.toml"
    hidden_dirs: List[Path] = field(default_factory=list)
    maxclient: int = 12
    maxtotal: int = 60
    targets: Tuple[contract.Target, ...] = contract.TARGETS
    checks: Optional[str] = None  #: only these check ids (tests of the kit use it)
    budget: float = 900.0  #: seconds for one submission, build included
    run_as: Optional[str] = None  #: user for the build and the servers (root only)
    visibility: str = "visible"
    stdout_visibility: str = "hidden"
    log_lines: int = 20
    timeout_scale: float = 1.0
    jobs: int = max(1, os.cpu_count() or 1)  #: parallel compile jobs of one build
    python: str = sys.executable  #: interpreter for grade.py


@dataclass
class Outcome:
    """What grading one submission gave."""

    status: str  #: "ok", "incomplete", "timeout", "build-failed"
    results: dict  #: the merged results.json
    points: Dict[str, float]  #: "target/check" → score


class Stopped(Exception):
    """The batch is being stopped (Ctrl-C, SIGTERM)."""


def grade_submission(submission: Path, out: Path, config: Config,
                     stop: Optional[threading.Event] = None) -> Outcome:
    """Builds and grades @p submission; writes @p out/results.json (and per program
    @p out/<binary>/, the build log @p out/build.log). Always leaves a results.json that says
    what happened, and no process or temporary directory behind."""
    stop = stop or threading.Event()
    out.mkdir(parents=True, exist_ok=True)
    for stale in ("results.json", "build.log"):
        (out / stale).unlink(missing_ok=True)
    deadline = time.monotonic() + config.budget
    token = uuid.uuid4().hex
    user = resolve_run_as(config.run_as)
    work = Path(tempfile.mkdtemp(prefix="grade-submission-"))
    started = time.monotonic()
    listing = {t.binary: list_checks(config, t) for t in config.targets}
    try:
        source = work / "src"
        shutil.copytree(submission, source, symlinks=True, ignore=IGNORED)
        if user is not None:
            os.chmod(work, 0o755)
            for path in [source, *source.rglob("*")]:
                os.lchown(path, *user)
        built, why = build(source, out / "build.log", config, user, token, deadline, stop)
        if not built:
            status = "timeout" if why == "timeout" else ("incomplete" if why == "stopped" else "build-failed")
            results = unbuilt_results(listing, out / "build.log", why, time.monotonic() - started,
                                      config)
            return finish(out, status, results)
        parts = []
        status = "ok"
        for target in config.targets:
            part, part_status = grade_target(source, out / target.binary, target, config, token,
                                             deadline, stop)
            parts.append((target, part, listing[target.binary]))
            if part_status != "ok":
                status = part_status
                break
        for target in config.targets[len(parts):]:
            parts.append((target, None, listing[target.binary]))
        results = merge(parts, status, time.monotonic() - started, config)
        return finish(out, status, results)
    finally:
        kill_marked(token)
        shutil.rmtree(work, ignore_errors=True)


def finish(out: Path, status: str, results: dict) -> Outcome:
    results.setdefault("extra_data", {})["status"] = status
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    os.replace(tmp, out / "results.json")
    points = {t["name"].split(":", 1)[0]: t["score"] for t in results["tests"]}
    return Outcome(status, results, points)


# ---------------------------------------------------------------------------------------------
# Running the submission's processes
# ---------------------------------------------------------------------------------------------


def resolve_run_as(spec: Optional[str]) -> Optional[Tuple[int, int]]:
    """(uid, gid) of @p spec (a name or UID[:GID]), or None."""
    return resolve_user(spec) if spec else None


def run_bounded(argv: List[str], cwd: Path, log: Path, token: str, deadline: float,
                stop: threading.Event, user: Optional[Tuple[int, int]] = None,
                grace: float = 5.0) -> Tuple[str, Optional[int]]:
    """Runs @p argv in its own session, output appended to @p log, until it ends, @p deadline
    passes or @p stop is set. Returns ("done", status), ("timeout", None) or ("stopped", None).
    Stopping sends SIGTERM to its session, SIGKILL after @p grace seconds."""
    argv = as_user(user, argv)
    env = {**os.environ, BATCH_VARIABLE: token, "PYTHONUNBUFFERED": "1"}
    if user is not None:
        env["HOME"] = str(cwd)
    with open(log, "ab") as sink:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        while True:
            try:
                return "done", proc.wait(timeout=0.2)
            except subprocess.TimeoutExpired:
                pass
            if stop.is_set() or time.monotonic() >= deadline:
                why = "stopped" if stop.is_set() else "timeout"
                stop_session(proc, grace)
                return why, None
    except BaseException:
        stop_session(proc, 0)
        raise


def kill_marked(token: str) -> None:
    """Kills every process still carrying the submission's @p token (a server left running by
    a grader that was killed, a compiler of a build that ran out of time)."""
    kill_all(find_processes(f"{BATCH_VARIABLE}={token}"))


# ---------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------


def build(source: Path, log: Path, config: Config, user, token: str, deadline: float,
          stop: threading.Event) -> Tuple[bool, str]:
    """Builds the contract's binaries in @p source. Returns (built, why not)."""
    binaries = [t.binary for t in config.targets]
    for argv in contract.build_commands(binaries, config.jobs):
        with open(log, "a", encoding="utf-8") as sink:
            sink.write(f"$ {' '.join(argv)}\n")
        how, status = run_bounded(argv, source, log, token, deadline, stop, user)
        if how != "done":
            return False, how
        if status != 0:
            return False, f"`{' '.join(argv)}` exited with status {status}"
    missing = [b for b in binaries if not (source / "build" / "bin" / b).is_file()]
    if missing:
        return False, f"the build made no build/bin/{', build/bin/'.join(missing)}"
    return True, ""


def unbuilt_results(listing: Dict[str, List[dict]], log: Path, why: str, elapsed: float,
                    config: Config) -> dict:
    """results.json for a submission that could not be built: 0 points of the full maximum,
    the reason and the end of the build log visible."""
    reason = {"timeout": "the build did not finish within the time budget",
              "stopped": "grading was stopped during the build"}.get(why, why)
    tests = [test for binary, checks in listing.items()
             for test in not_run_tests(binary, checks, f"the submission was not built ({reason})")]
    visible_max = sum(t["max_score"] for t in tests if t["visibility"] == "visible")
    output = (f"The submission was not built: {reason}. 0/{visible_max:g} points on the visible "
              f"checks.\n\nLast lines of the build log:\n{tail(log, BUILD_LOG_LINES, 16000)}")
    return results_json(tests, output, elapsed, config,
                        {"complete": why not in ("timeout", "stopped"), "stopped": reason})


def not_run_tests(binary: str, checks: List[dict], why: str) -> List[dict]:
    """Gradescope tests for @p checks of @p binary that did not run, each worth 0."""
    return [{"name": f"{binary}/{c['id']}: {c['title']}", "score": 0.0, "max_score": c["points"],
             "status": "failed", "visibility": c["visibility"], "output": f"not run: {why}"}
            for c in checks]


def results_json(tests: List[dict], output: str, elapsed: float, config: Config,
                 extra: dict) -> dict:
    """A submission's results.json around @p tests (numbered here; scores summed)."""
    for number, test in enumerate(tests, 1):
        test["number"] = str(number)
    return {"score": round(sum(t["score"] for t in tests), 2),
            "max_score": sum(t["max_score"] for t in tests),
            "execution_time": round(elapsed, 3), "output": output,
            "visibility": config.visibility, "stdout_visibility": config.stdout_visibility,
            "extra_data": extra, "tests": tests}


# ---------------------------------------------------------------------------------------------
# Grading each program
# ---------------------------------------------------------------------------------------------


def grader_args(config: Config, target: contract.Target) -> List[str]:
    """The grade.py options shared by listing and grading @p target."""
    args = [config.python, str(HARNESS_DIR / "grade.py"), "--profile", target.profile,
            "--rubric", str(config.rubric), "--root", str(config.site),
            "--maxclient", str(config.maxclient), "--maxtotal", str(config.maxtotal)]
    for directory in config.hidden_dirs:
        args += ["--hidden-dir", str(directory)]
    if config.checks:
        args += ["--checks", config.checks]
    return args


def list_checks(config: Config, target: contract.Target) -> List[dict]:
    """The checks @p target is graded with (ids, titles, points, visibility)."""
    proc = subprocess.run([*grader_args(config, target), "--server-cmd", "x {port}", "--list", "json"],
                          capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise ValueError(f"the grader rejects the configuration: {proc.stderr.strip()}")
    return json.loads(proc.stdout)


def grade_target(source: Path, out: Path, target: contract.Target, config: Config, token: str,
                 deadline: float, stop: threading.Event) -> Tuple[Optional[dict], str]:
    """Runs grade.py on one program; returns (its results.json or None, status)."""
    out.mkdir(parents=True, exist_ok=True)
    command = f"{source}/{target.command}"
    args = [*grader_args(config, target), "--server-cmd", command, "--out", str(out),
            "--visibility", config.visibility, "--stdout-visibility", config.stdout_visibility,
            "--log-lines", str(config.log_lines), "--timeout-scale", str(config.timeout_scale)]
    if config.run_as:
        args += ["--run-as", config.run_as]
    how, status = run_bounded(args, out, out / "grader.log", token, deadline, stop,
                              grace=GRADER_GRACE)
    try:
        results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        results = None
    if how == "timeout":
        return results, "timeout"
    if how == "stopped":
        return results, "incomplete"
    if status != 0 or results is None:
        last = [line for line in tail(out / "grader.log", 5).splitlines() if line.strip()]
        raise GraderFailed(f"grade.py exited with status {status} for {target.binary}: "
                           f"{last[-1] if last else 'no output'}")
    complete = results.get("extra_data", {}).get("complete", False)
    return results, "ok" if complete else "incomplete"


class GraderFailed(Exception):
    """The grader itself could not run (a configuration error, not the submission's fault)."""


def merge(parts: List[Tuple[contract.Target, Optional[dict], List[dict]]], status: str,
          elapsed: float, config: Config) -> dict:
    """One results.json from each program's; programs not graded count their checks as 0."""
    tests = []
    outputs = []
    for target, results, listing in parts:
        if results is None:
            why = {"timeout": "the time budget ran out", "incomplete": "grading was stopped"}.get(
                status, "grading did not reach it")
            tests += not_run_tests(target.binary, listing, why)
            outputs.append(f"{target.binary}: not graded ({why}).")
            continue
        tests += [{**test, "name": f"{target.binary}/{test['name']}"} for test in results["tests"]]
        outputs.append(f"{target.binary}: {results['output']}")
    if status == "timeout":
        outputs.insert(0, "INCOMPLETE: the time budget ran out; the score is not final.")
    elif status == "incomplete":
        outputs.insert(0, "INCOMPLETE: grading did not finish; the score is not final.")
    return results_json(tests, "\n".join(outputs), elapsed, config, {"complete": status == "ok"})
