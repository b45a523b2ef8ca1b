"""Turns the raw measurements into CSV files, PNG plots and summary.md.

Every figure in summary.md is a median over the rounds, shown with its min–max; a ratio
between two servers is taken within each round (both runs of that round) and then the median
of those per-round ratios is shown, never a ratio of two medians. The CSV files beside it hold
every single run, so any figure can be recomputed.
"""

from __future__ import annotations

import csv
import os
import re
import statistics
from dataclasses import asdict, dataclass, field
from pathlib import Path

from . import spans, statuscost
from .stats import spread
from .flood import FloodResult
from .micro import MicroRun

MIB = 1024 * 1024

#: Servers in the order tables and plots show them.
SERVER_ORDER = ["stage1", "stage2", "stage3", "stage4", "nginx", "apache", "python"]
#: The line that marks a --quick run, in summary.md and on the console.
QUICK_LABEL = "quick: figures are indicative only"
#: How the bench keeps one server's listen-queue drops out of the next server's figures.
_RESTART_NOTE = ("A server whose run moved that counter is restarted before the next run: the "
                 "handshakes its full queue left behind would otherwise be retried by the "
                 "kernel for up to a minute, each retry counted again, in the runs of the "
                 "servers that follow.")


@dataclass
class Results:
    """Everything one run of bench compare measured, plus how it was run."""

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
    calibration_rows: list[dict] = field(default_factory=list)
    ctx_method: str = ""  #: how context switches were counted (ctxsw.Counter.describe)
    stages: list[str] = field(default_factory=list)  #: the stages that were built and run
    #: Testcase key ("testcase1") → stage → its requests' spans, for the timeline plots.
    timelines: dict[str, dict[str, list[spans.Span]]] = field(default_factory=dict)
    #: The status section's ab runs: stages 3 and 4 with and without --status.
    status_rows: list[dict] = field(default_factory=list)


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


def rate_key(file_bytes: int) -> str:
    """The per-run figure ratios are taken on: MiB/s for a large file (ab's byte count
    includes replies cut off at the end of a run), req/s for a small one (whose heads, which
    differ between servers, are a large part of its bytes)."""
    return "mib_per_s" if file_bytes >= MIB else "rps"


def round_ratios(rows: list[dict], file: str, concurrency: int, server: str,
                 reference: str, key: str | None = None) -> list[float]:
    """@p server's figure ÷ @p reference's, one ratio per round in which both measured one;
    the figure is @p key, or the rate (rate_key) by default."""
    def by_round(name):
        return {r["rep"]: r for r in rows if r["file"] == file
                and r["concurrency"] == concurrency and r["server"] == name}

    mine, theirs = by_round(server), by_round(reference)
    ratios = []
    for rep, row in sorted(mine.items()):
        other = theirs.get(rep)
        if other is None:
            continue
        figure = key or rate_key(row["file_bytes"])
        if key is not None and not (row["ok"] and other["ok"]):
            continue  # a cost per request of a run that failed says nothing
        if row.get(figure) is not None and other.get(figure):
            ratios.append(row[figure] / other[figure])
    return ratios


def run_lengths(rows: list[dict], file: str | None = None) -> dict | None:
    """How long the ab runs that finished lasted (ab's "Time taken for tests")."""
    mine = [r for r in rows if file is None or r["file"] == file]
    seconds = [r["seconds"] for r in mine if r["ok"] and r["seconds"] is not None]
    if not seconds:
        return None
    return {"runs": len(seconds), "min": min(seconds), "max": max(seconds),
            "median": statistics.median(seconds), "short": sum(1 for r in mine if r["short"]),
            "meant": mine[0]["time_limit"]}


