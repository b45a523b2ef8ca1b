"""Command line of the grader: parse, prepare, run every check, write the reports."""

from __future__ import annotations

import argparse
import json
import os
import pwd
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Tuple

from . import checks  # noqa: F401  (importing it registers the built-in checks)
from . import report, rubric
from .context import REQUIRED_FILES, TEST_FILES, Settings
from .registry import PROFILES, REGISTRY, VISIBILITIES, load_check_dir
from .runner import Result, not_run, run_check
from . import httpclient
from .sandbox import LAYERS, Caps, Sandbox, choose_layer
from .server import PLACEHOLDERS, absolutize, as_user, validate_template

GRADER_DIR = Path(__file__).resolve().parent
DEFAULT_RUBRIC = GRADER_DIR / "rubric.toml"
DEFAULT_ROOT = GRADER_DIR.parents[1] / "www"

EPILOG = """\
placeholders in --server-cmd (values are shell-quoted; do not quote them yourself):
{placeholders}
  {{{{ and }}}}     literal braces

The command runs under /bin/sh -c, in its own process group, with the document root as its
working directory (so a server that serves its cwd works); a plain word naming an existing
file relative to where the grader was started (my_server.py, build/bin/stage1_sequential) is
made absolute first. Each check starts a fresh instance and stops it afterwards (SIGTERM to
the group, then SIGKILL). The server must listen on 127.0.0.1:{{port}}; the grader waits
until a TCP connection succeeds.

profiles:
  sequential  stage-1 behaviour: a silent client holds up the next one
  threaded    a silent client must not hold up others; no limits expected
  limited     threaded, plus: the (maxclient+1)-th connection from one IP and the
              (maxtotal+1)-th overall are refused (429 or 503 both count as refused),
              and closing connections gives the slots back

examples:
  ./lab grade --server-cmd "build/bin/stage3_limited -p {{port}} -r {{root}} -maxclient {{maxclient}} -maxtotal {{maxtotal}}" --profile limited
  ./lab grade --server-cmd "python3 -m http.server {{port}} --bind 127.0.0.1" --profile limited

exit status: 0 when grading ran (whatever the score, unless --fail-under), 1 when the score
is below --fail-under, 2 on usage errors, 128+N when stopped by signal N (SIGINT, SIGTERM:
the server is stopped, temporary files removed, results.json marked incomplete).
"""


class UsageError(Exception):
    """A bad command line: reported with exit status 2."""


class Parser(argparse.ArgumentParser):
    """argparse that raises UsageError instead of exiting, so stale reports can be removed."""

    def error(self, message: str):
        raise UsageError(message)


class Interrupted(BaseException):
    """SIGTERM (or SIGHUP) arrived: stop grading, clean up, mark the results incomplete."""

    def __init__(self, signum: int):
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def raise_interrupted(signum, _frame):
    raise Interrupted(signum)


#: Reports a grading run writes; a run that stops on a usage error removes old ones first.
REPORTS = ("results.json", "junit.xml", "summary.txt")


