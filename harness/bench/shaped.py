"""Testcases 1 and 2 of the bench through a simulated network: what concurrency buys.

On loopback a whole testcase takes tens of milliseconds and the speedups mostly measure the
Python client (docs/bench/summary.md, "Testcases 1 and 2"). Here every connection goes
through bench/lib/shaper.py, a proxy that adds a round-trip time (default 20 ms) and limits
each connection to a rate of its own (default 100 Mbit/s each way), as clients on other
networks would see. Each stage and `python3 -m http.server` serve the bench's document
root; for each of --reps rounds, in rotating order, one client fetches every file of a
testcase in turn (sequential) and --clients threads share the list (concurrent). The
speedup of a round is its sequential time over its concurrent time; the table gives the
median over the rounds and their min–max. After the rounds, each testcase is fetched once
more by --clients clients from every server through the same network, each request's
connect, first byte and last byte recorded (bench/lib/spans.py): shaped-timeline-testcase1.png
and shaped-timeline-testcase2.png (and .csv) beside shaped.md.

    /usr/bin/python3 harness/bench shaped               # results in build/bench-shaped/
    /usr/bin/python3 harness/bench shaped --publish     # into docs/bench/ (shaped.md)
    /usr/bin/python3 harness/bench shaped --server "mine=python3 http_server.py -p {port}"

The stages are those this tree holds (a handout has no stage 4); --server adds any server,
started in a copy of the document root as its working directory. A round of fewer than
MIN_REPS is refused (no spread to judge), and so is a run without a simulated network
(--rtt-ms below MIN_RTT_MS: the runs would last milliseconds); a cell whose median run is
shorter than SHORT_RUN seconds is flagged as noise in the table.
"""

from __future__ import annotations

import argparse
import csv
import os
import shlex
import statistics
import tempfile
import time
from pathlib import Path

from bench.lib import client, machine, spans
from bench.lib import servers as sv
from bench.lib.shaper import ShapedProxy
from bench.lib.site import KIB, make_site
from bench.lib.stats import spread

REPO_DIR = Path(__file__).resolve().parents[2]

STAGES = {"stage1": "stage1_sequential", "stage2": "stage2_threaded",
          "stage3": "stage3_limited", "stage4": "stage4_event"}
#: Longest one testcase run may take, in seconds.
RUN_TIMEOUT = 300.0
#: Fewest rounds that give a median and a spread worth quoting.
MIN_REPS = 3
#: Below this round trip the runs last milliseconds: measure with ./lab bench instead.
MIN_RTT_MS = 1.0
#: A median run shorter than this (seconds) is flagged in the table: it measures noise.
SHORT_RUN = 0.5


def present_stages() -> dict[str, str]:
    """The stages whose sources this tree holds (a handout leaves stage 4 out)."""
    return {name: binary for name, binary in STAGES.items() if (REPO_DIR / binary).is_dir()}


class CommandServer(sv.Server):
    """Any server, from a command template with {port} (and optionally {root}), run with a
    copy of the document root as its working directory (the earlier project's Python server
    serves its working directory)."""

    def __init__(self, workdir: Path, root: Path, name: str, template: str):
        self.name = name
        super().__init__(workdir, root)
        self.template = template

    def build_command(self, port: int) -> list[str]:
        words = shlex.split(self.template.replace("{port}", str(port))
                            .replace("{root}", shlex.quote(str(self.root))))
        # A relative word naming an existing file (http_server.py) means the caller's file.
        return [str(Path(w).resolve()) if "/" not in w[:1] and Path(w).is_file() else w
                for w in words]

    def start(self) -> "CommandServer":
        """Starts the server with the document root as its working directory (Server.start()
        runs a server in self.workdir; its logs stay where __init__ put them)."""
        logs, self.workdir = self.workdir, self.root
        try:
            return super().start()
        finally:
            self.workdir = logs


