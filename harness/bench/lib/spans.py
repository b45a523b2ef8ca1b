"""Request timelines: each request's connect, first byte and last byte, per client, drawn.

Shared by ``harness/bench timeline`` (question 5's test cases, one stage after another), the
benches (``harness/bench compare`` section ``testcases``, ``harness/bench shaped``) and the concurrency
tests (``test_concurrency.py``). A Span is one request; ``record()`` times a list of requests
made by a number of concurrent clients; ``write_csv()`` keeps the figures and ``draw()`` the
picture (python3-matplotlib: ``matplotlib_missing()`` says when it cannot be drawn, and the
CSV is written all the same).
"""

from __future__ import annotations

import csv
import importlib.util
import os
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

KIB = 1024
#: The clients' receive buffer (and largest read) when they read at a set pace: small, so
#: that a slow reader slows the sender.
READ_WINDOW = 64 * KIB
#: Longest one request may take, in seconds.
REQUEST_TIMEOUT = 60.0
#: Statuses drawn as refusals.
REFUSALS = (429, 503)


@dataclass
class Span:
    """One request's times, in seconds from the start of its run."""

    client: int
    path: str
    connect: float
    first_byte: float
    last_byte: float
    status: int  #: 0: no reply
    #: The last moment the client knows the server was still sending this reply (see
    #: send_buffer_bound()); None when nothing shows it.
    busy_until: float | None = None

    @property
    def refused(self) -> bool:
        return self.status in REFUSALS


def timed_get(port: int, path: str, client: int, origin: float, speak_after: float = 0.0,
              read_rate: float | None = None, host: str = "127.0.0.1") -> Span:
    """GET @p path, sent @p speak_after seconds after connecting, recording connect, first
    byte and last byte (status 0: no reply). With @p read_rate (bytes a second) the client
    reads no faster than that, through a READ_WINDOW receive buffer."""
    connect = time.perf_counter() - origin
    first = last = connect
    status = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            if read_rate:
                # A small window, so that the server feels the client's pace.
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_WINDOW)
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect((host, port))
            if speak_after > 0:
                time.sleep(speak_after)
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            head, got = b"", 0
            while chunk := sock.recv(READ_WINDOW):
                if not head:
                    first = time.perf_counter() - origin
                if len(head) < 16:
                    head += chunk[:16]
                got += len(chunk)
                if read_rate:
                    ahead = first + got / read_rate - (time.perf_counter() - origin)
                    if ahead > 0:
                        time.sleep(ahead)
            last = time.perf_counter() - origin
            if head.startswith(b"HTTP/"):
                status = int(head.split()[1])
    except (OSError, ValueError, IndexError):
        last = time.perf_counter() - origin
    return Span(client, path, connect, first, last, status)


def record(port: int, paths: list[str], clients: int, speak_after: float = 0.0,
           read_rate: float | None = None) -> list[Span]:
    """@p clients threads share @p paths (each takes the next untaken one), all timed from
    the moment every thread is ready; returns the spans in the order of their connects."""
    spans: list[Span] = []
    lock = threading.Lock()
    queue = list(paths)
    ready = threading.Barrier(clients + 1)
    origin_box: list[float] = []

    def worker(k: int) -> None:
        ready.wait()
        while True:
            with lock:
                if not queue:
                    return
                path = queue.pop(0)
            span = timed_get(port, path, k, origin_box[0], speak_after, read_rate)
            with lock:
                spans.append(span)

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    origin_box.append(time.perf_counter())
    ready.wait()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT * len(paths))
    return sorted(spans, key=lambda s: s.connect)


def finished(made: list[Span]) -> float:
    """When the last of @p made ended (0 for none)."""
    return max((s.last_byte for s in made), default=0.0)


def record_passes(cases: dict[str, list[str]], servers: list, fetch_all: Callable,
                  log: Callable[[str], None]) -> dict[str, dict[str, list[Span]]]:
    """Case → server name → the Spans of one concurrent pass of the case's paths over each of
    @p servers: fetch_all(server, paths) records one (record() through whatever network);
    logs when each server finished."""
    timelines: dict[str, dict[str, list[Span]]] = {}
    for case, paths in cases.items():
        drawn = timelines[case] = {server.name: fetch_all(server, list(paths))
                                   for server in servers}
        log(f"timeline of {case}: "
            + ", ".join(f"{name} {finished(made):.3f} s" for name, made in drawn.items()))
    return timelines


#: Bytes the kernel may queue beyond a socket buffer's nominal size (one more segment's
#: worth of overshoot in either buffer, with room to spare).
BUFFER_SLACK = 256 * KIB


