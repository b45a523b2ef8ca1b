"""Benchmark of the stages against nginx, Apache httpd and Python's http.server, in one command.

    /usr/bin/python3 harness/bench compare              # full run (≈ 17 minutes); build/bench/
    /usr/bin/python3 harness/bench compare --quick      # fewer rounds (≈ 7 minutes), indicative only
    /usr/bin/python3 harness/bench compare --publish    # full run into docs/bench/ (the reference)

What it does, all on 127.0.0.1, every wait and every run bounded:

1. installs what is missing (apache2-utils, apache2, nginx, python3-matplotlib,
   libbenchmark-dev);
2. generates one document root (bench/lib/site.py) and starts every server on it: stage1,
   stage2, stage3 and stage4 (-maxclient 256 -maxtotal 256; stage4 only once it is built), nginx
   and Apache (each with its own configuration, written by bench/lib/servers.py), python -m
   http.server;
3. testcases 1 and 2: many small files / a few large files, fetched by one client and by
   --clients concurrent clients, byte counts checked (bench/lib/client.py);
4. ab on the 1 KiB file at concurrency 1, 12, 60, 200 and on the 100 MiB file at 4: one 1 s
   calibration run per server and concurrency, then rounds of 3 s runs, one run per server per
   round in rotating order; the context switches of each server are read before and after
   each run (bench/lib/ab.py, bench/lib/ctxsw.py). Ratios to nginx are taken within a round;
5. status: stages 3 and 4 with --status while a poller fetches /server-status twice a
   second (as the scoreboard page does) and without, ab on the 1 KiB file at c=12, one run
   each per round, with and without taking turns to go first: req/s, server CPU per request
   and their ratios with/without (bench/lib/statuscost.py);
6. the idle-connection flood against each stage (and a trickle flood, and stages 3 and 4 with
   --reclaim-idle): threads and memory from /proc as 1,000 idle connections (10,000 for
   stage4) open, then the rate of admitted requests from a fresh address (bench/lib/flood.py);
7. the Google Benchmark micro-benchmarks of the parser (bench/micro, bench/lib/micro.py);
8. CSV files, PNG plots and summary.md in build/bench/, or docs/bench/ with --publish
   (bench/lib/report.py), among them timeline-testcase1.png and timeline-testcase2.png: one
   more concurrent pass of each testcase over every stage, each request's connect, first and
   last byte drawn per client (bench/lib/spans.py, as harness/bench timeline draws them).

Only some sections: --only status (≈ 1.5 minutes) measures what --status costs, alone.

The servers' and ab's own output stays in a temporary directory, kept with --keep-tmp.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import resource
import shlex
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HARNESS_DIR = Path(__file__).resolve().parents[1]
REPO_DIR = HARNESS_DIR.parent
SYSTEM_PYTHON = "/usr/bin/python3"

# bench.lib imports only the standard library at load time (matplotlib when plotting), so
# this works before deps.ensure() has installed anything.
from bench.lib import ab, client, ctxsw, deps, flood, machine, micro, report
from bench.lib import spans, statuscost
from bench.lib import servers as sv
from bench.lib.site import HUGE, SMALL_1K, make_site

STAGES = {"stage1": "stage1_sequential", "stage2": "stage2_threaded", "stage3": "stage3_limited",
          "stage4": "stage4_event"}
#: Stages the bench runs without when their binary is not built (with a note in the summary).
OPTIONAL_STAGES = {"stage4"}
#: Stages with stage 3's command line (-maxclient, -maxtotal, --reclaim-idle).
LIMITED_STAGES = {"stage3", "stage4"}
SECTIONS = ("testcases", "ab", "large", "status", "flood", "micro")
#: The peers the throughput sections compare the stages with.
PEERS = ("nginx", "apache", "python")


@dataclass
class Settings:
    """Every knob of one run; written into summary.md."""

    quick: bool
    clients: int = 12  #: concurrent clients of testcases 1 and 2
    tc_reps: int = 9
    reps: int = 5  #: rounds of ab on the 1 KiB file
    concurrencies: tuple[int, ...] = (1, 12, 60, 200)
    run_seconds: int = 3  #: length of every measured ab run (ab -t)
    ab_socket_timeout: float = 10.0
    large_reps: int = 5
    large_c: int = 4
    #: rounds of the status section (stages 3 and 4, ± --status); even, so that each of a
    #: stage's two runs goes first in as many rounds as the other
    status_reps: int = 6
    status_c: int = 12  #: its ab concurrency on the 1 KiB file
    stage3_max_client: int = 256  #: stages 3 and 4 in the throughput tests
    stage3_max_total: int = 256
    server_timeout: int = 10
    flood_count: int = 1000
    flood_count_stage4: int = 10000  #: stage4's floods: 10,000 connections, one per address
    flood_window: float = 4.0
    flood_clients: int = 4
    flood_request_timeout: float = 2.0
    flood_sample_every: int = 25
    flood_server_timeout: int = 10
    flood_stage3_max_client: int = 12  #: stages 3 and 4 in the floods
    flood_stage3_max_total: int = 60
    micro_min_time: float = 0.2

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if not quick:
            return cls(quick=False)
        # Quick keeps the 3 s runs (shorter ones measure nothing) and cuts the rounds.
        return cls(quick=True, tc_reps=3, reps=2, large_reps=2, status_reps=4, flood_window=2.0,
                   micro_min_time=0.05)

    @property
    def flood_hold_max_total(self) -> int:
        """-maxtotal of stage4's holding flood: room for every flood connection and more."""
        return self.flood_count_stage4 + 256