def ab_summary(rows: list[dict]) -> list[dict]:
    """Per (file, server, concurrency): median and min–max of req/s, MiB/s, latency, server
    CPU time and context switches per request over the rounds, and the per-round ratios to
    nginx (of the rate, of CPU per request and of switches per request)."""
    out = []
    keys = sorted({(r["file"], r["concurrency"]) for r in rows})
    for file, concurrency in keys:
        group = [r for r in rows if r["file"] == file and r["concurrency"] == concurrency]
        for server in _ordered(r["server"] for r in group):
            mine = [r for r in group if r["server"] == server]
            rps, rps_min, rps_max = spread(r["rps"] for r in mine)
            mib, mib_min, mib_max = spread(r.get("mib_per_s") for r in mine if r["ok"])
            ctx, ctx_min, ctx_max = spread(r.get("ctx_per_request") for r in mine if r["ok"])
            cpu, cpu_min, cpu_max = spread(r.get("cpu_us_per_request") for r in mine if r["ok"])
            cpu_ratio, cpu_ratio_min, cpu_ratio_max = spread(
                round_ratios(rows, file, concurrency, server, "nginx", "cpu_us_per_request"))
            ctx_ratio, ctx_ratio_min, ctx_ratio_max = spread(
                round_ratios(rows, file, concurrency, server, "nginx", "ctx_per_request"))
            secs, secs_min, secs_max = spread(r["seconds"] for r in mine if r["ok"])
            ratio, ratio_min, ratio_max = spread(
                round_ratios(rows, file, concurrency, server, "nginx"))
            out.append({
                "file": file, "file_bytes": mine[0]["file_bytes"], "server": server,
                "concurrency": concurrency, "runs": len(mine),
                "runs_ok": sum(1 for r in mine if r["ok"]),
                "rps_median": rps, "rps_min": rps_min, "rps_max": rps_max,
                "rps_before_abort_median": _median(r.get("rps_before_abort") for r in mine),
                "mib_per_s_median": mib, "mib_per_s_min": mib_min, "mib_per_s_max": mib_max,
                "p50_ms_median": _median(r["p50_ms"] for r in mine),
                "p99_ms_median": _median(r["p99_ms"] for r in mine),
                "ctx_per_request_median": ctx, "ctx_per_request_min": ctx_min,
                "ctx_per_request_max": ctx_max,
                "ctx_live_threads_per_request_median": _median(
                    r.get("ctx_live_threads_per_request") for r in mine if r["ok"]),
                "ctx_processes_exited": sum(r.get("ctx_processes_exited") or 0 for r in mine),
                "ctx_ratio_to_nginx": ctx_ratio, "ctx_ratio_to_nginx_min": ctx_ratio_min,
                "ctx_ratio_to_nginx_max": ctx_ratio_max,
                "cpu_us_per_request_median": cpu, "cpu_us_per_request_min": cpu_min,
                "cpu_us_per_request_max": cpu_max,
                "cpu_ratio_to_nginx": cpu_ratio, "cpu_ratio_to_nginx_min": cpu_ratio_min,
                "cpu_ratio_to_nginx_max": cpu_ratio_max,
                "failures_total": sum(r["failures"] for r in mine),
                "requests_total": sum(r["complete"] for r in mine),
                "seconds_median": secs, "seconds_min": secs_min, "seconds_max": secs_max,
                "short_runs": sum(1 for r in mine if r["short"]),
                "ab_cpu_median": _median(r["client_cpu"] for r in mine),
                "listen_overflows": sum(r["listen_overflows"] or 0 for r in mine),
                "ratio_to_nginx": ratio, "ratio_to_nginx_min": ratio_min,
                "ratio_to_nginx_max": ratio_max,
                "ratio_rounds": len(round_ratios(rows, file, concurrency, server, "nginx")),
                "errors": _errors(mine),
            })
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


def _ratio_target(text, results: Results, file, concurrency, server, reference, threshold,
                  what="req/s") -> Target:
    """@p server ≥ @p threshold × @p reference, judged on the median of per-round ratios."""
    ratios = round_ratios(results.ab_rows, file, concurrency, server, reference)
    if not ratios:
        return Target(text, None, "not measured")
    ratio, low, high = spread(ratios)
    key = rate_key(next(r["file_bytes"] for r in results.ab_rows if r["file"] == file))
    a = _median(r[key] for r in results.ab_rows if r["file"] == file
                and r["concurrency"] == concurrency and r["server"] == server)
    b = _median(r[key] for r in results.ab_rows if r["file"] == file
                and r["concurrency"] == concurrency and r["server"] == reference)
    return Target(text, ratio >= threshold,
                  f"{ratio:.2f}× (rounds {low:.2f}–{high:.2f}, n={len(ratios)}; medians "
                  f"{_f(a)} vs {_f(b)} {what}; needs ≥ {threshold}×)")


