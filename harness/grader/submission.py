"""Grading a whole submission: build it as the submission contract says, grade each of its
programs with its profile, and merge the reports into one results.json. Gradescope's
run_autograder and ``./lab grade-all`` both come here.

Everything the submission runs (its build, its servers) runs in a sandbox (grader/sandbox.py)
as a uid of its own, never as root: its copy belongs to that uid alone, and after every run
every process of that uid is killed. The grader's own processes (the grade command) carry a
per-submission token in their environment; stopping a submission (time budget spent, Ctrl-C)
signals them, then kills whatever still carries the token. Reports are produced in a directory
the submission never sees, and copied to the output directory once its last process is gone.
Python 3.8+, standard library only.
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
from typing import Dict, List, NamedTuple, Optional, Tuple

from . import contract
from .sandbox import (Caps, Sandbox, near_cap, private_loopback, processes_of, secure_tree,
                      tasks_of)
from .server import find_processes, kill_all, stop_session, tail, tail_bytes

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
    rubric: Path = HARNESS_DIR / "grader" / "rubric.toml"
    hidden_dirs: List[Path] = field(default_factory=list)
    maxclient: int = 12
    maxtotal: int = 60
    targets: Tuple[contract.Target, ...] = contract.TARGETS
    checks: Optional[str] = None  #: only these check ids (tests of the kit use it)
    budget: float = 900.0  #: seconds for one submission, build included
    sandbox: str = "auto"  #: the layer asked for (grader/sandbox.py), or "none" (as the invoker)
    uids: Tuple[int, int] = (61000, 61999)  #: where each job's own uid is taken from
    caps: Caps = field(default_factory=Caps)
    max_reply_mib: int = 64
    log_bytes_kib: int = 256  #: end of each log kept (build log: 4 times this)
    visibility: str = "visible"
    stdout_visibility: str = "hidden"
    log_lines: int = 20
    timeout_scale: float = 1.0
    jobs: int = max(1, len(os.sched_getaffinity(0)))  #: parallel compile jobs of one build
    python: str = sys.executable  #: interpreter for the grade command


@dataclass
class Outcome:
    """What grading one submission gave."""

    status: str  #: "ok", "incomplete", "timeout", "build-failed"
    results: dict  #: the merged results.json
    points: Dict[str, float]  #: "target/check" → score


class Stopped(Exception):
    """The batch is being stopped (Ctrl-C, SIGTERM)."""


def grade_submission(submission: Path, out: Path, config: Config,
                     stop: Optional[threading.Event] = None,
                     uid: Optional[int] = None) -> Outcome:
    """Builds and grades @p submission as @p uid (None only with config.sandbox "none": as the
    invoking user); writes @p out/results.json (and per program @p out/<binary>/, the build log
    @p out/build.log) once every process of the submission is gone. Always leaves a
    results.json that says what happened, and no process or temporary directory behind."""
    stop = stop or threading.Event()
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)
    for stale in ("results.json", "build.log"):
        (out / stale).unlink(missing_ok=True)
    deadline = time.monotonic() + config.budget
    token = uuid.uuid4().hex
    if config.sandbox == "none":
        sandbox = Sandbox("none")
    elif uid is None:
        raise GraderFailed("no uid for the submission (its code never runs as the grader's user)")
    else:
        sandbox = Sandbox(config.sandbox, uid, uid, config.caps)
        sandbox.own_loopback = private_loopback()  # this thread's, for all this job starts
    work = Path(tempfile.mkdtemp(prefix="grade-"))  # 0700: the grader's alone, until opened below
    started = time.monotonic()
    listing = {t.binary: list_checks(config, t) for t in config.targets}
    reports = work / "reports"  # where the grade command writes: the submission never sees it
    reports.mkdir(mode=0o700)
    notes: List[str] = []
    try:
        try:
            source = work / "src"
            shutil.copytree(submission, source, symlinks=True, ignore=IGNORED)
            grader_tmp = work / "grader"
            grader_tmp.mkdir()
            if sandbox.sealed:
                os.chmod(work, 0o711)  # its uid passes through to its own copy, sees nothing else
                os.chmod(grader_tmp, 0o711)  # check roots are in there (names random)
                secure_tree(source, uid, uid)
                sandbox.tmp = work / "tmp"
                sandbox.tmp.mkdir(mode=0o700)
                os.chown(sandbox.tmp, uid, uid)
                sandbox.writable = [source]
            build_log = reports / "build.log"
            results, status = build_and_grade(source, reports, build_log, listing, config, sandbox,
                                              grader_tmp, token, deadline, stop, notes, started)
        finally:
            kill_marked(token)
            sandbox.reap()
        # The submission's processes are all gone: only now do its results leave the grader.
        publish(reports, out, config)
        results["output"] = "\n".join([*notes, results["output"], f"Sandbox: {sandbox.describe()}."])
        results["extra_data"]["sandbox"] = sandbox.layer
        return finish(out, status, results)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def publish(reports: Path, out: Path, config: Config) -> None:
    """Copies the grade command's reports and the logs (their ends, within the caps) from @p reports to
    @p out: files 0600, directories 0700."""
    cap = config.log_bytes_kib << 10
    for path in sorted(reports.rglob("*")):
        target = out / path.relative_to(reports)
        if path.is_symlink():
            continue
        if path.is_dir():
            target.mkdir(mode=0o700, exist_ok=True)
            continue
        is_log = path.suffix in (".stdout", ".stderr", ".log")
        data = tail_bytes(path, (4 * cap if path.name == "build.log" else cap) if is_log else 64 << 20)
        target.unlink(missing_ok=True)
        fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as sink:
            sink.write(data)


def finish(out: Path, status: str, results: dict) -> Outcome:
    results.setdefault("extra_data", {})["status"] = status
    tmp = out / ".results.json.tmp"
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as sink:
        sink.write(json.dumps(results, indent=2) + "\n")
    os.replace(tmp, out / "results.json")
    points = {t["name"].split(":", 1)[0]: t["score"] for t in results["tests"]}
    return Outcome(status, results, points)


# ---------------------------------------------------------------------------------------------
# Running the submission's processes
# ---------------------------------------------------------------------------------------------


def run_bounded(argv: List[str], cwd: Path, log: Path, token: str, deadline: float,
                stop: threading.Event, sandbox: Optional[Sandbox] = None, grace: float = 5.0,
                env: Optional[Dict[str, str]] = None) -> Tuple[str, Optional[int], int]:
    """Runs @p argv in its own session (inside @p sandbox when given), output appended to
    @p log, until it ends, @p deadline passes or @p stop is set. Returns (how, status, tasks):
    ("done", status), ("timeout", None) or ("stopped", None), and the most processes and
    threads its sandbox's uid was seen running. Stopping sends SIGTERM to its session, SIGKILL
    after @p grace seconds."""
    sandbox = sandbox or Sandbox("none")
    argv = sandbox.wrap(argv, cwd)
    extra = {BATCH_VARIABLE: token, "PYTHONUNBUFFERED": "1"}
    if sandbox.sealed:
        home = Path("/tmp") if sandbox.layer == "bwrap" or sandbox.tmp is None else sandbox.tmp
        env = sandbox.env(home, extra)
    else:
        env = {**os.environ, **(env or {}), **extra}
    most = now = 0
    with open(log, "ab") as sink:
        proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        while True:
            # Counted often only when the count nears the cap, which a PID namespace hides
            # from the grader the moment the command ends.
            pause = 0.2 if not sandbox.sealed else 0.01 if now > sandbox.caps.procs // 2 else 0.05
            try:
                return "done", proc.wait(timeout=pause), most
            except subprocess.TimeoutExpired:
                pass
            if sandbox.sealed:
                now = tasks_of(sandbox.uid)
                most = max(most, now)
            if stop.is_set() or time.monotonic() >= deadline:
                why = "stopped" if stop.is_set() else "timeout"
                stop_session(proc, grace)
                return why, None, most
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


def build_and_grade(source: Path, reports: Path, build_log: Path,
                    listing: Dict[str, List[dict]], config: Config, sandbox: Sandbox,
                    grader_tmp: Path, token: str, deadline: float, stop: threading.Event,
                    notes: List[str], started: float) -> Tuple[dict, str]:
    """Builds each stage of the submission in @p source on its own (after the plan's common
    setup) and grades each one that built; returns (the merged results.json, status). A stage
    that does not build scores 0; the others keep their points."""
    try:
        plan = contract.plan(source, config.targets, config.jobs)
    except contract.ContractError as error:
        with open(build_log, "a", encoding="utf-8") as sink:
            sink.write(f"{error}\n")
        return unbuilt_results(listing, build_log, str(error), time.monotonic() - started,
                               config), "build-failed"
    with open(build_log, "a", encoding="utf-8") as sink:
        sink.write(f"# {plan.layout}\n")
    built, why = run_commands(plan.setup, source, build_log, config, sandbox, token, deadline,
                              stop, notes)
    if not built:
        status = "timeout" if why == "timeout" else "incomplete" if why == "stopped" else "build-failed"
        return unbuilt_results(listing, build_log, why, time.monotonic() - started, config), status
    parts: List[Part] = []
    status = "ok"
    for stage in plan.stages:
        target = stage.target
        if status in ("timeout", "incomplete"):
            parts.append(Part(target, None, listing[target.binary]))
            continue
        built, why = (False, stage.unbuildable) if stage.unbuildable else run_commands(
            stage.build, source, build_log, config, sandbox, token, deadline, stop, notes)
        if built and stage.product and not (source / stage.product).is_file():
            built, why = False, f"the build made no {stage.product}"
        if not built:
            if why in ("timeout", "stopped"):
                status = "timeout" if why == "timeout" else "incomplete"
                parts.append(Part(target, None, listing[target.binary]))
                continue
            status = "build-failed"
            log = tail(build_log, BUILD_LOG_LINES, 16000)
            parts.append(Part(target, None, listing[target.binary],
                              f"{target.binary} was not built ({why})", log))
            continue
        part, part_status = grade_target(source, reports / target.binary, stage, config,
                                         sandbox, grader_tmp, token, deadline, stop)
        parts.append(Part(target, part, listing[target.binary]))
        if part_status != "ok":
            status = part_status
    return merge(parts, status, time.monotonic() - started, config), status


def run_commands(commands: List[List[str]], source: Path, log: Path, config: Config,
                 sandbox: Sandbox, token: str, deadline: float, stop: threading.Event,
                 notes: List[str]) -> Tuple[bool, str]:
    """Runs build @p commands in @p source, inside @p sandbox, output to @p log; adds to
    @p notes what the student should know (processes left running, caps reached). Returns
    (built, why not): why is "timeout", "stopped" or the failing command in words."""
    try:
        for argv in commands:
            with open(log, "a", encoding="utf-8") as sink:
                sink.write(f"$ {' '.join(argv)}\n")
            how, status, most = run_bounded(argv, source, log, token, deadline, stop, sandbox)
            if sandbox.sealed:
                # In a PID namespace nothing outlives the command (the kernel ends them all
                # with it); with only a uid, whatever is still running did.
                left = processes_of(sandbox.uid) if sandbox.layer == "uid" else []
                sandbox.reap()
                if left:
                    notes.append(f"The build left {len(left)} process(es) running after "
                                 f"`{' '.join(argv)}` ended; the grader killed them.")
                if near_cap(most, sandbox.caps.procs):
                    notes.append(f"The build ran {most} processes and threads at once, near the "
                                 f"cap of {sandbox.caps.procs} processes and threads: beyond the "
                                 f"cap, starting another one fails.")
            if how != "done":
                return False, how
            if status != 0:
                return False, f"`{' '.join(argv)}` exited with status {describe_build_status(status)}"
    finally:
        try:
            if sandbox.sealed and log.stat().st_size >= sandbox.caps.file_mib << 20:
                note = (f"The build log reached the cap of {sandbox.caps.file_mib} MiB per "
                        f"file: writing more failed.")
                if note not in notes:
                    notes.append(note)
        except OSError:
            pass
    return True, ""


def describe_build_status(status: int) -> str:
    """A build command's exit status in words."""
    if status == 127:
        return "127 (command not found)"
    if status < 0:
        return f"{status} (killed by a signal)"
    return str(status)


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
    """The grade command's options shared by listing and grading @p target."""
    args = [config.python, str(HARNESS_DIR / "grader"), "grade", "--profile", target.profile,
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


def grade_target(source: Path, out: Path, stage: contract.Stage, config: Config,
                 sandbox: Sandbox, grader_tmp: Path, token: str, deadline: float,
                 stop: threading.Event) -> Tuple[Optional[dict], str]:
    """Runs the grade command (the grader: outside the sandbox) on one program, each of its servers in
    @p sandbox; returns (its results.json or None, status)."""
    target = stage.target
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    command = stage.command
    args = [*grader_args(config, target), "--server-cmd", command, "--out", str(out),
            "--visibility", config.visibility, "--stdout-visibility", config.stdout_visibility,
            "--log-lines", str(config.log_lines), "--timeout-scale", str(config.timeout_scale),
            "--max-reply", str(config.max_reply_mib), "--log-bytes", str(config.log_bytes_kib)]
    if sandbox.sealed:
        args += ["--run-as", f"{sandbox.uid}:{sandbox.gid}", "--sandbox", sandbox.layer,
                 "--memory", str(sandbox.caps.memory_mib), "--max-procs", str(sandbox.caps.procs),
                 "--max-file-size", str(sandbox.caps.file_mib),
                 "--sandbox-tmp", str(sandbox.tmp)]
        args += [arg for path in sandbox.writable for arg in ("--sandbox-writable", str(path))]
    how, status, _ = run_bounded(args, out, out / "grader.log", token, deadline, stop,
                                 grace=GRADER_GRACE, env={"TMPDIR": str(grader_tmp)})
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
        raise GraderFailed(f"the grade command exited with status {status} for {target.binary}: "
                           f"{last[-1] if last else 'no output'}")
    complete = results.get("extra_data", {}).get("complete", False)
    return results, "ok" if complete else "incomplete"


class GraderFailed(Exception):
    """The grader itself could not run (a configuration error, not the submission's fault)."""


class Part(NamedTuple):
    """One program's share of a submission's results."""

    target: contract.Target
    results: Optional[dict]  #: its grade results.json; None: not graded
    listing: List[dict]  #: its checks
    unbuilt: str = ""  #: why it was not built ("" if it was, or was not reached)
    build_log: str = ""  #: the end of the build log when it failed


def merge(parts: List[Part], status: str, elapsed: float, config: Config) -> dict:
    """One results.json from each program's; programs not graded count their checks as 0."""
    tests = []
    outputs = []
    for part in parts:
        target, results, listing = part.target, part.results, part.listing
        if part.unbuilt:
            tests += not_run_tests(target.binary, listing, part.unbuilt)
            outputs.append(f"{target.binary}: not graded: {part.unbuilt}. Last lines of the "
                           f"build log:\n{part.build_log}")
            continue
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
    return results_json(tests, "\n".join(outputs), elapsed, config,
                        {"complete": status in ("ok", "build-failed")})
