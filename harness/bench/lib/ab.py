"""Runs ApacheBench (``ab``) and reads what it printed.

``ab -t SECONDS -n CAP -c C -s SOCKET_TIMEOUT -r -q -e PERCENTILES.csv URL``:
- HTTP/1.0, a new connection per request (no ``-k``), exactly like the servers expect;
- ``-t`` sets how long a run lasts: ab stops at the first reply after SECONDS; requests still
  in flight then are abandoned, not failed (at c=200 that is 200 of ~100,000). ``-n`` after
  ``-t`` is only a cap (``-t`` alone would mean 50,000 requests, too few for 3 s of a fast
  server): calibrate() measures each server's rate in a 1 s run first, and the cap is three
  times what the fastest server's rate would need, so it is normally never reached; a run
  that does reach it ends early and is flagged (``short``);
- ``-s``: when no connection makes progress for that long ab gives up the whole run; it
  then prints only how many requests completed, and the run is recorded without req/s;
- ``-r``: a reset connection counts as a failed request instead of ending the run;
- ``-e``: the latency percentiles 0–100 with microsecond resolution (the text table rounds
  to whole milliseconds, too coarse on loopback).

Latency is ab's "total" time per request: connect, send, wait, and read to the end.
Bytes per second come from ab's "Total transferred", which includes the part of a reply read
before the run ended, so abandoned large transfers do not bias MiB/s.
The run is also bounded from outside (subprocess timeout) in case ab itself hangs.
"""

from __future__ import annotations

import re
import resource
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

#: Extra seconds the subprocess may take beyond ab's own limits before it is killed.
GRACE = 15
#: Length of a calibration run, seconds (ab's -t takes whole seconds).
CALIBRATION_SECONDS = 1
#: Request cap of a calibration run: above any rate a loopback server reaches in 1 s.
CALIBRATION_CAP = 200_000
#: A measured run's -n is this many times the requests the calibrated rate needs.
CAP_FACTOR = 3


@dataclass
class AbResult:
    """One ab run. Figures are None when ab printed none (it aborted)."""

    requested: int  #: ab's -n: a cap; the run normally ends at -t first
    concurrency: int = 0
    time_limit: int = 0  #: ab's -t: how long the run was meant to last
    complete: int = 0
    failed: int = 0  #: ab's "Failed requests": connect, receive, length or exception
    non2xx: int = 0
    rps: float | None = None
    mean_ms: float | None = None
    p50_ms: float | None = None
    p99_ms: float | None = None
    seconds: float | None = None  #: ab's "Time taken for tests"
    total_bytes: int | None = None  #: ab's "Total transferred" (heads and bodies)
    client_cpu: float | None = None  #: ab's user+sys CPU time / wall time (1.0 = a full core)
    #: When ab gave up: completed requests / (wall time − the -s stall before giving up), an
    #: estimate of the rate while it was still making progress. Never used for ratios.
    rps_before_abort: float | None = None
    returncode: int | None = None
    error: str = ""

    @property
    def failures(self) -> int:
        """Requests that did not end in a 2xx reply. When ab gave up, the connections still
        open then (at most -c) count too; requests abandoned at the time limit do not."""
        stuck = 0
        if not self.ok:
            stuck = max(0, min(self.concurrency or self.requested,
                               self.requested - self.complete))
        return self.failed + self.non2xx + stuck

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.rps is not None

    @property
    def short(self) -> bool:
        """True when the run ended at its -n cap before -t: it lasted less than meant."""
        return (self.ok and self.complete >= self.requested and self.seconds is not None
                and self.seconds < self.time_limit)

    @property
    def bytes_per_s(self) -> float | None:
        if self.total_bytes is None or not self.seconds:
            return None
        return self.total_bytes / self.seconds


def _number(pattern: str, text: str) -> float | None:
    match = re.search(pattern, text, re.M)
    return float(match[1]) if match else None