def _cost_target(text, results: Results, file, concurrency, server, reference, limit,
                 key, unit) -> Target:
    """@p server's cost per request (@p key) ≤ @p limit × @p reference's, judged on the
    median of per-round ratios."""
    ratios = round_ratios(results.ab_rows, file, concurrency, server, reference, key)
    if not ratios:
        return Target(text, None, "not measured")
    ratio, low, high = spread(ratios)

    def median_of(name):
        return _median(r.get(key) for r in results.ab_rows if r["file"] == file and r["ok"]
                       and r["concurrency"] == concurrency and r["server"] == name)

    a, b = median_of(server), median_of(reference)
    fmt = "{:.1f}" if key == "cpu_us_per_request" else "{:.2f}"
    return Target(text, ratio <= limit,
                  f"{ratio:.2f}× (rounds {low:.2f}–{high:.2f}, n={len(ratios)}; medians "
                  f"{_f(a, fmt)} vs {_f(b, fmt)} {unit}; needs ≤ {limit}×)")


def targets(results: Results, summary: list[dict], small: str, huge: str) -> list[Target]:
    s = results.settings
    large_c = s["large_c"]
    out = [
        _ratio_target("stage3 ≥ 0.9× nginx req/s, 1 KiB, c=12", results, small, 12,
                      "stage3", "nginx", 0.9),
        _ratio_target("stage3 ≥ 20× python req/s, 1 KiB, c=12", results, small, 12,
                      "stage3", "python", 20),
        _ratio_target("stage1 ≥ 0.8× nginx req/s, 1 KiB, c=12", results, small, 12,
                      "stage1", "nginx", 0.8),
    ]
    for stage in ("stage1", "stage2", "stage3"):
        out.append(_ratio_target(f"{stage} ≥ 1.0× nginx throughput, 100 MiB, c={large_c}",
                                 results, huge, large_c, stage, "nginx", 1.0, "MiB/s"))
    max_total = s["flood_stage3_max_total"]
    out += _flood_targets(_flood(results, "stage3", "idle"), "stage3 under the idle flood",
                          max_total, 0.8, None)
    out += _flood_targets(_flood(results, "stage3 --reclaim-idle", "idle"),
                          "stage3 --reclaim-idle under the idle flood", max_total, 0.8, 0.1)
    out += _flood_targets(_flood(results, "stage3 --reclaim-idle", "trickle"),
                          "stage3 --reclaim-idle under the trickle flood", max_total, 0.5, None)
    if "stage4" not in results.stages:
        out.append(Target("stage4 targets (1 KiB ≥ 1.0× nginx req/s and ≤ 1.0× its CPU and "
                          "context switches per request at c=12 and c=200, 100 MiB ≥ 1.0× "
                          "nginx, 10,000 idle connections)", None,
                          "not measured: stage4 is not built"))
        return out
    out += [
        _ratio_target("stage4 ≥ 1.0× nginx req/s, 1 KiB, c=12", results, small, 12,
                      "stage4", "nginx", 1.0),
        _ratio_target("stage4 ≥ 1.0× nginx req/s, 1 KiB, c=200", results, small, 200,
                      "stage4", "nginx", 1.0),
    ]
    for c in (12, 200):
        out += [
            _cost_target(f"stage4 ≤ 1.0× nginx server CPU per request, 1 KiB, c={c}", results,
                         small, c, "stage4", "nginx", 1.0, "cpu_us_per_request", "µs"),
            _cost_target(f"stage4 ≤ 1.0× nginx context switches per request, 1 KiB, c={c}",
                         results, small, c, "stage4", "nginx", 1.0, "ctx_per_request",
                         "switches"),
            _cost_target(f"stage4 ≤ 1.3× stage1 server CPU per request, 1 KiB, c={c} (aim)",
                         results, small, c, "stage4", "stage1", 1.3, "cpu_us_per_request",
                         "µs"),
        ]
    out += [
        _ratio_target(f"stage4 ≥ 1.0× nginx throughput, 100 MiB, c={large_c}", results, huge,
                      large_c, "stage4", "nginx", 1.0, "MiB/s"),
    ]
    out += _hold_targets(results, _flood(results, f"stage4 -maxtotal {s['flood_hold_max_total']}",
                                         "idle"))
    return out


