#!/usr/bin/env python3
"""Testcases 1 and 2 of the bench through a simulated network: what concurrency buys.

On loopback a whole testcase takes tens of milliseconds and the speedups mostly measure the
Python client (docs/bench/summary.md, "Testcases 1 and 2"). Here every connection goes
through benchlib/shaper.py, a proxy that adds a round-trip time (default 20 ms) and limits
each connection to a rate of its own (default 100 Mbit/s each way), as clients on other
networks would see. Each stage and `python3 -m http.server` serve the bench's document
root; for each of --reps rounds, in rotating order, one client fetches every file of a
testcase in turn (sequential) and --clients threads share the list (concurrent). The
speedup of a round is its sequential time over its concurrent time; the table gives the
median over the rounds and their min–max.

    /usr/bin/python3 harness/bench_shaped.py                 # results in build/bench-shaped/
    /usr/bin/python3 harness/bench_shaped.py --publish       # into docs/bench/ (shaped.md)
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parent
REPO_DIR = HARNESS_DIR.parent
sys.path.insert(0, str(HARNESS_DIR))
from benchlib import client, machine  # noqa: E402
from benchlib import servers as sv  # noqa: E402
from benchlib.shaper import ShapedProxy  # noqa: E402
from benchlib.site import KIB, make_site  # noqa: E402

STAGES = {"stage1": "stage1_sequential", "stage2": "stage2_threaded",
          "stage3": "stage3_limited", "stage4": "stage4_event"}
#: Longest one testcase run may take, in seconds.
RUN_TIMEOUT = 300.0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time (default 20)")
    parser.add_argument("--mbit", type=float, default=100.0,
                        help="Mbit/s per connection and direction (default 100)")
    parser.add_argument("--reps", type=int, default=3, help="rounds (default 3)")
    parser.add_argument("--clients", type=int, default=12,
                        help="concurrent clients (default 12, as in the bench)")
    parser.add_argument("--build-dir", type=Path, default=REPO_DIR / "build",
                        help="CMake build directory holding bin/ (default build)")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default build/bench-shaped)")
    parser.add_argument("--publish", action="store_true",
                        help="write docs/bench/shaped.md and shaped_runs.csv")
    args = parser.parse_args(argv)
    if args.publish:
        if args.out is not None:
            parser.error("--publish writes docs/bench; it does not take --out")
        args.out = REPO_DIR / "docs" / "bench"
    elif args.out is None:
        args.out = REPO_DIR / "build" / "bench-shaped"
    return args


def spread(values: list[float]) -> tuple[float, float, float]:
    return statistics.median(values), min(values), max(values)


def fmt(values: list[float], pattern: str) -> str:
    median, low, high = spread(values)
    return f"{pattern.format(median)} ({pattern.format(low)}–{pattern.format(high)})"


def summarise(rows: list[dict], args: argparse.Namespace, servers: list[str],
              command: str, elapsed: float, facts: dict[str, str]) -> str:
    shown = ", ".join(f"{key} {facts[key]}" for key in ("cpu", "nproc", "kernel", "source",
                                                       "load average at start (1/5/15 min)"))
    lines = ["# Testcases 1 and 2 through a simulated network", "",
             f"Produced by `{command}` in {elapsed:.0f} s. Machine: {shown}.", "",
             f"Every connection goes through `harness/benchlib/shaper.py`: {args.rtt_ms:g} ms "
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
            lines.append(f"| {server} | {fmt(list(seq.values()), '{:.2f}')} | "
                         f"{fmt(list(conc.values()), '{:.2f}')} | "
                         f"{fmt(speedups, '{:.1f}×')} | {len(errors)} |")
        lines.append("")
    first_errors = [f"{r['server']} {r['testcase']} {r['mode']}: {r['error']}"
                    for r in rows if r["error"]][:5]
    if first_errors:
        lines += ["Errors (first five):", ""] + [f"- {e}" for e in first_errors] + [""]
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    started = time.monotonic()
    command = "/usr/bin/python3 harness/bench_shaped.py " + " ".join(argv)
    binaries = {name: args.build_dir / "bin" / binary for name, binary in STAGES.items()}
    missing = [str(path) for path in binaries.values() if not os.access(path, os.X_OK)]
    if missing:
        raise SystemExit(f"bench_shaped: not built: {', '.join(missing)}")
    rate = args.mbit * 1e6 / 8
    facts = machine.describe(args.build_dir, REPO_DIR, list(binaries.values()))
    rows: list[dict] = []
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
        finally:
            for server in running:
                server.stop()
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / "shaped_runs.csv", "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    summary = summarise(rows, args, [s for s in list(STAGES) + ["python"]],
                        command.strip(), time.monotonic() - started, facts)
    (args.out / "shaped.md").write_text(summary + "\n")
    print(summary)
    print(f"bench_shaped: wrote {args.out / 'shaped.md'} and shaped_runs.csv")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
