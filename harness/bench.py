#!/usr/bin/env python3
"""Benchmark of the three stages against nginx and Python's http.server, in one command.

    /usr/bin/python3 harness/bench.py            # full run, ≲ 10 minutes
    /usr/bin/python3 harness/bench.py --quick    # smaller and fewer runs, < 2 minutes

What it does, all on 127.0.0.1, every wait and every run bounded:

1. installs what is missing (apache2-utils, nginx, python3-matplotlib, libbenchmark-dev);
2. generates one document root (benchlib/site.py) and starts every server on it: stage1,
   stage2, stage3 (-maxclient 256 -maxtotal 256), nginx (own nginx.conf), python -m http.server;
3. testcases 1 and 2: many small files / a few large files, fetched by one client and by
   --clients concurrent clients, byte counts checked (benchlib/client.py);
4. ab on the 1 KiB file at concurrency 1, 12, 60, 200 and on the 100 MiB file at 4, repeated
   and interleaved (one run per server per round, rotating order) (benchlib/ab.py);
5. the idle-connection flood against each stage (and a trickle flood, and stage 3 with
   --reclaim-idle): threads and memory from /proc as 1000 idle
   connections open, then the rate of admitted requests from a fresh address
   (benchlib/flood.py);
6. the Google Benchmark micro-benchmarks of the parser (bench/micro, benchlib/micro.py);
7. CSV files, PNG plots and summary.md in docs/bench/ (benchlib/report.py).

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

HARNESS_DIR = Path(__file__).resolve().parent
REPO_DIR = HARNESS_DIR.parent
SYSTEM_PYTHON = "/usr/bin/python3"

sys.path.insert(0, str(HARNESS_DIR))
# benchlib imports only the standard library at load time (matplotlib when plotting), so
# this works before deps.ensure() has installed anything.
from benchlib import ab, client, deps, flood, machine, micro, report  # noqa: E402
from benchlib import servers as sv  # noqa: E402
from benchlib.site import HUGE, SMALL_1K, make_site  # noqa: E402

STAGES = {"stage1": "stage1_sequential", "stage2": "stage2_threaded", "stage3": "stage3_limited"}
SECTIONS = ("testcases", "ab", "large", "flood", "micro")


@dataclass
class Settings:
    """Every knob of one run; written into summary.md."""

    quick: bool
    clients: int = 12  #: concurrent clients of testcases 1 and 2
    tc_reps: int = 9
    reps: int = 5  #: ab repetitions on the 1 KiB file
    concurrencies: tuple[int, ...] = (1, 12, 60, 200)
    small_n: int = 4000
    small_n_c1: int = 2000
    ab_time_limit: float = 15.0
    ab_socket_timeout: float = 10.0
    large_reps: int = 5
    large_n: int = 40
    large_c: int = 4
    large_time_limit: float = 60.0
    stage3_max_client: int = 256
    stage3_max_total: int = 256
    server_timeout: int = 10
    flood_count: int = 1000
    flood_window: float = 4.0
    flood_clients: int = 4
    flood_request_timeout: float = 2.0
    flood_sample_every: int = 25
    flood_server_timeout: int = 10
    flood_stage3_max_client: int = 12
    flood_stage3_max_total: int = 60
    micro_min_time: float = 0.2

    @classmethod
    def make(cls, quick: bool) -> "Settings":
        if not quick:
            return cls(quick=False)
        return cls(quick=True, tc_reps=3, reps=2, small_n=1000, small_n_c1=400,
                   ab_time_limit=8.0, large_reps=1, large_n=8, large_time_limit=30.0,
                   flood_window=2.0, micro_min_time=0.05)


class Log:
    """Progress lines on stdout, each stamped with the seconds since the start."""

    def __init__(self) -> None:
        self.start = time.monotonic()

    def __call__(self, message: str) -> None:
        print(f"[{time.monotonic() - self.start:6.1f}s] {message}", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="fewer repetitions and requests (< 2 minutes)")
    parser.add_argument("--clients", type=int, help="concurrent clients of testcases 1 and 2 "
                        "(default 12)")
    parser.add_argument("--reps", type=int, help="repetitions of every ab run and testcase")
    parser.add_argument("--only", default=",".join(SECTIONS),
                        help=f"comma-separated sections to run (default all: {','.join(SECTIONS)})")
    parser.add_argument("--out", type=Path, default=REPO_DIR / "docs" / "bench",
                        help="output directory (default docs/bench)")
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
    return args


def reexec_under_system_python(argv: list[str]) -> None:
    """Debian's python3 has matplotlib; a pyenv/venv python3 first on PATH usually has not."""
    if (os.path.exists(SYSTEM_PYTHON)
            and os.path.realpath(sys.executable) != os.path.realpath(SYSTEM_PYTHON)):
        os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON, str(Path(__file__).resolve()), *argv])


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