class Log:
    """Progress lines on stdout, each stamped with the seconds since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="harness/bench compare", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds (≈ 7 minutes); the summary marks the figures as "
                        "indicative only")
    parser.add_argument("--clients", type=int, help="concurrent clients of testcases 1 and 2 "
                        "(default 12)")
    parser.add_argument("--reps", type=int, help="repetitions of every ab run and testcase")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--servers", default=None,
                        help="comma-separated servers of the throughput sections (default "
                        f"all: {','.join([*STAGES, *PEERS])}); keep nginx for the ratios")
    parser.add_argument("--concurrency", default=None,
                        help="comma-separated ab concurrencies on the 1 KiB file (default "
                        f"{','.join(str(c) for c in Settings.concurrencies)})")
    parser.add_argument("--out", type=Path, default=None,
                        help="output directory (default build/bench)")
    parser.add_argument("--publish", action="store_true",
                        help="write the reference figures into docs/bench (a full run only)")
    parser.add_argument("--build-dir", type=Path, default=REPO_DIR / "build",
                        help="CMake build directory holding bin/ (default build)")
    parser.add_argument("--tmp", type=Path, default=None,
                        help="parent of the temporary directory (default: the system's)")
    parser.add_argument("--keep-tmp", action="store_true",
                        help="keep the temporary directory (server and ab output)")
    parser.add_argument("--no-install", action="store_true",
                        help="do not apt-get install missing packages")
    args = parser.parse_args(argv)
    args.sections = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = set(args.sections) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {', '.join(sorted(unknown))}")
    if args.servers is not None:
        args.servers = [s.strip() for s in args.servers.split(",") if s.strip()]
        unknown = set(args.servers) - {*STAGES, *PEERS}
        if unknown:
            parser.error(f"unknown servers {', '.join(sorted(unknown))}")
    if args.concurrency is not None:
        try:
            args.concurrency = tuple(int(c) for c in args.concurrency.split(","))
        except ValueError:
            parser.error("--concurrency takes numbers, e.g. 12,200")
        if not args.concurrency or min(args.concurrency) < 1:
            parser.error("--concurrency takes numbers of at least 1")
    if args.publish:
        # docs/bench holds the figures ANSWERS.md quotes: only a complete, full run replaces them.
        if args.out is not None:
            parser.error("--publish writes docs/bench; it does not take --out")
        if (args.quick or args.reps or args.clients or args.servers or args.concurrency
                or set(args.sections) != set(SECTIONS)):
            parser.error("--publish needs the full run: no --quick, --reps, --clients, "
                         "--servers, --concurrency or --only")
        args.out = REPO_DIR / "docs" / "bench"
    elif args.out is None:
        args.out = REPO_DIR / "build" / "bench"
    return args


def reexec_under_system_python(argv: list[str]) -> None:
    """Debian's python3 has matplotlib; a pyenv/venv python3 first on PATH usually has not."""
    if (os.path.exists(SYSTEM_PYTHON)
            and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, str(HARNESS_DIR / "bench"), "compare", *argv])


