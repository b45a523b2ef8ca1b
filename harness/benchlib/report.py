"""Turns the raw measurements into CSV files, PNG plots and summary.md.

Every figure in summary.md is a median over the repetitions; the CSV files beside it hold
every single run, so any figure can be recomputed.
"""

from __future__ import annotations

import csv
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .flood import FloodResult
from .micro import MicroRun

MIB = 1024 * 1024

#: Servers in the order tables and plots show them.
SERVER_ORDER = ["stage1", "stage2", "stage3", "nginx", "python"]


@dataclass
class Results:
    """Everything one run of bench.py measured, plus how it was run."""

    settings: dict
    command: str
    machine: dict[str, str]
    server_commands: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    testcase_rows: list[dict] = field(default_factory=list)
    ab_rows: list[dict] = field(default_factory=list)
    floods: list[FloodResult] = field(default_factory=list)
    micro: MicroRun | None = None
    elapsed_s: float = 0.0


# ------------------------------------------------------------------------------------------
# Aggregation
# ------------------------------------------------------------------------------------------


def _median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def _ordered(names):
    return sorted(set(names), key=lambda n: (SERVER_ORDER.index(n) if n in SERVER_ORDER else 99, n))


def testcase_summary(rows: list[dict]) -> list[dict]:
    """Median sequential and concurrent time per (testcase, server), and the speedup."""
    out = []
    for testcase in sorted({r["testcase"] for r in rows}):
        for server in _ordered(r["server"] for r in rows if r["testcase"] == testcase):
            mine = [r for r in rows if r["testcase"] == testcase and r["server"] == server]
            ok = [r for r in mine if not r["error"]]
            seq = _median(r["seconds"] for r in ok if r["mode"] == "sequential")
            conc = _median(r["seconds"] for r in ok if r["mode"] == "concurrent")
            errors = [r["error"] for r in mine if r["error"]]
            drops = [r["listen_overflows"] for r in mine if r["mode"] == "concurrent"
                     and r.get("listen_overflows") is not None]
            first = mine[0]
            out.append({
                "testcase": testcase, "server": server, "files": first["files_listed"],
                "bytes": first["bytes_listed"], "clients": first["clients"],
                "runs": len(mine) // 2, "sequential_s": seq, "concurrent_s": conc,
                "speedup": seq / conc if seq and conc else None,
                "listen_overflows_concurrent": sum(drops) if drops else None,
                "client_cpu_sequential": _median(r.get("client_cpu") for r in ok
                                                 if r["mode"] == "sequential"),
                "client_cpu_concurrent": _median(r.get("client_cpu") for r in ok
                                                 if r["mode"] == "concurrent"),
                "errors": len(errors), "first_error": errors[0] if errors else "",
            })
    return out


def ab_summary(rows: list[dict]) -> list[dict]:
    """Median req/s, p50, p99 per (file, server, concurrency), and the ratio to nginx."""
    out = []
    keys = sorted({(r["file"], r["concurrency"]) for r in rows})
    for file, concurrency in keys:
        group = [r for r in rows if r["file"] == file and r["concurrency"] == concurrency]
        medians = {}
        for server in _ordered(r["server"] for r in group):
            mine = [r for r in group if r["server"] == server]
            rps = [r["rps"] for r in mine if r["rps"] is not None]
            medians[server] = {
                "file": file, "server": server, "concurrency": concurrency, "runs": len(mine),
                "runs_ok": sum(1 for r in mine if r["ok"]),
                "rps_median": _median(rps), "rps_min": min(rps) if rps else None,
                "rps_before_abort_median": _median(r.get("rps_before_abort") for r in mine),
                "rps_max": max(rps) if rps else None,
                "mib_per_s_median": (_median(rps) * mine[0]["file_bytes"] / MIB
                                     if rps else None),
                "p50_ms_median": _median(r["p50_ms"] for r in mine),
                "p99_ms_median": _median(r["p99_ms"] for r in mine),
                "failures_total": sum(r["failures"] for r in mine),
                "requests_total": sum(r["requested"] for r in mine),
                "ab_cpu_median": _median(r["client_cpu"] for r in mine),
                "listen_overflows": sum(r["listen_overflows"] or 0 for r in mine),
                "errors": _errors(mine),
            }
        nginx = medians.get("nginx", {}).get("rps_median")
        for row in medians.values():
            row["ratio_to_nginx"] = (row["rps_median"] / nginx
                                     if nginx and row["rps_median"] is not None else None)
            out.append(row)
    return out