def server_spec(text: str) -> tuple[str, str]:
    """NAME=COMMAND of --server."""
    name, sep, command = text.partition("=")
    if not sep or not name.strip() or "{port}" not in command:
        raise argparse.ArgumentTypeError(f"{text!r}: write NAME=COMMAND, the command holding "
                                         f"{{port}}")
    return name.strip(), command


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness/bench shaped", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time (default 20)")
    parser.add_argument("--mbit", type=float, default=100.0,
                        help="Mbit/s per connection and direction (default 100)")
    parser.add_argument("--reps", type=int, default=3,
                        help=f"rounds (default 3, at least {MIN_REPS})")
    parser.add_argument("--clients", type=int, default=12,
                        help="concurrent clients (default 12, as in the bench)")
    parser.add_argument("--build-dir", type=Path, default=REPO_DIR / "build",
                        help="CMake build directory holding bin/ (default build)")
    parser.add_argument("--server", dest="servers", action="append", default=[],
                        type=server_spec, metavar="NAME=COMMAND",
                        help="also measure this server: COMMAND holds {port} (and may hold "
                             "{root}); it runs in a copy of the document root; repeatable")
    parser.add_argument("--no-stages", action="store_true",
                        help="leave the kit's stages out (only python -m http.server and "
                             "--server)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default build/bench-shaped)")
    parser.add_argument("--publish", action="store_true",
                        help="write docs/bench/shaped.md and shaped_runs.csv")
    args = parser.parse_args(argv)
    if args.reps < MIN_REPS:
        parser.error(f"--reps {args.reps}: at least {MIN_REPS} rounds, or the figures have no "
                     f"spread to judge them by")
    if args.rtt_ms < MIN_RTT_MS:
        parser.error(f"--rtt-ms {args.rtt_ms:g}: without a simulated network a run lasts "
                     f"milliseconds and measures noise; use ./lab bench for loopback figures")
    if args.mbit <= 0 or args.clients < 1:
        parser.error("--mbit and --clients must be positive")
    args.build_dir = args.build_dir.resolve()
    if args.out is not None:
        args.out = args.out.resolve()
    if args.publish:
        if args.out is not None:
            parser.error("--publish writes docs/bench; it does not take --out")
        args.out = REPO_DIR / "docs" / "bench"
    elif args.out is None:
        args.out = REPO_DIR / "build" / "bench-shaped"
    return args


def fmt(values: list[float], pattern: str) -> str:
    median, low, high = spread(values)
    return f"{pattern.format(median)} ({pattern.format(low)}–{pattern.format(high)})"


def timed(values: list[float]) -> str:
    """A time cell; flagged when its median run is too short to mean anything."""
    cell = fmt(values, "{:.2f}")
    return cell + " ⚠" if statistics.median(values) < SHORT_RUN else cell


def summarise(rows: list[dict], args: argparse.Namespace, servers: list[str],
              command: str, elapsed: float, facts: dict[str, str]) -> str:
    shown = ", ".join(f"{key} {facts[key]}" for key in ("cpu", "nproc", "kernel", "source",
                                                       "load average at start (1/5/15 min)"))
    lines = ["# Testcases 1 and 2 through a simulated network", "",
             f"Produced by `{command}` in {elapsed:.0f} s. Machine: {shown}.", "",
             f"Every connection goes through `harness/bench/lib/shaper.py`: {args.rtt_ms:g} ms "
             f"round-trip time and {args.mbit:g} Mbit/s per connection and direction, so one "
             "request costs two round trips (the handshake, then the request and its reply) "
             "plus its bytes at that rate. Sequential: one client fetches every file in turn. "
             f"Concurrent: {args.clients} client threads share the list. {args.reps} rounds, "
             "servers in rotating order; each cell is the median over the rounds with the "
             "min–max in brackets, and a round's speedup is its sequential time over its "
             "concurrent time.", ""]
    for case in dict.fromkeys(r["testcase"] for r in rows):
        first = next(r for r in rows if r["testcase"] == case)
        lines += [f"**{case}** — {first['files']} files, "
                  f"{first['bytes'] / (1 << 20):.1f} MiB", "",
                  "| server | sequential (s) | concurrent (s) | speedup | errors |",
                  "| --- | --- | --- | --- | --- |"]
        for server in servers:
            mine = [r for r in rows if r["testcase"] == case and r["server"] == server]
            errors = [r for r in mine if r["error"]]
            seq = {r["rep"]: r["seconds"] for r in mine
                   if r["mode"] == "sequential" and not r["error"]}
            conc = {r["rep"]: r["seconds"] for r in mine
                    if r["mode"] == "concurrent" and not r["error"]}
            speedups = [seq[rep] / conc[rep] for rep in seq if rep in conc]
            if not speedups:
                lines.append(f"| {server} | | | | {len(errors)} |")
                continue
            lines.append(f"| {server} | {timed(list(seq.values()))} | "
                         f"{timed(list(conc.values()))} | "
                         f"{fmt(speedups, '{:.1f}×')} | {len(errors)} |")
        lines.append("")
    short = [r for r in rows if not r["error"] and r["seconds"] < SHORT_RUN]
    if short:
        lines += [f"⚠ {len(short)} of {len(rows)} runs lasted less than {SHORT_RUN:g} s: such a "
                  "time is mostly the machine's noise, and so is a speedup made from it. "
                  "Raise --rtt-ms or lower --mbit before quoting it.", ""]
    first_errors = [f"{r['server']} {r['testcase']} {r['mode']}: {r['error']}"
                    for r in rows if r["error"]][:5]
    if first_errors:
        lines += ["Errors (first five):", ""] + [f"- {e}" for e in first_errors] + [""]
    return "\n".join(lines)