def raise_fd_limit(needed: int) -> int:
    """Raises the soft RLIMIT_NOFILE (inherited by the servers) to ≥ @p needed if allowed."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, needed)
    if hard != resource.RLIM_INFINITY:
        want = min(want, hard)
    if want != soft:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    return want


def rotated(items: list, k: int) -> list:
    """@p items rotated left by @p k: the order of one interleaved round."""
    k %= max(1, len(items))
    return items[k:] + items[:k]


# ------------------------------------------------------------------------------------------
# The steps
# ------------------------------------------------------------------------------------------


def start_throughput_servers(settings, site, work, stages, results, log, only=None):
    """Starts every server of the throughput sections (those named in @p only, if given); a
    stage that fails ends the bench, a peer that fails (nginx, Apache, Python) is left out
    with a note."""
    made = []
    for short, binary in stages.items():
        if only is not None and short not in only:
            continue
        extra = ()
        if short in LIMITED_STAGES:
            extra = ("-maxclient", str(settings.stage3_max_client),
                     "-maxtotal", str(settings.stage3_max_total))
        made.append(sv.StageServer(work, site.root, binary, short,
                                   timeout=settings.server_timeout, extra=extra))
    peers = {"nginx": sv.NginxServer, "apache": sv.ApacheServer, "python": sv.PythonServer}
    made += [peer(work, site.root) for name, peer in peers.items()
             if only is None or name in only]
    running = []
    for server in made:
        try:
            server.start()
            server.verify(site.small_1k, site.size(site.small_1k))
            server.verify(site.huge, site.size(site.huge))
        except sv.ServerError as error:
            server.stop()
            if server.name.startswith("stage"):
                for other in running:
                    other.stop()
                raise SystemExit(f"bench: {error}") from error
            results.notes.append(f"{server.name} was left out: {error}")
            log(f"{server.name} left out: {error}")
            continue
        results.server_commands[server.name] = server.describe()
        log(f"{server.name} listening on port {server.port} (pid {server.pid})")
        running.append(server)
    return running


def run_testcases(settings, site, running, results, log):
    cases = {"testcase 1 (many small files)": site.many_small,
             "testcase 2 (few large files)": site.few_large}
    for rep in range(settings.tc_reps):
        for server in rotated(running, rep):
            for case, files in cases.items():
                for mode in ("sequential", "concurrent"):
                    drops_before = client.listen_overflows()
                    if mode == "sequential":
                        run = client.timed(lambda: client.run_sequential(
                            server.port, files, timeout=120))
                    else:
                        run = client.timed(lambda: client.run_concurrent(
                            server.port, files, settings.clients, timeout=120))
                    drops = _delta(drops_before, client.listen_overflows())
                    results.testcase_rows.append({
                        "testcase": case, "server": server.name, "mode": mode, "rep": rep + 1,
                        "clients": settings.clients, "files_listed": len(files),
                        "bytes_listed": sum(files.values()), "seconds": run.seconds,
                        "files_ok": run.files, "bytes_ok": run.bytes,
                        "client_cpu": run.client_cpu,
                        "listen_overflows": drops,
                        "error": run.error,
                    })
                    _end_leftover_handshakes(server, drops)
                    if run.error:
                        log(f"{case} {server.name} {mode}: {run.error}")
        log(f"testcases round {rep + 1}/{settings.tc_reps} done")
    record_timelines(settings, cases, running, results, log)


#: The testcases' keys in the timelines' file names.
TIMELINE_KEYS = {"testcase 1 (many small files)": "testcase1",
                 "testcase 2 (few large files)": "testcase2"}


def record_timelines(settings, cases, running, results, log):
    """One more concurrent pass of each testcase over every stage, each request timed
    (connect, first byte, last byte per client) for the timeline plots; not in the
    testcases' figures."""
    stages = [server for server in running if server.name in STAGES]
    passes = spans.record_passes(
        cases, stages, lambda server, paths: spans.record(server.port, paths, settings.clients),
        log)
    for case, drawn in passes.items():
        results.timelines.setdefault(TIMELINE_KEYS[case], {}).update(drawn)


def _delta(before, after):
    return after - before if before is not None and after is not None else None


def _end_leftover_handshakes(server, drops) -> None:
    """Restarts @p server when the listen-queue counter moved during its run.

    A full listen queue leaves handshakes behind that the kernel retries for up to a minute,
    counting every retry as one more overflow: without this they would show up in the figures
    of the servers measured next. Closing the listener ends them; the server starts again on
    a new port.
    """
    if drops:
        server.stop()
        server.start()