def _errors(runs: list[dict]) -> str:
    """"k of n runs: <first message>", or "" when every run went through."""
    messages = [r["error"] for r in runs if r["error"]]
    return f"{len(messages)} of {len(runs)} runs: {messages[0]}" if messages else ""


def _aborted(row: dict) -> str:
    """What the req/s cell says when no run of @p row finished."""
    estimate = row.get("rps_before_abort_median")
    if estimate is None:
        return "–"
    return f"– (≈{estimate:,.0f} before ab gave up)"


def _find(summary, file, server, concurrency):
    for row in summary:
        if row["file"] == file and row["server"] == server and row["concurrency"] == concurrency:
            return row
    return None


# ------------------------------------------------------------------------------------------
# Targets (reported, not asserted)
# ------------------------------------------------------------------------------------------


@dataclass
class Target:
    text: str
    ok: bool | None  #: None: could not be measured
    figure: str


def _ratio_target(text, a, b, threshold, what="req/s") -> Target:
    if a is None or b is None or b == 0:
        return Target(text, None, "not measured")
    ratio = a / b
    return Target(text, ratio >= threshold,
                  f"{ratio:.2f}× ({a:,.0f} vs {b:,.0f} {what}; needs ≥ {threshold}×)")


def targets(results: Results, summary: list[dict], small: str, huge: str) -> list[Target]:
    def rps(server, file, c):
        row = _find(summary, file, server, c)
        return row["rps_median"] if row else None

    out = [
        _ratio_target("stage3 ≥ 0.9× nginx req/s, 1 KiB, c=12",
                      rps("stage3", small, 12), rps("nginx", small, 12), 0.9),
        _ratio_target("stage3 ≥ 20× python req/s, 1 KiB, c=12",
                      rps("stage3", small, 12), rps("python", small, 12), 20),
        _ratio_target("stage1 ≥ 0.8× nginx req/s, 1 KiB, c=12",
                      rps("stage1", small, 12), rps("nginx", small, 12), 0.8),
    ]
    large_c = results.settings["large_c"]
    for stage in ("stage1", "stage2", "stage3"):
        a, b = rps(stage, huge, large_c), rps("nginx", huge, large_c)
        target = _ratio_target(f"{stage} ≥ 1.0× nginx throughput, 100 MiB, c={large_c}",
                               a and a * 100, b and b * 100, 1.0, "MiB/s")
        out.append(target)
    max_total = results.settings["flood_stage3_max_total"]
    out += _flood_targets(_flood(results, "stage3", "idle"), "stage3 under the idle flood",
                          max_total, 0.8, None)
    out += _flood_targets(_flood(results, "stage3 --reclaim-idle", "idle"),
                          "stage3 --reclaim-idle under the idle flood", max_total, 0.8, 0.1)
    out += _flood_targets(_flood(results, "stage3 --reclaim-idle", "trickle"),
                          "stage3 --reclaim-idle under the trickle flood", max_total, 0.5, None)
    return out


def _flood(results: Results, stage: str, variant: str) -> FloodResult | None:
    return next((f for f in results.floods if f.stage == stage and f.variant == variant), None)