#: The timelines' file stems and titles, by testcase.
TIMELINES = {"testcase 1 (many small files)": ("shaped-timeline-testcase1",
                                               "testcase 1: many small files"),
             "testcase 2 (few large files)": ("shaped-timeline-testcase2",
                                              "testcase 2: a few large files")}


def record_timelines(running: list[sv.Server], cases: dict[str, dict[str, int]],
                     args: argparse.Namespace, rate: float) -> dict[str, dict]:
    """Testcase → server → the spans of one more concurrent pass through the shaped network
    (not part of the table's figures)."""
    def through_proxy(server: sv.Server, paths: list[str]) -> list:
        with ShapedProxy(server.port, args.rtt_ms / 1000, rate) as proxy:
            return spans.record(proxy.port, paths, args.clients)

    return spans.record_passes(cases, running, through_proxy, lambda line: print(line, flush=True))


def write_timelines(timelines: dict[str, dict], args: argparse.Namespace) -> list[str]:
    """The timelines' CSV files and, with matplotlib, their PNGs, into args.out."""
    written = []
    for case, drawn in timelines.items():
        stem, title = TIMELINES[case]
        count = max((len(v) for v in drawn.values()), default=0)
        heading = (f"{title}: {count} requests by {args.clients} concurrent clients, "
                   f"{args.rtt_ms:g} ms round trip, {args.mbit:g} Mbit/s per connection")
        written += spans.save(drawn, heading, args.out, stem)
    return written


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    command = "/usr/bin/python3 harness/bench shaped " + " ".join(argv)
    stages = {} if args.no_stages else present_stages()
    binaries = {name: args.build_dir / "bin" / binary for name, binary in stages.items()}
    missing = [str(path) for path in binaries.values() if not os.access(path, os.X_OK)]
    if missing:
        raise SystemExit(f"bench shaped: not built: {', '.join(missing)} (./lab build)")
    rate = args.mbit * 1e6 / 8
    facts = machine.describe(args.build_dir, REPO_DIR, list(binaries.values()))
    rows: list[dict] = []
    timelines: dict[str, dict] = {}
    with tempfile.TemporaryDirectory(prefix="lab-bench-shaped-") as tmp:
        work = Path(tmp)
        site = make_site(work / "root", huge_size=KIB)  # the 100 MiB file is not used here
        cases = {"testcase 1 (many small files)": site.many_small,
                 "testcase 2 (few large files)": site.few_large}
        running: list[sv.Server] = []
        try:
            for name, binary in binaries.items():
                extra = ("-maxclient", "256", "-maxtotal", "256") if name in ("stage3", "stage4") else ()
                running.append(sv.StageServer(work, site.root, binary, name, extra=extra).start())
            running.append(sv.PythonServer(work, site.root).start())
            for name, template in args.servers:
                running.append(CommandServer(work, site.root, name, template).start())
            for rep in range(args.reps):
                order = running[rep % len(running):] + running[:rep % len(running)]
                for server in order:
                    with ShapedProxy(server.port, args.rtt_ms / 1000, rate) as proxy:
                        for case, files in cases.items():
                            for mode in ("sequential", "concurrent"):
                                if mode == "sequential":
                                    run = client.run_sequential(proxy.port, files, RUN_TIMEOUT)
                                else:
                                    run = client.run_concurrent(proxy.port, files, args.clients,
                                                                RUN_TIMEOUT)
                                rows.append({"testcase": case, "server": server.name,
                                             "mode": mode, "rep": rep + 1,
                                             "files": len(files), "bytes": sum(files.values()),
                                             "seconds": round(run.seconds, 4),
                                             "error": run.error or ""})
                                print(f"round {rep + 1} {server.name:7} {case[:10]} {mode:10} "
                                      f"{run.seconds:7.2f} s {run.error or ''}", flush=True)
            timelines = record_timelines(running, cases, args, rate)
        finally:
            for server in running:
                server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    written = write_timelines(timelines, args)
    with open(args.out / "shaped_runs.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, args, [s.name for s in running],
                        command.strip(), time.monotonic() - started, facts)
    pngs = [name for name in written if name.endswith(".png")]
    if written:
        summary += ("\nTimelines: after the rounds, each testcase is fetched once more by "
                    f"{args.clients} concurrent clients from every server through the same "
                    "network, each request's connect, first and last byte recorded: "
                    + ", ".join(f"`{name}`" for name in (pngs or written))
                    + ("" if pngs else " (python3-matplotlib is missing: no PNG drawn)")
                    + ".\n")
    (args.out / "shaped.md").write_text(summary + "\n")
    print(summary)
    print(f"bench shaped: wrote {args.out / 'shaped.md'}, shaped_runs.csv, "
          + ", ".join(written))
    missing = spans.matplotlib_missing()
    if missing:
        print(f"bench shaped: {missing}", flush=True)
    return 0