def parse_args(argv: list[str]) -> argparse.Namespace:
    placeholders = "\n".join(f"  {{{name}}}{' ' * (12 - len(name))}{text}" for name, text in PLACEHOLDERS.items())
    parser = Parser(
        prog="./lab grade",
        description="Grade an HTTP/1.0 static-file server: start it per check, probe it over "
                    "real sockets, score it against a rubric, write junit.xml and results.json.",
        epilog=EPILOG.format(placeholders=placeholders),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--server-cmd", required=True, metavar="CMD",
                        help="command that starts the server; must contain {port} (see below)")
    parser.add_argument("--profile", required=True, choices=PROFILES,
                        help="the behaviour expected (see below)")
    parser.add_argument("--maxclient", type=positive_int, default=12, metavar="N",
                        help="per-client connection limit the server is given and graded on (default 12)")
    parser.add_argument("--maxtotal", type=positive_int, default=60, metavar="N",
                        help="total connection limit the server is given and graded on (default 60)")
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, metavar="DIR",
                        help=f"site copied into each check's document root (default: the kit's www/); "
                             f"must hold {', '.join(REQUIRED_FILES)}")
    parser.add_argument("--out", type=Path, default=Path("grade-results"), metavar="DIR",
                        help="where results.json, junit.xml and logs/ go (default ./grade-results)")
    parser.add_argument("--hidden-dir", type=Path, action="append", default=[], metavar="DIR",
                        help="directory of extra check files (*.py using @grader.check); their "
                             "checks are hidden unless they or the rubric say otherwise; repeatable")
    parser.add_argument("--rubric", type=Path, default=DEFAULT_RUBRIC, metavar="FILE",
                        help="rubric (.toml or .json): points, visibility, profiles and timeout "
                             "per check id (default harness/grader/rubric.toml)")
    parser.add_argument("--timeout-scale", type=positive_float, default=1.0, metavar="F",
                        help="multiply every timeout and deadline by F (slow machines: 2 or 3)")
    parser.add_argument("--startup-timeout", type=positive_float, default=10.0, metavar="S",
                        help="seconds the server may take to accept connections (default 10, "
                             "times --timeout-scale)")
    parser.add_argument("--checks", metavar="ID,...",
                        help="run only these check ids (the score then covers only them)")
    parser.add_argument("--list", nargs="?", const="text", choices=("text", "json"),
                        help="list the checks of --profile (as text, or json) and exit")
    parser.add_argument("--fail-under", type=nonnegative_float, metavar="POINTS",
                        help="exit 1 when the score is below POINTS (CI, GitHub Classroom); "
                             "without it the exit status does not depend on the score")
    parser.add_argument("--visibility", choices=VISIBILITIES, default="visible",
                        help="results.json's top-level visibility (Gradescope; default visible)")
    parser.add_argument("--stdout-visibility", choices=VISIBILITIES, default="hidden",
                        help="results.json's stdout_visibility (default hidden). Unless it is "
                             "hidden, the summary printed on stdout leaves out checks that are "
                             "not visible (summary.txt keeps them)")
    parser.add_argument("--log-lines", type=nonnegative_int, default=20, metavar="N",
                        help="lines of the server's stdout and stderr attached to a failing "
                             "check (that check's own run only; default 20, 0 for none)")
    parser.add_argument("--run-as", metavar="USER",
                        help="run the server as USER (a name, or UID[:GID]; root only): it then "
                             "cannot read the grader's files, and every process of that user is "
                             "killed after each check. The hidden checks must not be readable "
                             "by USER. Without it the server runs as you (your own code)")
    parser.add_argument("--sandbox", choices=("auto", *LAYERS), metavar="LAYER",
                        help="with --run-as: also run the server in a sandbox, "
                             "auto|bwrap|unshare|uid (default uid: --run-as alone); "
                             "harness/grader/README.md, Sandbox")
    parser.add_argument("--sandbox-writable", type=Path, action="append", default=[],
                        metavar="DIR", help="with --sandbox bwrap: a directory the server sees "
                                            "and may write (where its program is); repeatable")
    parser.add_argument("--sandbox-tmp", type=Path, metavar="DIR",
                        help="with --sandbox uid or unshare: the server's TMPDIR (bwrap gives "
                             "each run a fresh /tmp of 4 times --max-file-size)")
    add_cap_options(parser)
    return parser.parse_args(argv)


#: Defaults of the grader's own caps (the sandbox's are in Caps).
DEFAULT_REPLY_MIB = 64  #: most bytes read of one reply
DEFAULT_LOG_KIB = 256  #: end of each log kept in the reports


def add_cap_options(parser) -> None:
    """The caps on a submission (its processes' limits, and what the grader reads and keeps of
    it), one option each: the grade and batch commands take the same ones."""
    parser.add_argument("--memory", type=positive_int, default=Caps.memory_mib, metavar="MIB",
                        help=f"address space per process (default {Caps.memory_mib} MiB)")
    parser.add_argument("--max-procs", type=positive_int, default=Caps.procs, metavar="N",
                        help=f"processes and threads of one submission (default {Caps.procs})")
    parser.add_argument("--max-file-size", type=positive_int, default=Caps.file_mib, metavar="MIB",
                        help=f"largest file it may write, logs included (default {Caps.file_mib} MiB)")
    parser.add_argument("--max-reply", type=positive_int, default=DEFAULT_REPLY_MIB, metavar="MIB",
                        help=f"most bytes the grader reads of one reply (default {DEFAULT_REPLY_MIB} MiB)")
    parser.add_argument("--log-bytes", type=positive_int, default=DEFAULT_LOG_KIB, metavar="KIB",
                        help=f"end of each log kept in the reports (default {DEFAULT_LOG_KIB} KiB; "
                             "a build log: 4 times that)")


def whole_number(minimum: int):
    """An argparse type: a whole number of at least @p minimum."""

    def parse(text: str) -> int:
        try:
            value = int(text, 10)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}: {text!r}")
        return value

    return parse