def _flood_targets(flood: FloodResult | None, what: str, max_total: int, min_ratio: float,
                   max_first_s: float | None) -> list[Target]:
    """Thread, memory and admitted-rate targets for one stage-3 flood run."""
    limit = max_total + 4
    if flood is None:
        return [Target(f"{what}: threads ≤ maxtotal + 4, VmHWM ≤ 32 MiB, admitted rate", None,
                       "not measured")]
    out = [Target(f"{what} ({flood.opened} connections): threads ≤ maxtotal + 4 = {limit}",
                  flood.max_threads <= limit, f"max {flood.max_threads} threads"),
           Target(f"{what}: VmHWM ≤ 32 MiB", flood.vmhwm_kib <= 32 * 1024,
                  f"{flood.vmhwm_kib / 1024:.1f} MiB")]
    ratio = flood.rate_ratio
    loaded = flood.loaded
    out.append(Target(
        f"{what}: admitted requests/s from a fresh IP ≥ {min_ratio}× unloaded",
        None if ratio is None else ratio >= min_ratio,
        "not measured" if ratio is None else
        f"{ratio:.2f}× ({loaded.admitted_per_s:,.0f} vs {flood.unloaded.admitted_per_s:,.0f} "
        f"admitted/s; under the flood {loaded.admitted} of {loaded.attempts} tries admitted, "
        f"{loaded.refused} refused, {loaded.failed} failed)"))
    if max_first_s is not None:
        first = flood.recovery_s
        out.append(Target(f"{what}: first admission ≤ {max_first_s} s after the flood is open",
                          None if first is None else first <= max_first_s,
                          "none" if first is None else f"{first:.3f} s"))
    return out


# ------------------------------------------------------------------------------------------
# CSV
# ------------------------------------------------------------------------------------------