def start_throughput_servers(settings, site, work, build_dir, results, log):
    made = []
    for short, binary in STAGES.items():
        extra = ()
        if short == "stage3":
            extra = ("-maxclient", str(settings.stage3_max_client),
                     "-maxtotal", str(settings.stage3_max_total))
        made.append(sv.StageServer(work, site.root, build_dir / "bin" / binary, short,
                                   timeout=settings.server_timeout, extra=extra))
    made.append(sv.NginxServer(work, site.root))
    made.append(sv.PythonServer(work, site.root))
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
                    results.testcase_rows.append({
                        "testcase": case, "server": server.name, "mode": mode, "rep": rep + 1,
                        "clients": settings.clients, "files_listed": len(files),
                        "bytes_listed": sum(files.values()), "seconds": run.seconds,
                        "files_ok": run.files, "bytes_ok": run.bytes,
                        "client_cpu": run.client_cpu,
                        "listen_overflows": _delta(drops_before, client.listen_overflows()),
                        "error": run.error,
                    })
                    if run.error:
                        log(f"{case} {server.name} {mode}: {run.error}")
        log(f"testcases round {rep + 1}/{settings.tc_reps} done")


def _delta(before, after):
    return after - before if before is not None and after is not None else None


def _ab_run(url, n, c, time_limit, settings, work, tag):
    """ab.run, plus the system-wide listen-queue overflows during the run."""
    before = client.listen_overflows()
    result = ab.run(url, n, c, time_limit, settings.ab_socket_timeout, work, tag)
    return result, _delta(before, client.listen_overflows())


def _ab_row(result, drops, server, file, size, concurrency, rep):
    row = {"file": file, "file_bytes": size, "server": server, "concurrency": concurrency,
           "rep": rep}
    fields = dataclasses.asdict(result)
    row.update(fields)
    row["failures"] = result.failures
    row["ok"] = result.ok
    row["listen_overflows"] = drops
    return row


def run_ab_small(settings, site, running, work, results, log):
    for server in running:  # warm-up: thread pools, nginx workers, page cache; not recorded
        ab.run(f"http://127.0.0.1:{server.port}{site.small_1k}", 300, 4, 10,
               settings.ab_socket_timeout, work, f"warmup-{server.name}")
    for rep in range(settings.reps):
        for c in settings.concurrencies:
            n = settings.small_n_c1 if c == 1 else settings.small_n
            line = []
            for server in rotated(running, rep):
                result, drops = _ab_run(f"http://127.0.0.1:{server.port}{site.small_1k}", n,
                                        c, settings.ab_time_limit, settings, work,
                                        f"1k-{server.name}-c{c}-r{rep + 1}")
                results.ab_rows.append(_ab_row(result, drops, server.name, site.small_1k,
                                               site.size(site.small_1k), c, rep + 1))
                rps = f"{result.rps:,.0f}" if result.rps is not None else "–"
                if result.rps_before_abort is not None:
                    rps += f" (≈{result.rps_before_abort:,.0f} before ab gave up)"
                line.append(f"{server.name} {rps}" + (f" ({result.failures} fail)"
                                                      if result.failures else ""))
            log(f"1 KiB c={c} round {rep + 1}/{settings.reps}: req/s " + ", ".join(line))


def run_ab_large(settings, site, running, work, results, log):
    size = site.size(site.huge)
    for rep in range(settings.large_reps):
        line = []
        for server in rotated(running, rep):
            result, drops = _ab_run(f"http://127.0.0.1:{server.port}{site.huge}",
                                    settings.large_n, settings.large_c,
                                    settings.large_time_limit, settings, work,
                                    f"100m-{server.name}-r{rep + 1}")
            results.ab_rows.append(_ab_row(result, drops, server.name, site.huge, size,
                                           settings.large_c, rep + 1))
            mib = f"{result.rps * size / 2**20:,.0f}" if result.rps is not None else "–"
            line.append(f"{server.name} {mib}")
        log(f"100 MiB c={settings.large_c} round {rep + 1}/{settings.large_reps}: MiB/s "
            + ", ".join(line))


#: The floods run, in order: (stage, variant, extra options). Stage 3 runs with and without
#: --reclaim-idle, so the table shows the lockout and what the flag does to it.
FLOOD_RUNS = (
    ("stage1", "idle", ()),
    ("stage2", "idle", ()),
    ("stage3", "idle", ()),
    ("stage3", "idle", ("--reclaim-idle",)),
    ("stage3", "trickle", ()),
    ("stage3", "trickle", ("--reclaim-idle",)),
)


