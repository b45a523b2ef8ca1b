"""What `--status` costs: stages 3 and 4 with and without it, under the same ab load.

Stages 3 and 4 store every connection's state (one relaxed atomic store per step, in the
limiter's entry) whether or not `--status` is given; `--status` lets `/server-status` read
them, and the scoreboard page (`/server-status?view=html`) fetches the JSON about twice a
second. So the comparison measures what answering the page costs the request path (the
snapshot takes the limiter's lock), not the stores, which both runs make. The
bench's section ``status`` runs each of stages 3 and 4 twice, once with `--status` while a
Poller fetches `/server-status` every POLL_INTERVAL seconds as the page does, once without,
one ab run each per round, the two runs of a stage side by side and taking turns to
go first (bench.status_order()). Its figures are those of the ab section (req/s
and the server's CPU per request); the ratio with/without is taken within each round and the
median of those per-round ratios is shown. The poller's own requests are served by the same
process, so their cost is part of "with": that is what an open scoreboard costs.
"""

from __future__ import annotations

import threading

from .client import FetchError, fetch
from .stats import spread

#: Seconds between two fetches of /server-status: the scoreboard page's pace.
POLL_INTERVAL = 0.5
#: The suffix that names a stage's run with --status ("stage3+status").
WITH = "+status"


class Poller:
    """Fetches /server-status (JSON) from 127.0.0.1:@p port every POLL_INTERVAL seconds in a
    thread, for as long as it is entered; counts the replies that came and those that did not."""

    def __init__(self, port: int):
        self.port = port
        self.ok = 0
        self.failed = 0
        self.last_error = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                reply = fetch(self.port, "/server-status", timeout=2.0)
                if reply.body_bytes > 0:
                    self.ok += 1
                else:
                    self.failed += 1
                    self.last_error = "empty /server-status"
            except FetchError as error:
                self.failed += 1
                self.last_error = str(error)
            self._stop.wait(POLL_INTERVAL)

    def __enter__(self) -> "Poller":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


def _per_round(rows: list[dict], stage: str, key: str) -> dict[int, tuple[float, float]]:
    """Round → (with, without) figures of @p key for @p stage, rounds where both ran fine."""
    runs = {(r["server"], r["rep"]): r for r in rows if r["stage"] == stage}
    pairs = {}
    for (server, rep), mine in runs.items():
        if server != stage + WITH:
            continue
        other = runs.get((stage, rep))
        if (other is None or not (mine["ok"] and other["ok"]) or mine.get(key) is None
                or not other.get(key)):
            continue
        pairs[rep] = (mine[key], other[key])
    return pairs


def summary(rows: list[dict]) -> list[dict]:
    """Per stage: medians (min–max) with and without --status of req/s and CPU µs per
    request, and the medians (min–max) of the per-round ratios with/without."""
    out = []
    for stage in sorted({r["stage"] for r in rows}):
        entry: dict = {"stage": stage}
        for key, name in (("rps", "rps"), ("cpu_us_per_request", "cpu_us")):
            pairs = _per_round(rows, stage, key)
            for side, index in (("with", 0), ("without", 1)):
                median, low, high = spread([p[index] for p in pairs.values()])
                entry.update({f"{name}_{side}": median, f"{name}_{side}_min": low,
                              f"{name}_{side}_max": high})
            ratio, low, high = spread([a / b for a, b in pairs.values()])
            entry.update({f"{name}_ratio": ratio, f"{name}_ratio_min": low,
                          f"{name}_ratio_max": high, "rounds": len(pairs)})
        mine = [r for r in rows if r["stage"] == stage and r["status"]]
        entry["polls_ok"] = sum(r["polls_ok"] for r in mine)
        entry["polls_failed"] = sum(r["polls_failed"] for r in mine)
        out.append(entry)
    return out


def within_noise(entry: dict) -> bool | None:
    """True when the median CPU ratio with/without lies inside the spread of the runs without
    --status themselves (their min and max over their median): what the machine's noise alone
    moves the figure by. None when not measured."""
    if entry.get("cpu_us_ratio") is None or not entry.get("cpu_us_without"):
        return None
    low = entry["cpu_us_without_min"] / entry["cpu_us_without"]
    high = entry["cpu_us_without_max"] / entry["cpu_us_without"]
    return low <= entry["cpu_us_ratio"] <= high