def _write_csv(path: Path, rows: list[dict]) -> None:
    if not rows:
        path.write_text("")
        return
    with open(path, "w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0].keys()))
        writer.writeheader()
        for row in rows:
            writer.writerow({k: (f"{v:.6g}" if isinstance(v, float) else v)
                             for k, v in row.items()})


def flood_rows(floods: list[FloodResult]) -> tuple[list[dict], list[dict]]:
    """(threads series, one summary row per stage)."""
    series, summary = [], []
    for f in floods:
        for s in f.samples:
            series.append({"stage": f.stage, "variant": f.variant, **asdict(s)})
        summary.append({
            "stage": f.stage, "variant": f.variant, "command": f.command, "target": f.target, "opened": f.opened,
            "connect_errors": f.connect_errors, "held": f.held, "refused_503": f.refused_503,
            "refused_429": f.refused_429, "closed": f.closed, "threads_idle": f.threads_idle,
            "max_threads": f.max_threads, "vmhwm_kib": f.vmhwm_kib,
            "unloaded_admitted_per_s": f.unloaded.admitted_per_s,
            "unloaded_p50_ms": f.unloaded.p50_ms, "unloaded_attempts": f.unloaded.attempts,
            "flood_admitted_per_s": f.loaded.admitted_per_s, "flood_p50_ms": f.loaded.p50_ms,
            "flood_attempts": f.loaded.attempts, "flood_admitted": f.loaded.admitted,
            "flood_refused": f.loaded.refused, "flood_failed": f.loaded.failed,
            "rate_ratio": f.rate_ratio, "first_admission_after_s": f.recovery_s,
            "note": f.recovery_note,
        })
    return series, summary


def write_csvs(out: Path, results: Results, tc_summary, summary) -> list[str]:
    files = {
        "testcases_runs.csv": results.testcase_rows,
        "testcases.csv": tc_summary,
        "ab_runs.csv": results.ab_rows,
        "ab_summary.csv": summary,
    }
    series, flood_summary = flood_rows(results.floods)
    files["flood_threads.csv"] = series
    files["flood_summary.csv"] = flood_summary
    if results.micro and results.micro.results:
        files["micro.csv"] = [asdict(r) for r in results.micro.results]
    for name, rows in files.items():
        _write_csv(out / name, rows)
    return list(files)


# ------------------------------------------------------------------------------------------
# Plots
# ------------------------------------------------------------------------------------------


def write_plots(out: Path, results: Results, tc_summary, summary, small: str,
                huge: str) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []

    def save(fig, name):
        fig.tight_layout()
        fig.savefig(out / name, dpi=110)
        plt.close(fig)
        made.append(name)

    # req/s vs concurrency, 1 KiB file.
    rows = [r for r in summary if r["file"] == small and r["rps_median"] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for server in _ordered(r["server"] for r in rows):
            mine = sorted((r for r in rows if r["server"] == server),
                          key=lambda r: r["concurrency"])
            xs = [r["concurrency"] for r in mine]
            ys = [r["rps_median"] for r in mine]
            err = [[y - r["rps_min"] for y, r in zip(ys, mine)],
                   [r["rps_max"] - y for y, r in zip(ys, mine)]]
            ax.errorbar(xs, ys, yerr=err, marker="o", capsize=3, label=server)
        ax.set_xscale("log")
        ax.set_xticks(sorted({r["concurrency"] for r in rows}))
        ax.get_xaxis().set_major_formatter(matplotlib.ticker.ScalarFormatter())
        ax.set_xlabel("concurrent clients (ab -c)")
        ax.set_ylabel("requests per second (median; bars: min–max)")
        ax.set_title("1 KiB file, HTTP/1.0, one connection per request")
        ax.grid(True, alpha=0.3)
        ax.legend()
        save(fig, "req_per_s.png")

    # p50 / p99 latency at c=12.
    rows = [r for r in summary if r["file"] == small and r["concurrency"] == 12
            and r["p50_ms_median"] is not None]
    if rows:
        rows = sorted(rows, key=lambda r: SERVER_ORDER.index(r["server"]))
        fig, ax = plt.subplots(figsize=(7, 4.5))
        xs = range(len(rows))
        for dx, key, label in ((-0.2, "p50_ms_median", "p50"), (0.2, "p99_ms_median", "p99")):
            values = [r[key] or 0 for r in rows]
            ax.bar([x + dx for x in xs], values, 0.4, label=label)
            for x, value in zip(xs, values):
                ax.annotate(f"{value:.2f}", (x + dx, value), ha="center", va="bottom",
                            fontsize=7)
        ax.set_xticks(list(xs), [r["server"] for r in rows])
        ax.set_ylabel("latency per request, ms (median of runs)")
        ax.set_title("1 KiB file at 12 concurrent clients (ab total time)")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        save(fig, "latency_c12.png")

    # Threads (and RSS) vs open idle connections.
    if results.floods:
        fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.5))
        for f in results.floods:
            if f.variant != "idle":
                continue  # the trickle runs open the same way; one curve per server is enough
            samples = [s for s in f.samples if s.phase == "opening"]
            ax1.plot([s.open_connections for s in samples], [s.threads for s in samples],
                     marker=".", label=f.stage)
            ax2.plot([s.open_connections for s in samples],
                     [s.vmrss_kib / 1024 for s in samples], marker=".", label=f.stage)
        ax1.set_xlabel("idle connections open")
        ax1.set_ylabel("threads (/proc/PID/status)")
        ax1.set_yscale("log")
        ax1.set_title("threads vs open idle connections")
        ax2.set_xlabel("idle connections open")
        ax2.set_ylabel("VmRSS, MiB")
        ax2.set_title("resident memory vs open idle connections")
        for ax in (ax1, ax2):
            ax.grid(True, alpha=0.3)
            ax.legend()
        save(fig, "flood_threads.png")

    # Testcase times.
    if tc_summary:
        cases = sorted({r["testcase"] for r in tc_summary})
        fig, axes = plt.subplots(1, len(cases), figsize=(6 * len(cases), 4.5), squeeze=False)
        for ax, case in zip(axes[0], cases):
            rows = [r for r in tc_summary if r["testcase"] == case]
            xs = range(len(rows))
            seq = [(r["sequential_s"] or 0) * 1000 for r in rows]
            conc = [(r["concurrent_s"] or 0) * 1000 for r in rows]
            ax.bar([x - 0.2 for x in xs], seq, 0.4, label="sequential (1 client)")
            ax.bar([x + 0.2 for x in xs], conc, 0.4,
                   label=f"concurrent ({rows[0]['clients']} clients)")
            # One very slow bar (python's 1 s SYN retries) would flatten the others: cut the
            # axis at 3× the median bar and write the cut bar's value on it.
            bars = sorted(v for v in seq + conc if v > 0)
            top = 3 * bars[len(bars) // 2] if bars else 1
            cut = max(seq + conc) > top * 1.15
            if cut:
                ax.set_ylim(0, top)
            for x, r in zip(xs, rows):
                for dx, value in ((-0.2, seq[x]), (0.2, conc[x])):
                    if cut and value > top:
                        ax.annotate(f"{value:,.0f} ms ↑", (x + dx, top * 0.97), ha="center",
                                    va="top", fontsize=7, rotation=90)
                if r["speedup"]:
                    ax.annotate(f"×{r['speedup']:.1f}", (x + 0.2, min(conc[x], top)),
                                ha="center", va="bottom", fontsize=8)
            ax.set_xticks(list(xs), [r["server"] for r in rows])
            ax.set_ylabel("milliseconds (median)")
            ax.set_title(f"{case}: {rows[0]['files']} files, {rows[0]['bytes'] / MIB:.1f} MiB")
            ax.grid(True, axis="y", alpha=0.3)
            ax.legend(fontsize=8, loc="upper left")
        save(fig, "testcases.png")

    # Large-file throughput.
    rows = [r for r in summary if r["file"] == huge and r["mib_per_s_median"] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ax.bar([r["server"] for r in rows], [r["mib_per_s_median"] for r in rows])
        ax.set_ylabel("MiB/s (median)")
        ax.set_title(f"100 MiB file at {rows[0]['concurrency']} concurrent clients")
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "large_file.png")
    return made


# ------------------------------------------------------------------------------------------
# summary.md
# ------------------------------------------------------------------------------------------


def _f(value, fmt="{:,.0f}", none="–"):
    return none if value is None else fmt.format(value)


def _times(n: int, word: str) -> str:
    return f"{n} {word}" + ("" if n == 1 else "s")


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def summary_md(results: Results, tc_summary, summary, goals: list[Target], small: str,
               huge: str, files: list[str]) -> str:
    s = results.settings
    lines = ["# Benchmark summary", ""]
    lines += [f"Produced by `{results.command}` in {results.elapsed_s:.0f} s.", ""]
    lines += ["## Machine", ""]
    lines += [f"- **{k}**: {v}" for k, v in results.machine.items()]
    lines += ["", "The machine is shared and the figures are medians of interleaved "
              "repetitions (every server gets one run per round, in rotating order, so "
              "background load hits all of them alike); compare servers within one run, "
              "not across runs.", ""]

    lines += ["## Servers under test", ""]
    lines += [f"- **{name}**: `{cmd}`" for name, cmd in results.server_commands.items()]
    lines += ["", "All serve the same generated document root on 127.0.0.1 with access "
              "logging off — except Python's http.server, which logs every request to stderr "
              "(redirected to a file) and has no switch to stop it. stage3 runs with "
              f"`-maxclient {s['stage3_max_client']} -maxtotal {s['stage3_max_total']}` in "
              "the throughput tests: every ab connection comes from 127.0.0.1, so the per-client "
              "limit must exceed the highest concurrency (200) plus the few connections whose "
              "slot is not yet given back when ab opens the next one, or stage3 would answer "
              "429 to the benchmark itself.", "",
              "Python's `http.server` is a ThreadingHTTPServer (a thread per connection) "
              "whose socket listens with a backlog of 5 (`socketserver.TCPServer."
              "request_queue_size`) and copies files with `shutil.copyfileobj` (no sendfile). "
              "nginx runs with `worker_processes auto` (one worker per core), `sendfile on` and "
              "otherwise default settings; its configuration is written by the tool "
              "(benchlib/servers.py).", ""]
    for note in results.notes:
        lines.append(f"- {note}")
    if results.notes:
        lines.append("")

    lines += ["## Targets (reported, not asserted)", ""]
    for t in goals:
        mark = "?" if t.ok is None else ("✓" if t.ok else "✗")
        lines.append(f"- {mark} {t.text}: {t.figure}")
    lines.append("")

    if tc_summary:
        lines += ["## Testcases 1 and 2: sequential vs concurrent fetches", "",
                  f"Raw-socket HTTP/1.0 client (Python), byte counts checked. Sequential: one "
                  f"client fetches every file in turn. Concurrent: {s['clients']} threads share "
                  f"the list. Median of {_times(s['tc_reps'], 'run')}; speedup = sequential / "
                  "concurrent. Client CPU: user + system CPU time of the Python client process "
                  "/ wall "
                  f"time (machine: {results.machine.get('nproc', '?')} cores); client and "
                  "servers share those cores, so a high value means the client is a large part "
                  "of what is measured. Listen-queue drops: the kernel's ListenOverflows counter "
                  "(system-wide) summed over the concurrent runs; each drop delays a connection "
                  "by the 1 s SYN retransmission timeout.", ""]
        for case in sorted({r["testcase"] for r in tc_summary}):
            rows = [r for r in tc_summary if r["testcase"] == case]
            lines += [f"**{case}** — {rows[0]['files']} files, "
                      f"{rows[0]['bytes'] / MIB:.1f} MiB", ""]
            lines += _table(["server", "sequential s", "concurrent s", "speedup",
                             "client CPU seq / conc", "listen-queue drops", "errors"], [
                [r["server"], _f(r["sequential_s"], "{:.3f}"), _f(r["concurrent_s"], "{:.3f}"),
                 _f(r["speedup"], "{:.2f}×"),
                 f"{_f(r['client_cpu_sequential'], '{:.2f}')} / "
                 f"{_f(r['client_cpu_concurrent'], '{:.2f}')}",
                 _f(r["listen_overflows_concurrent"], "{}"),
                 str(r["errors"]) + (f" ({r['first_error'][:80]})" if r["errors"] else "")]
                for r in rows])
            lines.append("")

    rows = [r for r in summary if r["file"] == small]
    if rows:
        lines += ["## 1 KiB file: ab req/s and latency", "",
                  f"`ab -n N -c C` (HTTP/1.0, no keep-alive), N = {s['small_n']} "
                  f"({s['small_n_c1']} at c=1), each run bounded by `-t {s['ab_time_limit']:.0f}` "
                  f"and `-s {s['ab_socket_timeout']:.0f}`; {_times(s['reps'], 'repetition')}. "
                  "Latency is ab's "
                  "total time per request (connect to last byte), p50/p99 are medians over the "
                  "repetitions. Failures = failed + non-2xx + requests never completed, summed "
                  "over all runs. ab CPU = ab's CPU time / wall time (1.00 = ab used a whole core, "
                  "i.e. the client, not the server, may be the limit). Listen drops: the kernel's "
                  "system-wide ListenOverflows counter summed over the runs. A req/s of – "
                  "means ab "
                  "gave up in every run (no connection made progress for "
                  f"{s['ab_socket_timeout']:.0f} s) and printed no figures; the ≈ value is then "
                  f"completed requests / (wall time − {s['ab_socket_timeout']:.0f} s): the "
                  "average rate up to ab's last progress, shorter stalls included; it is not "
                  "used in any ratio.", ""]
        lines += _table(["server", "c", "req/s (median)", "min–max", "p50 ms", "p99 ms",
                         "failures", "× nginx", "ab CPU", "listen drops"], [
            [r["server"], str(r["concurrency"]),
             _f(r["rps_median"], none=_aborted(r)),
             f"{_f(r['rps_min'])}–{_f(r['rps_max'])}" if r["rps_min"] is not None else "–",
             _f(r["p50_ms_median"], "{:.3f}"),
             _f(r["p99_ms_median"], "{:.3f}"),
             f"{r['failures_total']}/{r['requests_total']}", _f(r["ratio_to_nginx"], "{:.2f}"),
             _f(r["ab_cpu_median"], "{:.2f}"), str(r["listen_overflows"])]
            for r in sorted(rows, key=lambda r: (r["concurrency"],
                                                 SERVER_ORDER.index(r["server"])))])
        errors = [f"{r['server']} c={r['concurrency']}: {r['errors']}" for r in rows if r["errors"]]
        if errors:
            lines += ["", "ab reported: " + "; ".join(errors)]
        lines.append("")

    rows = [r for r in summary if r["file"] == huge]
    if rows:
        lines += ["## 100 MiB file: throughput", "",
                  f"`ab -n {s['large_n']} -c {s['large_c']}`, "
                  f"{_times(s['large_reps'], 'repetition')}. "
                  "MiB/s = req/s × 100 MiB.", ""]
        lines += _table(["server", "MiB/s (median)", "req/s", "p50 ms", "failures", "× nginx",
                         "ab CPU"], [
            [r["server"], _f(r["mib_per_s_median"]), _f(r["rps_median"], "{:.2f}"),
             _f(r["p50_ms_median"], "{:.0f}"), f"{r['failures_total']}/{r['requests_total']}",
             _f(r["ratio_to_nginx"], "{:.2f}"), _f(r["ab_cpu_median"], "{:.2f}")] for r in rows])
        cpu = [r["ab_cpu_median"] for r in rows if r["ab_cpu_median"] is not None]
        if cpu and min(cpu) > 0.85:
            lines += ["", f"ab used {min(cpu):.2f}–{max(cpu):.2f} of a core in these runs, "
                      "almost all of it in the kernel receiving the bytes: the client is close "
                      "to saturation, so these figures are lower bounds for the servers and "
                      "small differences between them say little."]
        lines.append("")

    if results.floods:
        f3 = _flood(results, "stage3", "idle")
        lines += ["## Idle-connection flood: threads, memory, admitted requests", "",
                  f"Each stage is started afresh (`-t {s['flood_server_timeout']}`; stage3 with "
                  f"`-maxclient {s['flood_stage3_max_client']} -maxtotal "
                  f"{s['flood_stage3_max_total']}`). {s['flood_count']} connections are opened, "
                  "one per loopback source address 127.1.x.y (so stage3's per-client limit "
                  "never applies), and never send a byte. Threads and VmRSS are read from "
                  f"/proc/PID/status every {s['flood_sample_every']} connections once the thread "
                  "count has settled; VmHWM is the process's peak resident set over its life.",
                  "",
                  f"*Admitted requests/s* is measured from a fresh address (127.2.0.1) by "
                  f"{s['flood_clients']} client threads in a closed loop for "
                  f"{s['flood_window']:.0f} s, each fetching the 1 KiB file over a new "
                  "connection as soon as its previous request ended (after a 429/503 it waits "
                  f"10 ms; a request without a reply in {s['flood_request_timeout']:.0f} s counts "
                  "as failed): the number of 200 replies divided by the loop's elapsed time. It is "
                  "measured once before the flood (unloaded) and once while every flood "
                  "connection is still open; the ratio of the two is the figure. *First "
                  "admission* is how long after the last flood connection opened the fresh "
                  "address got its first 200. In the *trickle* rows every flood connection "
                  "also sends 3 bytes of a request head every 0.3 s and never finishes it.", ""]
        lines += _table(["stage", "flood", "opened", "held / 503 / 429 / closed", "threads idle → max",
                         "VmHWM MiB", "unloaded adm/s", "flood: adm/s (adm/tries)",
                         "ratio", "first admission"], [
            [f.stage, f.variant, str(f.opened), f"{f.held} / {f.refused_503} / {f.refused_429} / {f.closed}",
             f"{f.threads_idle} → {f.max_threads}", f"{f.vmhwm_kib / 1024:.1f}",
             _f(f.unloaded.admitted_per_s),
             f"{_f(f.loaded.admitted_per_s)} ({f.loaded.admitted}/{f.loaded.attempts})",
             _f(f.rate_ratio, "{:.2f}"),
             _f(f.recovery_s, "{:.3f} s" if (f.recovery_s or 0) < 1 else "{:.1f} s",
                none=f.recovery_note or "none")]
            for f in results.floods])
        if f3 is not None:
            lines += ["", f"stage3: {f3.held} flood connections were admitted and held "
                      f"(-maxtotal is {s['flood_stage3_max_total']}), {f3.refused_503} were "
                      f"refused with 503 at once. While they were held, the fresh address got "
                      f"{f3.loaded.admitted} × 200 and {f3.loaded.refused} × 429/503 in "
                      f"{f3.loaded.seconds:.1f} s; its first 200 came "
                      + (f"{f3.recovery_s:.1f} s after the flood was open" if f3.recovery_s
                         is not None else "never (" + f3.recovery_note + ")")
                      + f" — the read deadline (-t {s['flood_server_timeout']}) is what closes "
                      "an idle admitted connection and frees its slot."]
        lines.append("")

    micro = results.micro
    if micro is not None:
        lines += ["## Micro-benchmarks (Google Benchmark)", ""]
        if micro.error:
            lines += [f"Not run: {micro.error}", ""]
        else:
            lines += [f"`{micro.binary}`, time per call (CPU time; real time in the CSV)."]
            if micro.library_build_type == "debug":
                lines += ["Google Benchmark reports that its library was built as DEBUG "
                          "(Debian's package is); that affects its own overhead, not the code "
                          "under test, which is built Release."]
            lines.append("")
            lines += _table(["benchmark", "ns per call", "iterations"], [
                [r.name, f"{r.cpu_ns:,.0f}", f"{r.iterations:,}"] for r in micro.results])
            lines.append("")

    lines += ["## Files", ""]
    lines += [f"- `{name}`" for name in files]
    lines.append("")
    return "\n".join(lines)


def write_all(out: Path, results: Results, small: str, huge: str) -> list[Target]:
    """Writes every CSV, plot, machine.txt and summary.md into @p out; returns the targets."""
    out.mkdir(parents=True, exist_ok=True)
    tc_summary = testcase_summary(results.testcase_rows)
    summary = ab_summary(results.ab_rows)
    goals = targets(results, summary, small, huge)
    files = ["summary.md", "machine.txt"]
    files += write_csvs(out, results, tc_summary, summary)
    files += write_plots(out, results, tc_summary, summary, small, huge)
    for csv_file in out.glob("*.csv"):
        csv_file.write_text(portable(csv_file.read_text()))
    (out / "machine.txt").write_text(portable(
        "".join(f"{k}: {v}\n" for k, v in results.machine.items()) +
        f"command: {results.command}\n"))
    (out / "summary.md").write_text(portable(
        summary_md(results, tc_summary, summary, goals, small, huge, files)))
    return goals


def portable(text: str) -> str:
    """Writes paths relative to the repository, so the committed report names no machine's
    directories; the generated document root becomes <tmp>/root."""
    repo = str(Path(__file__).resolve().parents[2]) + "/"
    text = text.replace(repo, "")
    return re.sub(r"/tmp/lab-bench-[^/\s`]+/", "<tmp>/", text)