def _flood(results: Results, stage: str, variant: str) -> FloodResult | None:
    return next((f for f in results.floods if f.stage == stage and f.variant == variant), None)


def _hold_targets(results: Results, flood: FloodResult | None) -> list[Target]:
    """Stage 4 holding every connection of its flood: few threads, little memory, and the
    fresh address served as fast as without the flood."""
    s = results.settings
    nproc = int(results.machine.get("nproc") or os.cpu_count() or 1)
    what = f"stage4 holding {s['flood_count_stage4']:,} idle connections"
    if flood is None:
        return [Target(f"{what}: threads ≤ nproc + 3, VmHWM ≤ 64 MiB, admitted rate ≥ 0.9× "
                       "unloaded", None, "not measured")]
    ratio = flood.rate_ratio
    loaded = flood.loaded
    return [
        Target(f"{what} ({flood.opened:,} opened, {flood.held:,} held): threads ≤ nproc + 3 = "
               f"{nproc + 3}", flood.max_threads <= nproc + 3,
               f"max {flood.max_threads} threads"),
        Target(f"{what}: VmHWM ≤ 64 MiB", flood.vmhwm_kib <= 64 * 1024,
               f"{flood.vmhwm_kib / 1024:.1f} MiB"),
        Target(f"{what}: admitted requests/s from a fresh IP ≥ 0.9× unloaded",
               None if ratio is None else ratio >= 0.9,
               "not measured" if ratio is None else
               f"{ratio:.2f}× ({loaded.admitted_per_s:,.0f} vs "
               f"{flood.unloaded.admitted_per_s:,.0f} admitted/s; {loaded.refused} refused, "
               f"{loaded.failed} failed)"),
    ]


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
        "ab_calibration.csv": results.calibration_rows,
    }
    if results.status_rows:
        files["status_runs.csv"] = results.status_rows
        files["status.csv"] = statuscost.summary(results.status_rows)
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
        fig, ax = plt.subplots(figsize=(8, 4.5))
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
        if max(f.opened for f in results.floods) > 2000:  # stage4's 10,000 beside 1,000
            ax1.set_xscale("symlog", linthresh=100)
            ax2.set_xscale("symlog", linthresh=100)
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
        ys = [r["mib_per_s_median"] for r in rows]
        err = [[y - r["mib_per_s_min"] for y, r in zip(ys, rows)],
               [r["mib_per_s_max"] - y for y, r in zip(ys, rows)]]
        ax.bar([r["server"] for r in rows], ys, yerr=err, capsize=3)
        ax.set_ylabel("MiB/s (median; bars: min–max)")
        ax.set_title(f"100 MiB file at {rows[0]['concurrency']} concurrent clients")
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "large_file.png")

    # Context switches per request, 1 KiB file at c=12.
    rows = [r for r in summary if r["file"] == small and r["concurrency"] == 12
            and r["ctx_per_request_median"] is not None]
    if rows:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        ys = [r["ctx_per_request_median"] for r in rows]
        err = [[y - r["ctx_per_request_min"] for y, r in zip(ys, rows)],
               [r["ctx_per_request_max"] - y for y, r in zip(ys, rows)]]
        ax.bar([r["server"] for r in rows], ys, yerr=err, capsize=3)
        for x, y in enumerate(ys):
            ax.annotate(f"{y:.2f}", (x, y), ha="center", va="bottom", fontsize=8)
        ax.set_ylabel("context switches per request (median; bars: min–max)")
        ax.set_title("1 KiB file at 12 concurrent clients: server context switches")
        ax.grid(True, axis="y", alpha=0.3)
        save(fig, "ctx_switches_c12.png")
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


def _range(low, high, fmt="{:,.0f}") -> str:
    return "–" if low is None else f"{fmt.format(low)}–{fmt.format(high)}"


def _run_length_sentence(results: Results, file: str) -> str:
    lengths = run_lengths(results.ab_rows, file)
    if lengths is None:
        return ""
    text = (f"Measured run lengths: {lengths['min']:.2f}–{lengths['max']:.2f} s (median "
            f"{lengths['median']:.2f} s over {lengths['runs']} runs that finished).")
    if lengths["short"]:
        text += (f" {lengths['short']} ended early at their -n cap (the server was much faster "
                 "than in its calibration run); the CSV marks them `short`.")
    return text


