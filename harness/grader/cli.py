"""Command line of the grader: parse, prepare, run every check, write the reports."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from . import checks  # noqa: F401  (importing it registers the built-in checks)
from . import report, rubric
from .context import REQUIRED_FILES, TEST_FILES, Settings
from .registry import PROFILES, REGISTRY, load_check_dir
from .runner import Result, run_check
from .server import PLACEHOLDERS, absolutize, validate_template

HARNESS_DIR = Path(__file__).resolve().parent.parent
DEFAULT_RUBRIC = HARNESS_DIR / "rubric.toml"
DEFAULT_ROOT = HARNESS_DIR.parent / "www"

EPILOG = """\
placeholders in --server-cmd (values are shell-quoted; do not quote them yourself):
{placeholders}
  {{{{ and }}}}     literal braces

The command runs under /bin/sh -c, in its own process group, with the document root as its
working directory (so a server that serves its cwd works); a plain word naming an existing
file relative to where grade.py was started (my_server.py, build/bin/stage1_sequential) is
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
  grade.py --server-cmd "build/bin/stage3_limited -p {{port}} -r {{root}} -maxclient {{maxclient}} -maxtotal {{maxtotal}}" --profile limited
  grade.py --server-cmd "python3 -m http.server {{port}} --bind 127.0.0.1" --profile limited

exit status: 0 when grading ran (whatever the score), 2 on usage errors.
"""


def parse_args(argv: list[str]) -> argparse.Namespace:
    placeholders = "\n".join(f"  {{{name}}}{' ' * (12 - len(name))}{text}" for name, text in PLACEHOLDERS.items())
    parser = argparse.ArgumentParser(
        prog="grade.py",
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
                             "per check id (default harness/rubric.toml)")
    parser.add_argument("--timeout-scale", type=positive_float, default=1.0, metavar="F",
                        help="multiply every timeout and deadline by F (slow machines: 2 or 3)")
    parser.add_argument("--startup-timeout", type=positive_float, default=10.0, metavar="S",
                        help="seconds the server may take to accept connections (default 10, "
                             "times --timeout-scale)")
    parser.add_argument("--checks", metavar="ID,...",
                        help="run only these check ids (the score then covers only them)")
    parser.add_argument("--list", action="store_true", help="list the checks of --profile and exit")
    return parser.parse_args(argv)


def positive_int(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1: {text!r}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a number > 0: {text!r}")
    return value


def usage_error(message: str) -> int:
    print(f"grade.py: error: {message}", file=sys.stderr)
    return 2


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        validate_template(args.server_cmd)
    except ValueError as error:
        return usage_error(f"--server-cmd: {error}")
    command, changes = absolutize(args.server_cmd, Path.cwd())
    for old, new in changes:
        print(f"grade.py: note: {old} is relative to {Path.cwd()}: the server runs in its "
              f"document root, so the command uses {new}", file=sys.stderr)
    root = args.root.resolve()
    missing = [name for name in REQUIRED_FILES if not (root / name).is_file()]
    if missing:
        return usage_error(f"--root {root}: missing {', '.join(missing)}")
    try:
        for directory in args.hidden_dir:
            load_check_dir(directory.resolve())
        entries = rubric.load(args.rubric)
    except ValueError as error:
        return usage_error(str(error))
    for check_id in entries:
        if check_id not in REGISTRY:
            print(f"grade.py: note: rubric entry {check_id!r} has no check (not loaded): ignored",
                  file=sys.stderr)
    selected = [c for c in rubric.apply(REGISTRY, entries) if args.profile in c.profiles]
    if args.checks:
        wanted = [name.strip() for name in args.checks.split(",") if name.strip()]
        unknown = [name for name in wanted if name not in {c.id for c in selected}]
        if unknown:
            return usage_error(f"--checks: {', '.join(unknown)} not among the checks of profile "
                               f"{args.profile}: {', '.join(c.id for c in selected)}")
        selected = [c for c in selected if c.id in wanted]
    if args.list:
        for c in selected:
            print(f"{c.id:<30} {c.points:>5g} pts  {c.visibility:<15} {c.timeout:>4g} s  {c.title}")
        return 0

    out = args.out.resolve()
    logs = out / "logs"
    try:
        logs.mkdir(parents=True, exist_ok=True)
        for old in logs.glob("*.std*"):
            old.unlink()
    except OSError as error:
        return usage_error(f"--out {out}: {error}")
    settings = Settings(
        command=command, profile=args.profile, maxclient=args.maxclient,
        maxtotal=args.maxtotal, source_root=root, logs_dir=logs, scale=args.timeout_scale,
        startup_timeout=args.startup_timeout,
        test_data={rel: os.urandom(size) for rel, size in TEST_FILES.items()},
    )
    meta = {"command": args.server_cmd, "profile": args.profile, "maxclient": args.maxclient,
            "maxtotal": args.maxtotal, "started": time.time()}
    started = time.monotonic()
    results: list[Result] = []
    report.write_all(out, results, meta)  # something valid is there from the start
    try:
        for index, check in enumerate(selected, 1):
            print(f"[{index:>2}/{len(selected)}] {check.id} ...", end=" ", file=sys.stderr, flush=True)
            result = run_check(check, settings)
            results.append(result)
            print(f"{'pass' if result.passed else result.kind} ({result.duration:.1f} s)",
                  file=sys.stderr, flush=True)
            meta["elapsed"] = time.monotonic() - started
            report.write_all(out, results, meta)  # after each check: a crash loses nothing
    finally:
        meta["elapsed"] = time.monotonic() - started
        report.write_all(out, results, meta)
    text = report.summary(results, meta)
    (out / "summary.txt").write_text(text + "\n", encoding="utf-8")
    print(text)
    print(f"\nresults: {out / 'results.json'}  {out / 'junit.xml'}  server logs: {logs}/")
    return 0