def send_buffer_bound(rcvbuf: int, autotuned: bool = True) -> int:
    """Most reply bytes that can sit between a server's write() and a client's recv() on
    loopback: the server's send buffer (autotuned by the kernel up to tcp_wmem's maximum; with
    @p autotuned false, also one set with SO_SNDBUF, up to twice wmem_max) plus the client's
    receive buffer (twice the @p rcvbuf it asked for) plus BUFFER_SLACK. While a client has
    read less than the reply's size minus this, the server has not finished sending it."""
    def read_ints(path: str) -> list[int]:
        try:
            with open(path, encoding="ascii") as f:
                return [int(word) for word in f.read().split()]
        except (OSError, ValueError):
            return [8 * 1024 * KIB]

    send = read_ints("/proc/sys/net/ipv4/tcp_wmem")[-1]
    if not autotuned:
        send = max(send, 2 * read_ints("/proc/sys/net/core/wmem_max")[-1])
    return send + 2 * rcvbuf + BUFFER_SLACK


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    """The most of @p intervals (start, end) that share one instant; touching ends do not
    count as sharing."""
    events = sorted([(start, 1) for start, end in intervals if end > start]
                    + [(end, -1) for start, end in intervals if end > start])
    most = now = 0
    for _, step in events:
        now += step
        most = max(most, now)
    return most


def write_csv(results: dict[str, list[Span]], out: Path) -> None:
    """One row per request, the panel (stage or server) first; renamed into place, so two
    runs writing the same file never mix."""
    partial = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}")
    with open(partial, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["stage", "client", "path", "connect_s", "first_byte_s", "last_byte_s",
                         "status", "busy_until_s"])
        for name, spans in results.items():
            for s in spans:
                writer.writerow([name, s.client, s.path, f"{s.connect:.4f}",
                                 f"{s.first_byte:.4f}", f"{s.last_byte:.4f}", s.status,
                                 "" if s.busy_until is None else f"{s.busy_until:.4f}"])
    os.replace(partial, out)


def matplotlib_missing() -> str | None:
    """None when the timelines can be drawn, else what to install."""
    if importlib.util.find_spec("matplotlib") is None:
        return ("python3-matplotlib is not installed: the timeline PNGs are not drawn (their "
                "CSV files are written); apt-get install python3-matplotlib")
    return None


def draw(results: dict[str, list[Span]], title: str, out: Path) -> None:
    """One panel per stage, one row per request, on a shared time axis. Written to a
    temporary name and renamed, so two runs writing the same file never mix."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, sharex=True,
                             figsize=(9, 1.2 + 1.6 * len(results)), squeeze=False)
    for ax, (name, spans) in zip(axes[:, 0], results.items()):
        for row, s in enumerate(spans):
            ax.hlines(row, s.connect, s.first_byte, colors="#999999", linewidth=1)
            if s.refused:
                ax.plot(s.first_byte, row, "x", color="#b00020", markersize=5)
            else:
                ax.hlines(row, s.first_byte, s.last_byte, colors="#1e6fbf", linewidth=3)
            if s.busy_until is not None and s.busy_until > s.first_byte:
                ax.hlines(row, s.first_byte, s.busy_until, colors="#0b2f57", linewidth=5)
        refusals = sum(s.refused for s in spans)
        label = f"{name}: {finished(spans):.2f} s" + (f", {refusals} refused (x)" if refusals else "")
        ax.set_title(label, loc="left", fontsize=9)
        ax.set_ylabel("request")
        ax.invert_yaxis()
        ax.set_yticks([])
    busy = any(s.busy_until is not None for made in results.values() for s in made)
    axes[-1, 0].set_xlabel("seconds since the clients started "
                           "(grey: waiting for the first byte; blue: first to last byte"
                           + ("; dark: the server surely still sending" if busy else "") + ")")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    partial = out.with_name(f".{out.name}.{os.getpid()}.{threading.get_ident()}.png")
    fig.savefig(partial, dpi=100)
    plt.close(fig)
    os.replace(partial, out)


def save(results: dict[str, list[Span]], title: str, out_dir: Path, stem: str,
         png: bool = True) -> list[str]:
    """Writes @p stem.csv and, when @p png and matplotlib is there, @p stem.png into
    @p out_dir; returns the names written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(results, out_dir / f"{stem}.csv")
    if not png or matplotlib_missing():
        return [f"{stem}.csv"]
    draw(results, title, out_dir / f"{stem}.png")
    return [f"{stem}.csv", f"{stem}.png"]