def summary_md(results: Results, tc_summary, summary, goals: list[Target], small: str,
               huge: str, files: list[str]) -> str:
    s = results.settings
    lines = ["# Benchmark summary", ""]
    if s.get("quick"):
        lines += [f"**{QUICK_LABEL}**: `--quick` runs {_times(s['reps'], 'round')} of ab "
                  f"({_times(s['large_reps'], 'round')} on the 100 MiB file) instead of 5, "
                  f"{_times(s['tc_reps'], 'repetition')} of the testcases and "
                  f"{s['flood_window']:.0f} s flood windows. The runs are as long as in a full "
                  "run, but the spread of two rounds says little; use a full run "
                  "(`./lab bench`) for any figure you quote.", ""]
    lines += [f"Produced by `{results.command}` in {results.elapsed_s:.0f} s.", ""]
    lines += ["## Machine", ""]
    # "&lt;": ab's version ends in "<$Revision$>", which Doxygen would read as an HTML tag.
    lines += [f"- **{k}**: {str(v).replace('<', '&lt;')}" for k, v in results.machine.items()]
    lines += ["", "The machine is shared, so every server gets one run per round, in rotating "
              "order, and background load hits all of them alike. Figures are medians over "
              "the rounds with their min–max; every ratio between two servers is computed "
              "within a round (both runs of that round) and the median of those per-round "
              "ratios is shown, with their min–max. Compare servers within one run, not "
              "across runs.", ""]

    lines += ["## Servers under test", ""]
    lines += [f"- **{name}**: `{cmd}`" for name, cmd in results.server_commands.items()]
    lines += ["", "All serve the same generated document root on 127.0.0.1 with access "
              "logging off — except Python's http.server, which logs every request to stderr "
              "(redirected to a file) and has no switch to stop it. stage3 (and stage4, which "
              "takes the same options) runs with "
              f"`-maxclient {s['stage3_max_client']} -maxtotal {s['stage3_max_total']}` in "
              "the throughput tests: every ab connection comes from 127.0.0.1, so the per-client "
              "limit must exceed the highest concurrency (200) plus the few connections whose "
              "slot is not yet given back when ab opens the next one, or stage3 would answer "
              "429 to the benchmark itself.", "",
              "Python's `http.server` is a ThreadingHTTPServer (a thread per connection) "
              "whose socket listens with a backlog of 5 (`socketserver.TCPServer."
              "request_queue_size`) and copies files with `shutil.copyfileobj` (no sendfile). "
              "nginx runs with `worker_processes auto` (one worker per core), `sendfile on` and "
              "otherwise default settings. Apache is Debian's `apache2` with the event MPM, run "
              "with `-DFOREGROUND` (its parent stays attached, its children and threads work as "
              "in production): `EnableSendfile On`, no access log, `AllowOverride None`, and "
              "Debian's MPM settings (2 child processes to start, 25 threads each) except "
              "`MaxRequestWorkers 400` (room for c=200 without queueing) and "
              "`MaxSpareThreads 400` (no child is stopped between runs). Both configurations "
              "are written by the tool (bench/lib/servers.py).", ""]
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
                  "by the 1 s SYN retransmission timeout. " + _RESTART_NOTE, ""]
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
        lines += ["## 1 KiB file: ab req/s, latency and context switches", "",
                  f"Every run lasts {s['run_seconds']} s: `ab -t {s['run_seconds']} -n CAP -c C` "
                  "(HTTP/1.0, no keep-alive), where CAP is three times the requests the "
                  "fastest server's rate in a 1 s calibration run (one per server at the same "
                  "concurrency, before the rounds; `ab_calibration.csv`) would need, so that "
                  "the time limit, not the cap, ends the run. "
                  + _run_length_sentence(results, small) + " "
                  f"{_times(s['reps'], 'round')}; each run bounded by `-s "
                  f"{s['ab_socket_timeout']:.0f}` too. "
                  "req/s: median and min–max over the rounds. × nginx: the median of the "
                  "per-round ratios (this server's run ÷ nginx's run of the same round) and "
                  "their min–max. Latency is ab's total time per request (connect to last "
                  "byte), p50/p99 are medians over the rounds. CPU µs/req: the server's CPU "
                  "time (user + system, `/proc/PID/stat` utime + stime summed over all its "
                  "processes, dead threads included) during the run ÷ the requests ab "
                  "completed, median over the rounds; on a machine where the client takes a "
                  "core, req/s only says the server keeps up, this says what each request "
                  "costs it. cs/req: the server's context switches per completed request, "
                  "median over the rounds (see below). The × nginx columns beside them are "
                  "medians of per-round ratios, like the req/s one. "
                  "Failures = failed + non-2xx (+ the connections still open when ab gave up), "
                  "summed over all runs, of the requests completed. ab CPU = ab's CPU time / wall "
                  "time (1.00 = ab used a whole core, i.e. the client, not the server, may be the "
                  "limit). Listen drops: the kernel's system-wide ListenOverflows counter summed "
                  "over the runs. " + _RESTART_NOTE + " A req/s of – means ab gave up in every "
                  "run (no connection made "
                  f"progress for {s['ab_socket_timeout']:.0f} s) and printed no figures; the ≈ "
                  f"value is then completed requests / (wall time − "
                  f"{s['ab_socket_timeout']:.0f} s): the average rate up to ab's last progress, "
                  "shorter stalls included; it is not used in any ratio.", ""]
        lines += _table(["server", "c", "req/s (median)", "min–max", "× nginx",
                         "× nginx min–max", "p50 ms", "p99 ms", "CPU µs/req", "CPU × nginx",
                         "cs/req", "cs × nginx", "failures", "ab CPU", "listen drops"], [
            [r["server"], str(r["concurrency"]),
             _f(r["rps_median"], none=_aborted(r)), _range(r["rps_min"], r["rps_max"]),
             _f(r["ratio_to_nginx"], "{:.2f}"),
             _range(r["ratio_to_nginx_min"], r["ratio_to_nginx_max"], "{:.2f}"),
             _f(r["p50_ms_median"], "{:.3f}"), _f(r["p99_ms_median"], "{:.3f}"),
             _f(r["cpu_us_per_request_median"], "{:.1f}"), _f(r["cpu_ratio_to_nginx"], "{:.2f}"),
             _f(r["ctx_per_request_median"], "{:.2f}"), _f(r["ctx_ratio_to_nginx"], "{:.2f}"),
             f"{r['failures_total']}/{r['requests_total']}",
             _f(r["ab_cpu_median"], "{:.2f}"), str(r["listen_overflows"])]
            for r in sorted(rows, key=lambda r: r["concurrency"])])
        errors = [f"{r['server']} c={r['concurrency']}: {r['errors']}" for r in rows if r["errors"]]
        if errors:
            lines += ["", "ab reported: " + "; ".join(errors)]
        lines.append("")
        lines += ["### Context switches", "", results.ctx_method or "Not recorded.", ""]
        c12 = [r for r in rows if r["concurrency"] == 12]
        if c12:
            lines += ["At c=12 (median over the rounds, min–max; *live threads only*: the "
                      "same count over the threads alive at the end of each run):", ""]
            lines += _table(["server", "switches per request", "min–max",
                             "live threads only", "processes that exited"], [
                [r["server"], _f(r["ctx_per_request_median"], "{:.2f}"),
                 _range(r["ctx_per_request_min"], r["ctx_per_request_max"], "{:.2f}"),
                 _f(r["ctx_live_threads_per_request_median"], "{:.2f}"),
                 str(r["ctx_processes_exited"])] for r in c12])
            lines.append("")

    rows = [r for r in summary if r["file"] == huge]
    if rows:
        lines += ["## 100 MiB file: throughput", "",
                  f"`ab -t {s['run_seconds']} -n CAP -c {s['large_c']}`, CAP from a 1 s "
                  f"calibration run as above; {_times(s['large_reps'], 'round')}. "
                  + _run_length_sentence(results, huge) + " "
                  "MiB/s = ab's Total transferred / time taken, so a reply cut off at the end "
                  "of a run counts with the bytes it got; median and min–max over the rounds. "
                  "× nginx: median (min–max) of the per-round MiB/s ratios.", ""]
        lines += _table(["server", "MiB/s (median)", "min–max", "× nginx", "× nginx min–max",
                         "p50 ms", "cs/req", "failures", "ab CPU"], [
            [r["server"], _f(r["mib_per_s_median"]),
             _range(r["mib_per_s_min"], r["mib_per_s_max"]),
             _f(r["ratio_to_nginx"], "{:.2f}"),
             _range(r["ratio_to_nginx_min"], r["ratio_to_nginx_max"], "{:.2f}"),
             _f(r["p50_ms_median"], "{:.0f}"), _f(r["ctx_per_request_median"], "{:.1f}"),
             f"{r['failures_total']}/{r['requests_total']}",
             _f(r["ab_cpu_median"], "{:.2f}")] for r in rows])
        cpu = [r["ab_cpu_median"] for r in rows if r["ab_cpu_median"] is not None]
        if cpu and min(cpu) > 0.85:
            lines += ["", f"ab used {min(cpu):.2f}–{max(cpu):.2f} of a core in these runs, "
                      "almost all of it in the kernel receiving the bytes: the client is close "
                      "to saturation, so these figures are lower bounds for the servers and "
                      "small differences between them say little."]
        lines.append("")

    if results.floods:
        f3 = _flood(results, "stage3", "idle")
        stage4_sentence = ""
        if any(f.stage.startswith("stage4") for f in results.floods):
            stage4_sentence = (
                f" stage4 gets {s['flood_count_stage4']:,} flood connections from as many "
                "addresses, with stage3's flood options and once more with "
                f"`-maxtotal {s['flood_hold_max_total']}`, room to hold every one of "
                "them: that row is the one its thread, memory and admitted-rate targets are "
                "about. Its threads and memory are sampled every "
                f"{max(s['flood_sample_every'], s['flood_count_stage4'] // 40)} connections.")
        lines += ["## Idle-connection flood: threads, memory, admitted requests", "",
                  f"Each stage is started afresh (`-t {s['flood_server_timeout']}`; stage3 and "
                  f"stage4 with `-maxclient {s['flood_stage3_max_client']} -maxtotal "
                  f"{s['flood_stage3_max_total']}`). {s['flood_count']:,} connections are "
                  "opened, one per loopback source address 127.1.x.y (so the per-client limit "
                  "never applies), and never send a byte. Threads and VmRSS are read from "
                  f"/proc/PID/status every {s['flood_sample_every']} connections once the thread "
                  "count has settled; VmHWM is the process's peak resident set over its life."
                  + stage4_sentence,
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
        lines += _table(["stage", "flood", "opened", "held / 503 / 429 / closed",
                         "threads idle → max",
                         "VmHWM MiB", "unloaded adm/s", "flood: adm/s (adm/tries)",
                         "ratio", "first admission"], [
            [f.stage, f.variant, str(f.opened),
             f"{f.held} / {f.refused_503} / {f.refused_429} / {f.closed}",
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

    lines += status_section(results)

    if results.timelines:
        lines += ["## Request timelines", "",
                  "After the testcases' rounds, each testcase is fetched once more by "
                  f"{s['clients']} concurrent clients from every stage, each request's "
                  "connect, first byte and last byte recorded per client "
                  "(`bench/lib/spans.py`): `timeline-testcase1.png` and "
                  "`timeline-testcase2.png`, with the figures in the CSV files of the same "
                  "names. On loopback with clients that read as fast as they can; "
                  "`harness/bench timeline` draws the guide's figures with paced clients.", ""]

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


#: Every file write_all may produce; the ones a run does not rewrite are removed first.
OUTPUT_FILES = (
    "summary.md", "machine.txt", "testcases_runs.csv", "testcases.csv", "ab_runs.csv",
    "ab_summary.csv", "ab_calibration.csv", "flood_threads.csv", "flood_summary.csv",
    "micro.csv", "req_per_s.png", "latency_c12.png", "flood_threads.png", "testcases.png",
    "large_file.png", "ctx_switches_c12.png", "status_runs.csv", "status.csv",
    "timeline-testcase1.csv", "timeline-testcase1.png", "timeline-testcase2.csv",
    "timeline-testcase2.png",
)


def write_all(out: Path, results: Results, small: str, huge: str) -> list[Target]:
    """Writes every CSV, plot, machine.txt and summary.md into @p out; returns the targets."""
    out.mkdir(parents=True, exist_ok=True)
    for name in OUTPUT_FILES:  # a plot this run cannot draw must not survive from an older one
        (out / name).unlink(missing_ok=True)
    tc_summary = testcase_summary(results.testcase_rows)
    summary = ab_summary(results.ab_rows)
    goals = targets(results, summary, small, huge)
    files = ["summary.md", "machine.txt"]
    files += write_csvs(out, results, tc_summary, summary)
    files += write_plots(out, results, tc_summary, summary, small, huge)
    files += write_timelines(out, results)
    for csv_file in out.glob("*.csv"):
        csv_file.write_text(portable(csv_file.read_text()))
    (out / "machine.txt").write_text(portable(
        "".join(f"{k}: {v}\n" for k, v in results.machine.items()) +
        f"command: {results.command}\n"))
    (out / "summary.md").write_text(portable(
        summary_md(results, tc_summary, summary, goals, small, huge, files)))
    return goals


#: The timelines' titles, by testcase key.
TIMELINE_TITLES = {"testcase1": "testcase 1: many small files",
                   "testcase2": "testcase 2: a few large files"}


def write_timelines(out: Path, results: Results) -> list[str]:
    """timeline-testcase1/2.csv and .png (the PNG needs matplotlib; a note says when it is
    missing)."""
    made = []
    for key, drawn in results.timelines.items():
        count = max((len(v) for v in drawn.values()), default=0)
        title = (f"{TIMELINE_TITLES.get(key, key)}: {count} requests by "
                 f"{results.settings['clients']} concurrent clients on loopback "
                 "(one pass after the bench's rounds)")
        made += spans.save(drawn, title, out, f"timeline-{key}")
    missing = spans.matplotlib_missing()
    if results.timelines and missing:
        results.notes.append(missing)
    return made


def status_section(results: Results) -> list[str]:
    """summary.md's section on what --status costs."""
    table = statuscost.summary(results.status_rows)
    if not table:
        return []
    s = results.settings
    lines = ["## What `--status` costs", "",
             f"Stages 3 and 4 each run twice, with `--status` while a poller fetches "
             f"`/server-status` (JSON) every {statuscost.POLL_INTERVAL:g} s as the scoreboard "
             "page does (its requests are part of the figures \"with\"), and without; "
             f"`ab -c {s['status_c']}` on the 1 KiB file for {s['run_seconds']} s, one run per "
             f"server per round, {_times(s['status_reps'], 'round')}: the stages in rotating "
             "order, a stage's two runs side by side, with `--status` second in even rounds "
             "and first in odd ones (on a shared machine the second of two runs of one stage "
             "tended to come out slower, which a fixed order would count as a cost). "
             "Medians (min–max) over the rounds where both runs completed; the ratio "
             "with/without is taken within each round, its median and min–max shown. "
             "*Within noise*: the CPU ratio lies inside the spread of the runs without "
             "`--status` themselves (their min and max over their median).", ""]
    lines += _table(["stage", "req/s without", "req/s with", "req/s ratio",
                     "CPU µs/req without", "CPU µs/req with", "CPU ratio", "within noise",
                     "rounds", "polls (failed)"], [
        [r["stage"], _f(r["rps_without"]), _f(r["rps_with"]),
         f"{_f(r['rps_ratio'], '{:.3f}')} ({_range(r['rps_ratio_min'], r['rps_ratio_max'], '{:.3f}')})",
         f"{_f(r['cpu_us_without'], '{:.1f}')} "
         f"({_range(r['cpu_us_without_min'], r['cpu_us_without_max'], '{:.1f}')})",
         f"{_f(r['cpu_us_with'], '{:.1f}')} "
         f"({_range(r['cpu_us_with_min'], r['cpu_us_with_max'], '{:.1f}')})",
         f"{_f(r['cpu_us_ratio'], '{:.3f}')} ({_range(r['cpu_us_ratio_min'], r['cpu_us_ratio_max'], '{:.3f}')})",
         {True: "yes", False: "no", None: "–"}[statuscost.within_noise(r)],
         str(r["rounds"]), f"{r['polls_ok']} ({r['polls_failed']})"] for r in table])
    lines.append("")
    return lines


def portable(text: str) -> str:
    """Writes paths relative to the repository, so the committed report names no machine's
    directories; the generated document root becomes <tmp>/root."""
    repo = str(Path(__file__).resolve().parents[3]) + "/"
    text = text.replace(repo, "")
    return re.sub(r"/tmp/lab-bench-[^/\s`]+/", "<tmp>/", text)