def parse(stdout: str, percentiles_csv: str, result: AbResult) -> AbResult:
    """Fills @p result from ab's text output and its ``-e`` percentile file."""
    complete = _number(r"^Complete requests:\s+(\d+)", stdout)
    if complete is None:  # ab gave up midway and printed only how far it got
        complete = _number(r"Total of (\d+) requests completed", stdout)
    result.complete = int(complete) if complete is not None else 0
    result.failed = int(_number(r"^Failed requests:\s+(\d+)", stdout) or 0)
    result.non2xx = int(_number(r"^Non-2xx responses:\s+(\d+)", stdout) or 0)
    result.rps = _number(r"^Requests per second:\s+([\d.]+)", stdout)
    result.mean_ms = _number(r"^Time per request:\s+([\d.]+) \[ms\] \(mean\)$", stdout)
    result.seconds = _number(r"^Time taken for tests:\s+([\d.]+) seconds", stdout)
    total = _number(r"^Total transferred:\s+(\d+) bytes", stdout)
    result.total_bytes = int(total) if total is not None else None
    table = {}
    for line in percentiles_csv.splitlines():
        percent, _, value = line.partition(",")
        if percent.isdigit():
            table[int(percent)] = float(value)
    result.p50_ms = _percentile(table, 50, result.complete)
    result.p99_ms = _percentile(table, 99, result.complete)
    return result


def _percentile(table: dict[int, float], percent: int, done: int) -> float | None:
    """Row @p percent of ab's ``-e`` table, guarding against ab reading past its array.

    ab prints row p as its sorted time number int(0.5 + done * p / 100); when that index
    reaches ``done`` (p = 99 with fewer than 50 requests) it reads past the end and prints
    garbage. The largest time is the right answer then, and ab prints it as row 100.
    """
    if done <= 0 or percent not in table:
        return None
    if int(0.5 + done * percent / 100) >= done:
        return table.get(100)
    return table[percent]


def run(url: str, requests: int, concurrency: int, time_limit: int, socket_timeout: float,
        workdir: Path, tag: str) -> AbResult:
    """One ab run against @p url lasting @p time_limit seconds, at most @p requests requests;
    its output goes to files ``ab-<tag>.*`` in @p workdir."""
    out_path = workdir / f"ab-{tag}.stdout"
    err_path = workdir / f"ab-{tag}.stderr"
    csv_path = workdir / f"ab-{tag}.csv"
    csv_path.unlink(missing_ok=True)
    command = ["ab", "-t", str(int(time_limit)), "-n", str(requests), "-c", str(concurrency),
               "-s", str(int(socket_timeout)), "-r", "-q", "-e", str(csv_path), url]
    result = AbResult(requested=requests, concurrency=concurrency, time_limit=int(time_limit))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.monotonic()
    with open(out_path, "wb") as out, open(err_path, "wb") as err:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        try:
            result.returncode = proc.wait(timeout=time_limit + socket_timeout + GRACE)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            result.returncode = None
            result.error = "ab did not finish; killed"
        except BaseException:  # interrupted (Ctrl-C, SIGTERM): no ab outlives the bench
            proc.kill()
            proc.wait()
            raise
    wall = time.monotonic() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    result.client_cpu = cpu / wall if wall > 0 else None
    stdout = out_path.read_text(errors="replace")
    percentiles = csv_path.read_text(errors="replace") if csv_path.exists() else ""
    parse(stdout, percentiles, result)
    if result.rps is None and result.complete > 0 and wall > socket_timeout:
        result.rps_before_abort = result.complete / (wall - socket_timeout)
    if result.returncode not in (0, None) and not result.error:
        stderr = err_path.read_text(errors="replace").strip().splitlines()
        result.error = (f"ab gave up after {result.complete} requests: "
                        + (stderr[-1] if stderr else f"exit status {result.returncode}"))
    return result


def calibrate(url: str, concurrency: int, socket_timeout: float, workdir: Path,
              tag: str) -> tuple[float, AbResult]:
    """The rate (req/s) of a CALIBRATION_SECONDS run, for sizing the measured runs' cap.

    When ab gave up (a stalled server), the rate up to its last progress is used instead.
    """
    result = run(url, CALIBRATION_CAP, concurrency, CALIBRATION_SECONDS, socket_timeout,
                 workdir, f"calibrate-{tag}")
    rate = result.rps or result.rps_before_abort or 0.0
    return max(rate, 1.0), result


def cap_for(rate: float, seconds: int, concurrency: int) -> int:
    """-n for a run of @p seconds at about @p rate req/s: CAP_FACTOR times what it needs."""
    return max(100, int(rate * seconds * CAP_FACTOR) + concurrency)