def _ab_run(url, n, c, settings, work, tag, server, counter):
    """ab.run for settings.run_seconds, plus the system-wide listen-queue overflows and the
    server's context switches during the run."""
    drops_before = client.listen_overflows()
    ctx_before = counter.snapshot(server.pid)
    result = ab.run(url, n, c, settings.run_seconds, settings.ab_socket_timeout, work, tag)
    ctx = counter.delta(ctx_before, counter.snapshot(server.pid))
    drops = _delta(drops_before, client.listen_overflows())
    _end_leftover_handshakes(server, drops)
    return result, drops, ctx


def _ab_row(result, drops, ctx, server, file, size, concurrency, rep):
    row = {"file": file, "file_bytes": size, "server": server, "concurrency": concurrency,
           "rep": rep}
    row.update(dataclasses.asdict(result))
    row["failures"] = result.failures
    row["ok"] = result.ok
    row["short"] = result.short
    bytes_per_s = result.bytes_per_s
    row["mib_per_s"] = bytes_per_s / 2**20 if bytes_per_s is not None else None
    row["listen_overflows"] = drops
    per_request = (lambda n: n / result.complete
                   if n is not None and result.complete else None)
    row["ctx_switches"] = ctx.switches
    row["ctx_per_request"] = per_request(ctx.switches)
    row["ctx_live_threads"] = ctx.live_threads
    row["ctx_live_threads_per_request"] = per_request(ctx.live_threads)
    row["ctx_processes_exited"] = ctx.processes_exited
    row["cpu_s"] = ctx.cpu_seconds
    row["cpu_us_per_request"] = (ctx.cpu_seconds * 1e6 / result.complete
                                 if ctx.cpu_seconds is not None and result.complete else None)
    return row


def _calibrate(settings, running, url_path, concurrencies, work, results, log, label):
    """One calibration run per server and concurrency; returns the -n cap per concurrency.

    The cap comes from the fastest server's rate, not each server's own: a calibration run
    that a busy moment slowed down must not cut that server's measured runs short.
    """
    caps = {}
    for c in concurrencies:
        line, rates = [], []
        for server in running:
            drops_before = client.listen_overflows()
            rate, result = ab.calibrate(f"http://127.0.0.1:{server.port}{url_path}", c,
                                        settings.ab_socket_timeout, work,
                                        f"{label}-{server.name}-c{c}")
            _end_leftover_handshakes(server, _delta(drops_before, client.listen_overflows()))
            rates.append(rate)
            results.calibration_rows.append({
                "file": url_path, "server": server.name, "concurrency": c,
                "seconds": result.seconds, "complete": result.complete, "rate": rate,
                "gave_up": not result.ok})
            line.append(f"{server.name} {rate:,.0f}")
        caps[c] = ab.cap_for(max(rates, default=1.0), settings.run_seconds, c)
        for row in results.calibration_rows[-len(rates):]:
            row["cap"] = caps[c]
        log(f"calibration {label} c={c} ({ab.CALIBRATION_SECONDS} s): req/s " + ", ".join(line)
            + f"; cap -n {caps[c]:,}")
    return caps


def run_ab_small(settings, site, running, work, results, log, counter):
    caps = _calibrate(settings, running, site.small_1k, settings.concurrencies, work, results,
                      log, "1k")
    for rep in range(settings.reps):
        for c in settings.concurrencies:
            line = []
            for server in rotated(running, rep):
                result, drops, ctx = _ab_run(f"http://127.0.0.1:{server.port}{site.small_1k}",
                                             caps[c], c, settings, work,
                                             f"1k-{server.name}-c{c}-r{rep + 1}", server,
                                             counter)
                row = _ab_row(result, drops, ctx, server.name, site.small_1k,
                              site.size(site.small_1k), c, rep + 1)
                results.ab_rows.append(row)
                rps = f"{result.rps:,.0f}" if result.rps is not None else "–"
                if result.rps_before_abort is not None:
                    rps += f" (≈{result.rps_before_abort:,.0f} before ab gave up)"
                if row["cpu_us_per_request"] is not None:
                    rps += f" {row['cpu_us_per_request']:.1f}µs"
                if row["ctx_per_request"] is not None:
                    rps += f" {row['ctx_per_request']:.2f}cs"
                if result.short:
                    rps += f" (short: {result.seconds:.2f} s)"
                line.append(f"{server.name} {rps}" + (f" ({result.failures} fail)"
                                                      if result.failures else ""))
            log(f"1 KiB c={c} round {rep + 1}/{settings.reps}: req/s, server CPU/request, "
                "switches/request: "
                + ", ".join(line))