def run_floods(settings, site, work, build_dir, results, log):
    for index, (short, variant, flags) in enumerate(FLOOD_RUNS):
        extra = flags
        recovery = None
        name = " ".join((short, *flags))
        if short == "stage3":
            extra = ("-maxclient", str(settings.flood_stage3_max_client),
                     "-maxtotal", str(settings.flood_stage3_max_total), *flags)
            # Its admitted flood connections give their slots back at the read deadline.
            recovery = settings.flood_server_timeout + 5.0
        flood_dir = work / f"flood-{index}-{short}"
        flood_dir.mkdir()
        server = sv.StageServer(flood_dir, site.root, build_dir / "bin" / STAGES[short], name,
                                timeout=settings.flood_server_timeout, extra=extra)
        try:
            server.start()
            server.verify(site.small_1k, site.size(site.small_1k))
            result = flood.run(server, site.small_1k, site.size(site.small_1k),
                               settings.flood_count, settings.flood_clients,
                               settings.flood_window, settings.flood_request_timeout,
                               settings.flood_sample_every, recovery,
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
    lines = []
    tc = report.testcase_summary(results.testcase_rows)
    if tc:
        lines.append(f"{'testcase':32} {'server':7} {'seq s':>8} {'conc s':>8} {'speedup':>8}")
        for r in tc:
            seq = f"{r['sequential_s']:.3f}" if r["sequential_s"] else "–"
            conc = f"{r['concurrent_s']:.3f}" if r["concurrent_s"] else "–"
            sp = f"{r['speedup']:.2f}x" if r["speedup"] else "–"
            lines.append(f"{r['testcase']:32} {r['server']:7} {seq:>8} {conc:>8} {sp:>8}")
        lines.append("")
    summary = report.ab_summary(results.ab_rows)
    if summary:
        lines.append(f"{'file':10} {'server':7} {'c':>4} {'req/s':>9} {'p50 ms':>8} "
                     f"{'p99 ms':>9} {'fail':>6} {'x nginx':>8}")
        for r in summary:
            def f(v, fmt):
                return fmt.format(v) if v is not None else "–"
            lines.append(f"{r['file']:10} {r['server']:7} {r['concurrency']:>4} "
                         f"{f(r['rps_median'], '{:,.0f}'):>9} {f(r['p50_ms_median'], '{:.3f}'):>8} "
                         f"{f(r['p99_ms_median'], '{:.3f}'):>9} {r['failures_total']:>6} "
                         f"{f(r['ratio_to_nginx'], '{:.2f}'):>8}")
        lines.append("")
    for t in goals:
        mark = "?" if t.ok is None else ("OK  " if t.ok else "MISS")
        lines.append(f"{mark} {t.text}: {t.figure}")
    lines.append("")
    lines.append(f"summary: {out / 'summary.md'}")
    return "\n".join(lines)


def _interrupt(signum, frame) -> None:
    """SIGTERM ends the run like Ctrl-C: through the finally blocks that stop the servers."""
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    reexec_under_system_python(argv)
    args = parse_args(argv)

    settings = Settings.make(args.quick)
    if args.clients:
        settings.clients = args.clients
    if args.reps:
        settings.reps = settings.tc_reps = settings.large_reps = args.reps
    log = Log()
    signal.signal(signal.SIGTERM, _interrupt)

    if not args.no_install:
        deps.ensure(list(deps.PACKAGES), log)
    build_dir = args.build_dir.resolve()
    for binary in STAGES.values():
        path = build_dir / "bin" / binary
        if not os.access(path, os.X_OK):
            raise SystemExit(f"bench: {path} not found: build first "
                             "(cmake --preset default && cmake --build --preset default)")
    limit = raise_fd_limit(settings.flood_count + 512)
    notes = []
    if limit < settings.flood_count + 100:
        settings.flood_count = max(100, limit - 200)
        notes.append(f"RLIMIT_NOFILE is {limit}: the flood was cut to {settings.flood_count} "
                     "connections")

    command = shlex.join([SYSTEM_PYTHON, "harness/bench.py", *argv])
    results = report.Results(settings=dataclasses.asdict(settings), command=command,
                             machine=machine.describe(
                                 build_dir, REPO_DIR,
                                 [build_dir / "bin" / b for b in STAGES.values()]),
                             notes=notes)
    work = Path(tempfile.mkdtemp(prefix="lab-bench-", dir=args.tmp))
    os.chmod(work, 0o755)  # nginx's worker user must reach the document root inside
    log(f"work directory {work}")
    running = []
    try:
        site = make_site(work / "root")
        log(f"document root {site.root}: 1 KiB, {len(site.many_small)} small files, "
            f"{len(site.few_large)} large files, 100 MiB")
        wanted = set(args.sections)
        if wanted & {"testcases", "ab", "large"}:
            running = start_throughput_servers(settings, site, work, build_dir, results, log)
            if "testcases" in wanted:
                run_testcases(settings, site, running, results, log)
            if "ab" in wanted:
                run_ab_small(settings, site, running, work, results, log)
            if "large" in wanted:
                run_ab_large(settings, site, running, work, results, log)
            for server in running:
                server.stop()
        if "flood" in wanted:
            run_floods(settings, site, work, build_dir, results, log)
        if "micro" in wanted:
            results.micro = micro.run(REPO_DIR, build_dir, work, settings.micro_min_time, log)
            log("micro-benchmarks " + (results.micro.error or "done"))
    except KeyboardInterrupt:
        log("interrupted: stopping the servers, writing what was measured")
        results.notes.append("the run was interrupted; some sections are incomplete")
    finally:
        for server in running:
            server.stop()
        if args.keep_tmp:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    results.elapsed_s = time.monotonic() - log.start
    out = args.out.resolve()
    goals = report.write_all(out, results, SMALL_1K, HUGE)
    print(console_summary(results, goals, out), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