def finite_number(zero_allowed: bool):
    """An argparse type: a finite number > 0, or >= 0 when @p zero_allowed."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (value >= 0 if zero_allowed else value > 0) or value == float("inf"):
            raise argparse.ArgumentTypeError(f"must be a number {'>=' if zero_allowed else '>'} 0: {text!r}")
        return value

    return parse


positive_int = whole_number(1)
nonnegative_int = whole_number(0)
positive_float = finite_number(zero_allowed=False)
nonnegative_float = finite_number(zero_allowed=True)


def resolve_user(spec: str) -> Tuple[int, int]:
    """``student``, ``1500`` or ``1500:1500`` → (uid, gid); raises UsageError."""
    if os.geteuid() != 0:
        raise UsageError("--run-as needs root (to switch the server to another user)")
    name, _, group = spec.partition(":")
    try:
        if name.isdigit():
            uid = int(name)
            gid = int(group) if group else uid
        else:
            entry = pwd.getpwnam(name)
            uid, gid = entry.pw_uid, int(group) if group else entry.pw_gid
    except (KeyError, ValueError):
        raise UsageError(f"--run-as {spec}: no such user (a name, or UID[:GID])") from None
    if uid == 0:
        raise UsageError("--run-as: the server must not run as root")
    return uid, gid


def readable_by(user: Tuple[int, int], path: Path) -> bool:
    """Whether @p user can read @p path: asked of the kernel, as that user."""
    test = subprocess.run(as_user(user, ["test", "-r", str(path)]), stdin=subprocess.DEVNULL,
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
    return test.returncode == 0


def remove_stale_reports(out: Optional[Path]) -> None:
    """Removes a previous run's reports from @p out, so none is mistaken for this run's."""
    if out is None:
        return
    for name in REPORTS:
        try:
            (out / name).unlink()
        except OSError:
            pass


def out_from(argv: list) -> Optional[Path]:
    """The --out of @p argv, even when the rest of it does not parse."""
    probe = argparse.ArgumentParser(add_help=False)
    probe.add_argument("--out", type=Path, default=Path("grade-results"))
    try:
        known, _ = probe.parse_known_args(argv)
    except SystemExit:
        return None
    return known.out.resolve()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        return grade(argv)
    except UsageError as error:
        remove_stale_reports(out_from(argv))
        print("usage: ./lab grade --server-cmd CMD --profile PROFILE [options]  (--help for all)",
              file=sys.stderr)
        print(f"lab grade: error: {error}", file=sys.stderr)
        return 2


def grade(argv: list) -> int:
    """Parses @p argv, grades, writes the reports; returns the exit status."""
    args = parse_args(argv)
    run_as = resolve_user(args.run_as) if args.run_as else None
    if args.sandbox and run_as is None:
        raise UsageError("--sandbox needs --run-as (the uid the sandboxed server runs as)")
    layer = "none"
    if run_as is not None:
        try:
            layer = choose_layer(args.sandbox or "uid", run_as[0])
        except ValueError as error:
            raise UsageError(str(error))
    sandbox = Sandbox(layer, *(run_as or (None, None)),
                      caps=Caps(args.memory, args.max_procs, args.max_file_size),
                      writable=[path.resolve() for path in args.sandbox_writable],
                      tmp=args.sandbox_tmp.resolve() if args.sandbox_tmp else None)
    try:
        validate_template(args.server_cmd)
    except ValueError as error:
        raise UsageError(f"--server-cmd: {error}")
    command, changes = absolutize(args.server_cmd, Path.cwd())
    for old, new in changes:
        print(f"lab grade: note: {old} is relative to {Path.cwd()}: the server runs in its "
              f"document root, so the command uses {new}", file=sys.stderr)
    root = args.root.resolve()
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        raise UsageError(f"--root {root}: missing {', '.join(missing)}")
    try:
        for directory in args.hidden_dir:
            load_check_dir(directory.resolve())
        entries = rubric.load(args.rubric)
    except ValueError as error:
        raise UsageError(str(error))
    if run_as is not None and layer != "bwrap":  # bubblewrap shows the server none of them
        exposed = [path for directory in args.hidden_dir for path in sorted(directory.resolve().glob("*.py"))
                   if readable_by(run_as, path)]
        if exposed:
            raise UsageError(f"--run-as {args.run_as} can read the hidden check {exposed[0]}: a "
                               f"server could print it into a visible check's log. Make the hidden "
                               f"checks readable by their owner only (chmod -R go-rwx)")
    for check_id in entries:
        if check_id not in REGISTRY:
            print(f"lab grade: note: rubric entry {check_id!r} has no check (not loaded): ignored",
                  file=sys.stderr)
    selected = [c for c in rubric.apply(REGISTRY, entries) if args.profile in c.profiles]
    if args.checks:
        wanted = [name.strip() for name in args.checks.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in {c.id for c in selected}]
        if unknown:
            raise UsageError(f"--checks: {', '.join(unknown)} not among the checks of profile "
                               f"{args.profile}: {', '.join(c.id for c in selected)}")
        selected = [c for c in selected if c.id in wanted]
    if args.list == "json":
        print(json.dumps([{"id": c.id, "title": c.title, "points": c.points,
                           "visibility": c.visibility, "timeout": c.timeout} for c in selected]))
        return 0
    if args.list:
        for c in selected:
            print(f"{c.id:<30} {c.points:>5g} pts  {c.visibility:<15} {c.timeout:>4g} s  {c.title}")
        return 0

    out = args.out.resolve()
    logs = out / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        if sandbox.sealed:  # the server's uid must not read the reports, hidden results included
            os.chmod(out, 0o700)
        for old in logs.glob("*.std*"):
            old.unlink()
    except OSError as error:
        raise UsageError(f"--out {out}: {error}")
    remove_stale_reports(out)
    settings = Settings(
        command=command, profile=args.profile, maxclient=args.maxclient,
        maxtotal=args.maxtotal, source_root=root, logs_dir=logs, scale=args.timeout_scale,
        startup_timeout=args.startup_timeout,
        test_data={rel: os.urandom(size) for rel, size in TEST_FILES.items()},
        sandbox=sandbox, log_lines=args.log_lines, log_bytes=args.log_bytes << 10,
        reply_bytes=args.max_reply << 20,
    )
    httpclient.TOTAL_REPLY_BYTES = max(httpclient.TOTAL_REPLY_BYTES, 4 * settings.reply_bytes)
    meta = {"command": args.server_cmd, "profile": args.profile, "maxclient": args.maxclient,
            "maxtotal": args.maxtotal, "started": time.time(), "visibility": args.visibility,
            "stdout_visibility": args.stdout_visibility, "complete": False,
            "stopped": "grading did not finish", "sandbox": sandbox.describe(),
            "sandbox_layer": sandbox.layer}
    started = time.monotonic()
    results: list[Result] = []

    def pending() -> list:
        """The results so far, then every check still to run, as "not run"."""
        return results + [not_run(c, f"not run: {meta['stopped']}") for c in selected[len(results):]]

    # Until the last check ends, the reports say the grading is incomplete: a grader killed
    # even with SIGKILL leaves results that cannot be mistaken for a finished run.
    report.write_all(out, pending(), meta)
    status = 0
    previous = {sig: signal.signal(sig, raise_interrupted) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        for index, check in enumerate(selected, 1):
            print(f"[{index:>2}/{len(selected)}] {check.id} ...", end=" ", file=sys.stderr, flush=True)
            result = run_check(check, settings)
            results.append(result)
            print(f"{'pass' if result.passed else result.kind} ({result.duration:.1f} s)",
                  file=sys.stderr, flush=True)
            meta["elapsed"] = time.monotonic() - started
            report.write_all(out, pending(), meta)  # after each check: a crash loses nothing
        meta["complete"] = True
        meta["stopped"] = ""
    except (KeyboardInterrupt, Interrupted) as stop:
        signum = stop.signum if isinstance(stop, Interrupted) else signal.SIGINT
        meta["stopped"] = f"grading was stopped by {signal.Signals(signum).name}"
        print(f"\nlab grade: {meta['stopped']}; the server was stopped and the results are "
              f"marked incomplete", file=sys.stderr)
        status = 128 + signum
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        meta["elapsed"] = time.monotonic() - started
        report.write_all(out, pending(), meta)
    final = pending()
    (out / "summary.txt").write_text(report.summary(final, meta) + "\n", encoding="utf-8")
    print(report.summary(final, meta, reveal_hidden=args.stdout_visibility == "hidden"))
    print(f"\nresults: {out / 'results.json'}  {out / 'junit.xml'}  server logs: {logs}/")
    if status == 0 and args.fail_under is not None:
        score, _ = report.totals(final)
        if score < args.fail_under:
            print(f"lab grade: score {report.fmt_points(score)} is below --fail-under "
                  f"{report.fmt_points(args.fail_under)}", file=sys.stderr)
            status = 1
    return status