def run_ab_large(settings, site, running, work, results, log, counter):
    size = site.size(site.huge)
    c = settings.large_c
    caps = _calibrate(settings, running, site.huge, (c,), work, results, log, "100m")
    for rep in range(settings.large_reps):
        line = []
        for server in rotated(running, rep):
            result, drops, ctx = _ab_run(f"http://127.0.0.1:{server.port}{site.huge}",
                                         caps[c], c, settings, work,
                                         f"100m-{server.name}-r{rep + 1}", server, counter)
            row = _ab_row(result, drops, ctx, server.name, site.huge, size, c, rep + 1)
            results.ab_rows.append(row)
            mib = f"{row['mib_per_s']:,.0f}" if row["mib_per_s"] is not None else "–"
            line.append(f"{server.name} {mib}")
        log(f"100 MiB c={c} round {rep + 1}/{settings.large_reps}: MiB/s " + ", ".join(line))


def status_order(servers, rep):
    """The order of one round of the status section: the stages in rotating order, each
    stage's two servers side by side, the one with --status second in even rounds and first
    in odd ones. (A run measured right after another of the same stage came out slower on
    this machine: with a fixed order within the pair, that alone looked like a cost.)"""
    pairs = {}
    for server in servers:
        pairs.setdefault(server.name.removesuffix(statuscost.WITH), []).append(server)
    order = []
    for stage in rotated(list(pairs), rep):
        pair = sorted(pairs[stage], key=lambda s: s.name.endswith(statuscost.WITH))
        order += pair if rep % 2 == 0 else pair[::-1]
    return order


def run_status_cost(settings, site, work, stages, results, log, counter, only=None):
    """Stages 3 and 4 (those built, and named in @p only if given), each started twice: with
    --status, polled by a statuscost.Poller during its runs, and without; ab on the 1 KiB
    file at settings.status_c, one run per server per round in rotating order."""
    made = []
    for short in sorted(LIMITED_STAGES & set(stages)):
        if only is not None and short not in only:
            continue
        limits = ("-maxclient", str(settings.stage3_max_client),
                  "-maxtotal", str(settings.stage3_max_total))
        for name, extra in ((short, limits), (short + statuscost.WITH, (*limits, "--status"))):
            status_dir = work / f"status-{name}"
            status_dir.mkdir()
            made.append(sv.StageServer(status_dir, site.root, stages[short], name,
                                       timeout=settings.server_timeout, extra=extra))
    if not made:
        results.notes.append("status section: neither stage3 nor stage4 to measure")
        return
    running = []
    try:
        for server in made:
            server.start()
            server.verify(site.small_1k, site.size(site.small_1k))
            if server.name.endswith(statuscost.WITH):
                server.verify("/server-status", None)
            running.append(server)
            results.server_commands[server.name] = server.describe()
            log(f"{server.name} listening on port {server.port} (pid {server.pid})")
        c = settings.status_c
        caps = _calibrate(settings, running, site.small_1k, (c,), work, results, log,
                          "status")
        for rep in range(settings.status_reps):
            line = []
            for server in status_order(running, rep):
                polled = server.name.endswith(statuscost.WITH)
                poller = statuscost.Poller(server.port)
                url = f"http://127.0.0.1:{server.port}{site.small_1k}"
                tag = f"status-{server.name}-r{rep + 1}"
                if polled:
                    with poller:
                        result, drops, ctx = _ab_run(url, caps[c], c, settings, work, tag,
                                                     server, counter)
                else:
                    result, drops, ctx = _ab_run(url, caps[c], c, settings, work, tag, server,
                                                 counter)
                row = _ab_row(result, drops, ctx, server.name, site.small_1k,
                              site.size(site.small_1k), c, rep + 1)
                row.update({"stage": server.name.removesuffix(statuscost.WITH),
                            "status": polled, "polls_ok": poller.ok,
                            "polls_failed": poller.failed})
                results.status_rows.append(row)
                cpu = row["cpu_us_per_request"]
                line.append(f"{server.name} {result.rps or 0:,.0f}"
                            + (f" {cpu:.1f}µs" if cpu is not None else "")
                            + (f" ({poller.ok} polls, {poller.failed} failed: "
                               f"{poller.last_error})" if poller.failed else
                               (f" ({poller.ok} polls)" if polled else "")))
            log(f"status c={c} round {rep + 1}/{settings.status_reps}: req/s, server "
                "CPU/request: " + ", ".join(line))
    except sv.ServerError as error:
        results.notes.append(f"status section: {error}")
        log(f"status section: {error}")
    finally:
        for server in made:
            server.stop()


