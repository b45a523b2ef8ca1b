"""Grading submissions at course scale: one submission, a folder of them, or Gradescope.

  grader batch submission DIR --out OUT        build DIR as the contract says, grade it
  grader batch all SUBMISSIONS --out OUT       every folder of SUBMISSIONS → OUT/grades.csv
  grader batch package gradescope OUT.zip      an autograder zip for Gradescope
  grader batch gradescope [--prefix /autograder]
                                               inside Gradescope's image (run_autograder)

Python 3.8+, standard library only. harness/grader/README.md, "Deployment", explains each.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import queue
import signal
import sys
import threading
import time
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from grader import contract
from grader.cli import add_cap_options, nonnegative_int, positive_float, positive_int
from grader.registry import VISIBILITIES
from grader.sandbox import DEFAULT_UIDS, LAYERS, Caps, choose_layer, claim_uid, parse_uid_range
from grader.submission import HARNESS_DIR, Config, GraderFailed, Outcome, grade_submission

KIT_DIR = HARNESS_DIR.parent
#: Written into the Gradescope zip: how its run_autograder grades.
ZIP_CONFIG = "autograder.json"


def add_config_options(parser: argparse.ArgumentParser, budget: float) -> None:
    parser.add_argument("--rubric", type=Path, default=HARNESS_DIR / "grader" / "rubric.toml", metavar="FILE",
                        help="rubric (default harness/grader/rubric.toml)")
    parser.add_argument("--hidden-dir", type=Path, action="append", default=[], metavar="DIR",
                        help="directory of hidden checks (repeatable)")
    parser.add_argument("--root", type=Path, default=KIT_DIR / "www", metavar="DIR",
                        help="site served in the checks (default the kit's www/)")
    parser.add_argument("--maxclient", type=positive_int, default=12, metavar="N")
    parser.add_argument("--maxtotal", type=positive_int, default=60, metavar="N")
    parser.add_argument("--checks", metavar="ID,...", help="grade only these checks")
    parser.add_argument("--budget", type=positive_float, default=budget, metavar="SECONDS",
                        help=f"time for one submission, build included (default {budget:g})")
    parser.add_argument("--visibility", choices=VISIBILITIES, default="visible")
    parser.add_argument("--stdout-visibility", choices=VISIBILITIES, default="hidden")
    parser.add_argument("--log-lines", type=nonnegative_int, default=20, metavar="N")
    parser.add_argument("--timeout-scale", type=positive_float, default=1.0, metavar="F")
    sandbox = parser.add_argument_group("sandbox (harness/grader/README.md, Sandbox)")
    sandbox.add_argument("--sandbox", choices=("auto", *LAYERS), default="auto",
                         help="how student code is sealed: bwrap (PID namespace, private file "
                              "system view), unshare (PID namespace), uid (a uid of its own "
                              "only); auto: the strongest that works here (default)")
    sandbox.add_argument("--uids", type=uid_range, default=DEFAULT_UIDS, metavar="FIRST-LAST",
                         help=f"uids for the submissions, one per job at a time, never one with "
                              f"a passwd entry or a process (default {DEFAULT_UIDS[0]}-{DEFAULT_UIDS[1]})")
    sandbox.add_argument("--unsandboxed-as-me", action="store_true",
                         help="run the code as you, with no sandbox: only for your own "
                              "reference solution (the report says so)")
    add_cap_options(sandbox)


def uid_range(text: str):
    """argparse type of --uids."""
    try:
        return parse_uid_range(text)
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def sandbox_layer(requested: str, unsandboxed: bool) -> str:
    """The layer to use, or "none" with --unsandboxed-as-me; exits 2 when none works."""
    if unsandboxed:
        print("grader batch: note: --unsandboxed-as-me: the code runs as you, with no sandbox; "
              "the reports say so", file=sys.stderr)
        return "none"
    try:
        return choose_layer(requested)
    except ValueError as error:
        print(f"grader batch: error: {error}", file=sys.stderr)
        raise SystemExit(2)


def config_from(args: argparse.Namespace) -> Config:
    problems = [f"--hidden-dir {d}: not a directory (keep the course's hidden checks in a folder "
                f"of their own, readable by you only; harness/grader/README.md, Hidden checks)"
                for d in args.hidden_dir if not d.is_dir()]
    problems += [f"--rubric {args.rubric}: no such file"] if not args.rubric.is_file() else []
    if problems:
        print(f"grader batch: error: {problems[0]}", file=sys.stderr)
        raise SystemExit(2)
    return Config(site=args.root.resolve(), rubric=args.rubric.resolve(),
                  hidden_dirs=[d.resolve() for d in args.hidden_dir], maxclient=args.maxclient,
                  maxtotal=args.maxtotal, checks=args.checks, budget=args.budget,
                  sandbox="none" if args.unsandboxed_as_me else args.sandbox, uids=args.uids,
                  caps=Caps(args.memory, args.max_procs, args.max_file_size),
                  max_reply_mib=args.max_reply, log_bytes_kib=args.log_bytes,
                  visibility=args.visibility, stdout_visibility=args.stdout_visibility,
                  log_lines=args.log_lines, timeout_scale=args.timeout_scale)


def grade_as_own_uid(submission: Path, out: Path, config: Config, stop: threading.Event) -> Outcome:
    """grade_submission() under a uid claimed for it alone (none with --unsandboxed-as-me)."""
    if config.sandbox == "none":
        return grade_submission(submission, out, config, stop)
    claim = claim_uid(*config.uids)
    try:
        return grade_submission(submission, out, config, stop, claim.uid)
    finally:
        claim.release()


class StopOnSignal:
    """Turns SIGINT and SIGTERM into a stop event (work in progress winds down and is marked
    incomplete) and remembers the signal for the exit status."""

    def __init__(self):
        self.event = threading.Event()
        self.signum = 0

    def __enter__(self):
        self.previous = {s: signal.signal(s, self.handle) for s in (signal.SIGINT, signal.SIGTERM)}
        return self

    def handle(self, signum, _frame):
        self.signum = self.signum or signum
        self.event.set()
        print(f"\ngrader batch: {signal.Signals(signum).name}: stopping every submission's "
              f"processes, marking unfinished results incomplete", file=sys.stderr)

    def __exit__(self, *exc):
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        return False

    def status(self, normal: int = 0) -> int:
        return 128 + self.signum if self.signum else normal


def in_thread(func, *args):
    """Runs @p func in a thread and waits in short steps, so signal handlers run meanwhile."""
    box = {}

    def body():
        try:
            box["value"] = func(*args)
        except BaseException as error:  # noqa: B902 (re-raised in the caller's thread)
            box["error"] = error

    thread = threading.Thread(target=body)
    thread.start()
    while thread.is_alive():
        thread.join(0.2)
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---------------------------------------------------------------------------------------------
# One submission, and Gradescope
# ---------------------------------------------------------------------------------------------


def describe(outcome: Outcome) -> str:
    r = outcome.results
    return f"{outcome.status}: {r['score']:g}/{r['max_score']:g} points"


def cmd_submission(args: argparse.Namespace) -> int:
    config = config_from(args)
    config.sandbox = sandbox_layer(config.sandbox, args.unsandboxed_as_me)
    with StopOnSignal() as stopper:
        try:
            outcome = in_thread(grade_as_own_uid, args.dir.resolve(), args.out.resolve(), config,
                                stopper.event)
        except (GraderFailed, ValueError) as error:
            print(f"grader batch: error: {error}", file=sys.stderr)
            return 2
    print(f"{args.dir}: {describe(outcome)}\nresults: {args.out.resolve() / 'results.json'}")
    return stopper.status()


def cmd_gradescope(args: argparse.Namespace) -> int:
    prefix = Path(args.prefix).resolve()
    source = prefix / "source"
    settings = json.loads((source / ZIP_CONFIG).read_text(encoding="utf-8"))
    config = Config(site=source / "www", rubric=source / settings["rubric"],
                    hidden_dirs=[source / d for d in settings["hidden_dirs"]],
                    maxclient=settings["maxclient"], maxtotal=settings["maxtotal"],
                    checks=settings.get("checks"), budget=settings["budget"],
                    uids=tuple(settings["uids"]), caps=Caps(**settings["caps"]),
                    max_reply_mib=settings["max_reply_mib"], log_bytes_kib=settings["log_bytes_kib"],
                    visibility=settings["visibility"], timeout_scale=settings["timeout_scale"],
                    stdout_visibility=settings["stdout_visibility"],
                    log_lines=settings["log_lines"])
    # The student's code must read none of the autograder (setup.sh does this too): where the
    # layer is only a uid, permissions are all that hides the rubric and the hidden checks.
    for path in [source, *source.rglob("*")]:
        if not path.is_symlink():
            os.chmod(path, path.stat().st_mode & 0o700)
    config.sandbox = sandbox_layer(settings["sandbox"], False)
    with StopOnSignal() as stopper:
        try:
            outcome = in_thread(grade_as_own_uid, prefix / "submission", prefix / "results",
                                config, stopper.event)
        except (GraderFailed, ValueError) as error:  # the autograder's setup, not the student
            print(f"grader batch: error: {error}", file=sys.stderr)
            return 2
    print(describe(outcome))
    return stopper.status()


# ---------------------------------------------------------------------------------------------
# A folder of submissions
# ---------------------------------------------------------------------------------------------


def cmd_all(args: argparse.Namespace) -> int:
    config = config_from(args)
    root = args.submissions.resolve()
    if not root.is_dir():
        print(f"grader batch: error: {root}: not a directory", file=sys.stderr)
        return 2
    students = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not students:
        print(f"grader batch: error: {root} holds no submission folders", file=sys.stderr)
        return 2
    config.sandbox = sandbox_layer(config.sandbox, args.unsandboxed_as_me)
    roster = read_roster(args.roster) if args.roster else None
    exposed = exposed_hidden_checks(config.hidden_dirs)
    if exposed and config.sandbox not in ("bwrap", "none"):
        print(f"grader batch: error: {len(exposed)} hidden check file(s) in {exposed[0].parent} "
              f"can be read by others: under the {config.sandbox} layer a submission could print "
              f"them into a visible check's log. Make the hidden checks readable by their owner "
              f"only (chmod -R go-rwx {exposed[0].parent})", file=sys.stderr)
        return 2
    if exposed:
        print(f"grader batch: note: {len(exposed)} hidden check file(s) in {exposed[0].parent} "
              f"can be read by others (bubblewrap hides them from submissions; chmod -R go-rwx "
              f"{exposed[0].parent} all the same)", file=sys.stderr)
    if roster is not None:
        unknown = [name for name in students if name not in roster]
        if unknown:
            print(f"grader batch: note: {len(unknown)} folder(s) not in the roster (no student "
                  f"id in the output): {', '.join(unknown)}", file=sys.stderr)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.chmod(out, 0o700)  # students' results, hidden checks' included: the grader's only
    jobs = args.jobs
    # Compile jobs from the CPUs this process may use (a container's share), not the host's.
    config.jobs = max(1, len(os.sched_getaffinity(0)) // jobs)
    outcomes: Dict[str, Optional[Outcome]] = {name: None for name in students}
    errors: Dict[str, str] = {}
    todo: "queue.Queue[str]" = queue.Queue()
    for name in students:
        todo.put(name)
    with StopOnSignal() as stopper:

        def worker():
            while not stopper.event.is_set():
                try:
                    name = todo.get_nowait()
                except queue.Empty:
                    return
                start = time.monotonic()
                try:
                    outcomes[name] = grade_as_own_uid(root / name, out / name, config, stopper.event)
                    print(f"{name}: {describe(outcomes[name])} ({time.monotonic() - start:.0f} s)",
                          file=sys.stderr, flush=True)
                except Exception as error:  # one broken submission folder must not stop the rest
                    errors[name] = f"{type(error).__name__}: {error}"
                    print(f"{name}: error: {errors[name]}", file=sys.stderr)

        workers = [threading.Thread(target=worker) for _ in range(jobs)]
        for thread in workers:
            thread.start()
        for thread in workers:
            while thread.is_alive():
                thread.join(0.2)
    write_grades(out / "grades.csv", students, outcomes, errors, roster)
    if roster is not None:
        write_lms(out / "grades-lms.csv", out / "grades.csv")
    finished = sum(o is not None and o.status != "incomplete" for o in outcomes.values())
    print(f"{finished} of {len(students)} submissions graded: {out / 'grades.csv'}"
          + (f" (and {out / 'grades-lms.csv'})" if roster is not None else ""))
    return stopper.status()


#: The columns of a roster (--roster FILE), in any order; others are ignored.
ROSTER_COLUMNS = ("folder", "student_id", "name")
#: grades.csv's columns before the checks' and after them.
FIRST_COLUMNS = ["student", "student_id", "name", "score", "max"]
LAST_COLUMNS = ["status"]


def read_roster(path: Path) -> Dict[str, Tuple[str, str]]:
    """The roster at @p path: submission folder → (student id, name). Exits 2 on a roster
    without the columns, with a folder twice, or unreadable."""
    def fail(why: str):
        print(f"grader batch: error: --roster {path}: {why}", file=sys.stderr)
        raise SystemExit(2)
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ROSTER_COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                fail(f"no column {', '.join(missing)} (the header needs {', '.join(ROSTER_COLUMNS)})")
            roster: Dict[str, Tuple[str, str]] = {}
            for line, row in enumerate(reader, 2):
                folder = (row["folder"] or "").strip()
                if not folder:
                    fail(f"line {line}: no folder")
                if folder in roster:
                    fail(f"line {line}: folder {folder} listed twice")
                roster[folder] = ((row["student_id"] or "").strip(), (row["name"] or "").strip())
    except (OSError, UnicodeDecodeError, csv.Error) as error:
        fail(str(error))
    return roster


def exposed_hidden_checks(directories: List[Path]) -> List[Path]:
    """The hidden check files that users other than their owner and group may read (their
    folder open to others, the file readable by others): a submission's uid, in no group, is
    such a user. (Reported by folder only: a check's file name is its id, kept from output.)"""
    return [path for directory in directories if directory.stat().st_mode & 0o001
            for path in sorted(directory.glob("*.py")) if path.stat().st_mode & 0o004]


def read_grades(path: Path) -> Tuple[List[str], List[Dict[str, str]]]:
    """The columns and rows of an earlier grades.csv at @p path (none if there is none)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            return list(reader.fieldnames or []), list(reader)
    except FileNotFoundError:
        return [], []


def write_grades(path: Path, students: List[str], outcomes: Dict[str, Optional[Outcome]],
                 errors: Dict[str, str],
                 roster: Optional[Dict[str, Tuple[str, str]]] = None) -> None:
    """grades.csv: student, student_id, name (from the roster), score, max, the points of
    every check, status. A student whose grading broke (the grader could not run) is "error";
    one never finished, "incomplete". An earlier grades.csv is merged into: the rows of
    students not graded now are kept (their id and name refreshed from @p roster), and the
    file is replaced atomically."""
    old_columns, old_rows = read_grades(path)
    columns: List[str] = [c for c in old_columns if c not in FIRST_COLUMNS + LAST_COLUMNS]
    for outcome in outcomes.values():
        for name in (outcome.points if outcome else {}):
            if name not in columns:
                columns.append(name)
    rows: Dict[str, Dict[str, str]] = {row["student"]: row for row in old_rows if row.get("student")}
    for name in students:
        outcome = outcomes[name]
        earlier = rows.get(name, {})
        row = {"student": name, "student_id": earlier.get("student_id", ""),
               "name": earlier.get("name", "")}
        if outcome is None:
            row["status"] = "error" if name in errors else "incomplete"
        else:
            r = outcome.results
            row.update({"score": f"{r['score']:g}", "max": f"{r['max_score']:g}",
                        "status": outcome.status,
                        **{c: f"{p:g}" for c, p in outcome.points.items()}})
        rows[name] = row
    for name, row in rows.items():
        if roster is not None:
            row["student_id"], row["name"] = roster.get(name, ("", ""))
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, FIRST_COLUMNS + columns + LAST_COLUMNS, restval="",
                                extrasaction="ignore")
        writer.writeheader()
        for name in sorted(rows):
            writer.writerow(rows[name])
    os.replace(tmp, path)


def write_lms(path: Path, grades: Path) -> None:
    """grades-lms.csv, for a learning management system's grade import: student_id, name,
    total (the score), one row per student of the roster found in @p grades; replaced
    atomically."""
    _, rows = read_grades(grades)
    tmp = path.with_name("." + path.name + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["student_id", "name", "total"])
        for row in rows:
            if row.get("student_id"):
                writer.writerow([row["student_id"], row["name"], row["score"]])
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# The Gradescope zip
# ---------------------------------------------------------------------------------------------

SETUP_SH = """#!/usr/bin/env bash
# Gradescope runs this once, as root, when it builds the autograder image (Ubuntu 22.04);
# the zip is unpacked in /autograder/source.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends g++ make cmake python3 python3-pip util-linux \
    bubblewrap python3-tomli
# The rubric is TOML: Python 3.11+ reads it with tomllib, older ones need tomli.
python3 -c 'import tomllib' 2>/dev/null || python3 -c 'import tomli' 2>/dev/null ||
    python3 -m pip install --quiet tomli
# The kit's CMake presets need CMake 3.25; Ubuntu 22.04 has 3.22.
need=3.25
have=$(cmake --version | awk 'NR==1 {print $3}')
if [ "$(printf '%s\\n' "$need" "$have" | sort -V | head -n1)" != "$need" ]; then
    python3 -m pip install --quiet "cmake>=$need"
fi
# The submission is built and run as a uid of its own (no account needed), in a sandbox
# where the container allows one; it must not read /autograder/source in any case.
chmod -R go-rwx /autograder/source
"""

RUN_AUTOGRADER = """#!/usr/bin/env bash
# Gradescope runs this, as root, for every submission (in /autograder/submission), and reads
# /autograder/results/results.json. AUTOGRADER_ROOT moves the tree (the kit's tests use it).
set -uo pipefail
root="${AUTOGRADER_ROOT:-/autograder}"
exec python3 "$root/source/harness/grader" batch gradescope --prefix "$root"
"""

#: The kit's files the zip carries (the grader; the submission brings its own server code).
PACKAGED = ["harness/subcommands.py", "harness/grader/*.py"]


def cmd_package(args: argparse.Namespace) -> int:
    config = config_from(args)
    if args.kind != "gradescope":
        print(f"grader batch: error: unknown package kind {args.kind!r} (gradescope)", file=sys.stderr)
        return 2
    if args.unsandboxed_as_me:
        print("grader batch: error: --unsandboxed-as-me cannot go into a Gradescope autograder: "
              "there the code is always a student's", file=sys.stderr)
        return 2
    hidden = config.hidden_dirs or [d for d in [HARNESS_DIR / "hidden"] if d.is_dir()]
    # Every grading option goes into the zip (cmd_gradescope reads each one back).
    settings = {
        "rubric": "rubric.toml", "hidden_dirs": [f"hidden/{i}" for i in range(len(hidden))],
        "maxclient": config.maxclient, "maxtotal": config.maxtotal, "checks": config.checks,
        "budget": config.budget, "sandbox": config.sandbox, "uids": list(config.uids),
        "caps": {"memory_mib": config.caps.memory_mib, "procs": config.caps.procs,
                 "file_mib": config.caps.file_mib},
        "max_reply_mib": config.max_reply_mib, "log_bytes_kib": config.log_bytes_kib,
        "visibility": config.visibility, "stdout_visibility": config.stdout_visibility,
        "log_lines": config.log_lines, "timeout_scale": config.timeout_scale,
        "targets": [t.binary for t in contract.TARGETS],
    }
    out = args.zip.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
        write_text(zf, "setup.sh", SETUP_SH, executable=True)
        write_text(zf, "run_autograder", RUN_AUTOGRADER, executable=True)
        write_text(zf, ZIP_CONFIG, json.dumps(settings, indent=2) + "\n")
        for pattern in PACKAGED:
            for path in sorted(KIT_DIR.glob(pattern)):
                zf.write(path, path.relative_to(KIT_DIR).as_posix())
        zf.write(config.rubric, "rubric.toml")
        for index, directory in enumerate(hidden):
            for path in sorted(directory.glob("*.py")):
                zf.write(path, f"hidden/{index}/{path.name}")
        for path in sorted(config.site.rglob("*")):
            if path.is_file():
                zf.write(path, f"www/{path.relative_to(config.site).as_posix()}")
    print(f"{out}: Gradescope autograder ({len(hidden)} hidden-check folder(s), budget "
          f"{config.budget:g} s, sandbox {config.sandbox}); upload it as the assignment's "
          f"autograder")
    return 0


def write_text(zf: zipfile.ZipFile, name: str, text: str, executable: bool = False) -> None:
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    info.external_attr = (0o100755 if executable else 0o100644) << 16
    info.compress_type = zipfile.ZIP_DEFLATED
    zf.writestr(info, text)


# ---------------------------------------------------------------------------------------------


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="harness/grader batch", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("submission", help="build and grade one submission")
    one.add_argument("dir", type=Path, metavar="DIR")
    one.add_argument("--out", type=Path, required=True, metavar="OUT")
    add_config_options(one, budget=900)
    one.set_defaults(func=cmd_submission)
    batch = sub.add_parser("all", help="grade every folder of SUBMISSIONS into OUT/grades.csv")
    batch.add_argument("submissions", type=Path, metavar="SUBMISSIONS")
    batch.add_argument("--out", type=Path, required=True, metavar="OUT")
    batch.add_argument("--jobs", type=positive_int, default=1, metavar="N",
                       help="submissions graded at once (default 1: the checks time things)")
    batch.add_argument("--roster", type=Path, metavar="FILE",
                       help="CSV with columns folder,student_id,name: adds each student's id and "
                            "name to grades.csv and writes grades-lms.csv (student_id,name,total)")
    add_config_options(batch, budget=900)
    batch.set_defaults(func=cmd_all)
    package = sub.add_parser("package", help="write an autograder package")
    package.add_argument("kind", metavar="gradescope")
    package.add_argument("zip", type=Path, metavar="OUT.zip")
    add_config_options(package, budget=900)
    package.set_defaults(func=cmd_package)
    inside = sub.add_parser("gradescope", help="grade /autograder/submission (run_autograder)")
    inside.add_argument("--prefix", default=os.environ.get("AUTOGRADER_ROOT", "/autograder"))
    inside.set_defaults(func=cmd_gradescope)
    args = parser.parse_args(argv)
    return args.func(args)