#: The floods run, in order: (stage, variant, extra options, limits). Stages 3 and 4 run with
#: and without --reclaim-idle and stage 3's flood limits ("stage3": -maxclient 12 -maxtotal
#: 60), so the table shows the lockout and what the flag does to it; stage 4 also runs once
#: with room for every flood connection ("hold"), which is what its 10,000-connection targets
#: are about. Stage 4's floods open Settings.flood_count_stage4 connections, the others
#: Settings.flood_count.
FLOOD_RUNS = (
    ("stage1", "idle", (), None),
    ("stage2", "idle", (), None),
    ("stage3", "idle", (), "stage3"),
    ("stage3", "idle", ("--reclaim-idle",), "stage3"),
    ("stage3", "trickle", (), "stage3"),
    ("stage3", "trickle", ("--reclaim-idle",), "stage3"),
    ("stage4", "idle", (), "hold"),
    ("stage4", "idle", (), "stage3"),
    ("stage4", "idle", ("--reclaim-idle",), "stage3"),
    ("stage4", "trickle", (), "stage3"),
    ("stage4", "trickle", ("--reclaim-idle",), "stage3"),
)


def flood_name(settings, short, flags, limits) -> str:
    """The row's name in tables: the stage and the options that differ between its rows."""
    if limits == "hold":
        return f"{short} -maxtotal {settings.flood_hold_max_total}"
    return " ".join((short, *flags))


def run_floods(settings, site, work, stages, results, log):
    for index, (short, variant, flags, limits) in enumerate(FLOOD_RUNS):
        if short not in stages:
            continue
        extra = flags
        recovery = None
        name = flood_name(settings, short, flags, limits)
        count = settings.flood_count_stage4 if short == "stage4" else settings.flood_count
        if limits is not None:
            max_total = (settings.flood_hold_max_total if limits == "hold"
                         else settings.flood_stage3_max_total)
            extra = ("-maxclient", str(settings.flood_stage3_max_client),
                     "-maxtotal", str(max_total), *flags)
            # Its admitted flood connections give their slots back at the read deadline.
            recovery = settings.flood_server_timeout + 5.0
        flood_dir = work / f"flood-{index}-{short}"
        flood_dir.mkdir()
        server = sv.StageServer(flood_dir, site.root, stages[short], name,
                                timeout=settings.flood_server_timeout, extra=extra)
        try:
            server.start()
            server.verify(site.small_1k, site.size(site.small_1k))
            result = flood.run(server, site.small_1k, site.size(site.small_1k), count,
                               settings.flood_clients, settings.flood_window,
                               settings.flood_request_timeout,
                               max(settings.flood_sample_every, count // 40), recovery,
                               trickle=variant == "trickle")
        except (sv.ServerError, OSError) as error:
            results.notes.append(f"{variant} flood against {name} failed: {error}")
            log(f"flood {name} ({variant}): {error}")
            continue
        finally:
            server.stop()
        results.floods.append(result)
        log(f"flood {name} ({variant}): {result.opened} open ({result.held} held, "
            f"{result.refused_503} 503, {result.refused_429} 429, {result.closed} closed), "
            f"threads {result.threads_idle}→{result.max_threads}, "
            f"VmHWM {result.vmhwm_kib / 1024:.1f} MiB, "
            f"admitted/s {result.unloaded.admitted_per_s:,.0f} unloaded vs "
            f"{result.loaded.admitted_per_s:,.0f} under flood")


def console_summary(results, goals, out: Path) -> str:
    def f(v, fmt):
        return fmt.format(v) if v is not None else "–"

    lines = []
    if results.settings["quick"]:
        lines += [report.QUICK_LABEL, ""]
    tc = report.testcase_summary(results.testcase_rows)
    if tc:
        lines.append(f"{'testcase':32} {'server':7} {'seq s':>8} {'conc s':>8} {'speedup':>8}")
        for r in tc:
            lines.append(f"{r['testcase']:32} {r['server']:7} {f(r['sequential_s'], '{:.3f}'):>8} "
                         f"{f(r['concurrent_s'], '{:.3f}'):>8} {f(r['speedup'], '{:.2f}x'):>8}")
        lines.append("")
    summary = report.ab_summary(results.ab_rows)
    for file in sorted({r["file"] for r in summary},
                       key=lambda f: next(r["file_bytes"] for r in summary if r["file"] == f)):
        rows = [r for r in summary if r["file"] == file]
        unit = "mib_per_s" if report.rate_key(rows[0]["file_bytes"]) == "mib_per_s" else "rps"
        lines.append(f"{file:10} {'server':7} {'c':>4} {'MiB/s' if unit != 'rps' else 'req/s':>9} "
                     f"{'min-max':>15} {'p99 ms':>9} {'CPU us':>7} {'x ngx':>6} {'cs/req':>7} "
                     f"{'x ngx':>6} {'fail':>5} {'x nginx':>7} {'min-max':>10}")
        for r in sorted(rows, key=lambda r: r["concurrency"]):
            low, high = r[f"{unit}_min"], r[f"{unit}_max"]
            spread = f"{low:,.0f}-{high:,.0f}" if low is not None else "–"
            ratio_spread = (f"{r['ratio_to_nginx_min']:.2f}-{r['ratio_to_nginx_max']:.2f}"
                            if r["ratio_to_nginx_min"] is not None else "–")
            lines.append(f"{'':10} {r['server']:7} {r['concurrency']:>4} "
                         f"{f(r[f'{unit}_median'], '{:,.0f}'):>9} {spread:>15} "
                         f"{f(r['p99_ms_median'], '{:.3f}'):>9} "
                         f"{f(r['cpu_us_per_request_median'], '{:.1f}'):>7} "
                         f"{f(r['cpu_ratio_to_nginx'], '{:.2f}'):>6} "
                         f"{f(r['ctx_per_request_median'], '{:.2f}'):>7} "
                         f"{f(r['ctx_ratio_to_nginx'], '{:.2f}'):>6} "
                         f"{r['failures_total']:>5} {f(r['ratio_to_nginx'], '{:.2f}'):>7} "
                         f"{ratio_spread:>10}")
        lengths = report.run_lengths(results.ab_rows, file)
        if lengths:
            lines.append(f"{file}: ab runs lasted {lengths['min']:.2f}–{lengths['max']:.2f} s "
                         f"(median {lengths['median']:.2f} s, {lengths['runs']} runs, "
                         f"{lengths['short']} ended early at their -n cap)")
        lines.append("")
    status = statuscost.summary(results.status_rows)
    if status:
        lines.append(f"{'--status cost':14} {'req/s w/o':>10} {'with':>9} {'ratio':>6} "
                     f"{'CPU us w/o':>10} {'with':>6} {'ratio':>6} {'min-max':>12} "
                     f"{'rounds':>6} noise")
        for r in status:
            noise = {True: "within", False: "OUTSIDE", None: "–"}[statuscost.within_noise(r)]
            spread = (f"{r['cpu_us_ratio_min']:.3f}-{r['cpu_us_ratio_max']:.3f}"
                      if r["cpu_us_ratio_min"] is not None else "–")
            lines.append(f"{r['stage']:14} {f(r['rps_without'], '{:,.0f}'):>10} "
                         f"{f(r['rps_with'], '{:,.0f}'):>9} {f(r['rps_ratio'], '{:.3f}'):>6} "
                         f"{f(r['cpu_us_without'], '{:.1f}'):>10} "
                         f"{f(r['cpu_us_with'], '{:.1f}'):>6} "
                         f"{f(r['cpu_us_ratio'], '{:.3f}'):>6} {spread:>12} "
                         f"{r['rounds']:>6} {noise}")
        lines.append("")
    for t in goals:
        mark = "?" if t.ok is None else ("OK  " if t.ok else "MISS")
        lines.append(f"{mark} {t.text}: {t.figure}")
    for note in results.notes:
        lines.append(f"note: {note}")
    lines.append("")
    lines.append(f"summary: {out / 'summary.md'}")
    return "\n".join(lines)


def _interrupt(signum, frame) -> None:
    """SIGTERM ends the run like Ctrl-C: through the finally blocks that stop the servers."""
    raise KeyboardInterrupt


def find_stages(build_dir: Path, notes: list[str]) -> dict[str, Path]:
    """The stage binaries to run; an optional stage that is not built yet gets a note."""
    stages = {}
    for short, binary in STAGES.items():
        path = build_dir / "bin" / binary
        if os.access(path, os.X_OK):
            stages[short] = path
        elif short in OPTIONAL_STAGES:
            shown = path.relative_to(REPO_DIR) if path.is_relative_to(REPO_DIR) else path
            notes.append(f"{short} ({shown}) is not built yet: it is left out of every "
                         "section, and its targets are not measured.")
        else:
            raise SystemExit(f"bench: {path} not found: build first "
                             "(cmake --preset default && cmake --build --preset default)")
    return stages


def main(argv: list[str]) -> int:
    reexec_under_system_python(argv)
    args = parse_args(argv)

    settings = Settings.make(args.quick)
    if args.clients:
        settings.clients = args.clients
    if args.reps:
        settings.reps = settings.tc_reps = settings.large_reps = settings.status_reps = args.reps
    if args.concurrency:
        settings.concurrencies = args.concurrency
    log = Log()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGHUP, _interrupt)

    if not args.no_install:
        deps.ensure(list(deps.PACKAGES), log)
    build_dir = args.build_dir.resolve()
    notes = []
    stages = find_stages(build_dir, notes)
    largest_flood = max([settings.flood_count]
                        + ([settings.flood_count_stage4] if "stage4" in stages else []))
    limit = raise_fd_limit(largest_flood + 512)
    if limit < settings.flood_count + 100:
        settings.flood_count = max(100, limit - 200)
        notes.append(f"RLIMIT_NOFILE is {limit}: the flood was cut to {settings.flood_count} "
                     "connections")
    if "stage4" in stages and limit < settings.flood_count_stage4 + 100:
        settings.flood_count_stage4 = max(100, limit - 200)
        notes.append(f"RLIMIT_NOFILE is {limit}: stage4's floods were cut to "
                     f"{settings.flood_count_stage4} connections")
    counter = ctxsw.Counter()

    command = shlex.join([SYSTEM_PYTHON, "harness/bench", "compare", *argv])
    results = report.Results(settings=dataclasses.asdict(settings), command=command,
                             machine=machine.describe(build_dir, REPO_DIR, stages.values()),
                             notes=notes, ctx_method=counter.describe(),
                             stages=list(stages))
    results.settings["flood_hold_max_total"] = settings.flood_hold_max_total
    work = Path(tempfile.mkdtemp(prefix="lab-bench-", dir=args.tmp))
    os.chmod(work, 0o755)  # nginx's and Apache's worker user must reach the document root
    log(f"work directory {work}")
    if args.quick:
        log(report.QUICK_LABEL)
    log(f"context switches counted with {counter.method}"
        + (f" (taskstats: {counter.why_not_taskstats})" if counter.why_not_taskstats else ""))
    for note in notes:
        log(note)
    running = []
    try:
        site = make_site(work / "root")
        log(f"document root {site.root}: 1 KiB, {len(site.many_small)} small files, "
            f"{len(site.few_large)} large files, 100 MiB")
        wanted = set(args.sections)
        if wanted & {"testcases", "ab", "large"}:
            running = start_throughput_servers(settings, site, work, stages, results, log,
                                               args.servers)
            if "testcases" in wanted:
                run_testcases(settings, site, running, results, log)
            if "ab" in wanted:
                run_ab_small(settings, site, running, work, results, log, counter)
            if "large" in wanted:
                run_ab_large(settings, site, running, work, results, log, counter)
            for server in running:
                server.stop()
        if "status" in wanted:
            run_status_cost(settings, site, work, stages, results, log, counter, args.servers)
        if "flood" in wanted:
            run_floods(settings, site, work, stages, results, log)
        if "micro" in wanted:
            results.micro = micro.run(REPO_DIR, build_dir, work, settings.micro_min_time, log)
            log("micro-benchmarks " + (results.micro.error or "done"))
    except KeyboardInterrupt:
        log("interrupted: stopping the servers, writing what was measured")
        results.notes.append("the run was interrupted; some sections are incomplete")
    finally:
        for server in running:
            server.stop()
        counter.close()
        if args.keep_tmp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results.elapsed_s = time.monotonic() - log.start
    out = args.out.resolve()
    goals = report.write_all(out, results, SMALL_1K, HUGE)
    print(console_summary(results, goals, out), flush=True)
    return 0
