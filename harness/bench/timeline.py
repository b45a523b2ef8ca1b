"""Request timelines: when each client connected, got its first byte and its last, per stage.

Question 5's test cases 1 (many small files) and 2 (a few large files), fetched by --clients
concurrent clients (on loopback, or with --rtt-ms through the simulated network of
bench shaped), against stage 1, stage 2 and stage 3 with a per-client limit
below the number of clients (all clients come through the proxy, so from one address: the
limit refuses some, and the picture marks them). Each client reads at --read-mbit (40)
through a small receive window, as a client on a slower network: a reply larger than the
kernel's buffers then keeps a sequential server busy until that client has taken it. Each request is one row: a thin line from
connect() to its first byte (waiting), a thick bar from first to last byte (the transfer),
a red cross where a refusal (429/503) arrived. Stage 1 draws a staircase, stage 2 overlaps.

    /usr/bin/python3 harness/bench timeline             # build/timeline/*.png, *.csv
    /usr/bin/python3 harness/bench timeline --out docs/img  # the guide's figures

Needs python3-matplotlib (Debian) for the PNG; the CSV is written without it.
"""

from __future__ import annotations

import argparse
import csv
import socket
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from bench.lib import servers as sv
from bench.lib.shaper import ShapedProxy
from bench.lib.site import KIB, MIB, make_site

REPO_DIR = Path(__file__).resolve().parents[2]

#: The stages drawn, and the options each runs with. Stage 3's per-client limit is below the
#: number of clients, so that the picture shows refusals.
STAGES = [
    ("stage 1 (sequential)", "stage1_sequential", ()),
    ("stage 2 (a thread each)", "stage2_threaded", ()),
    ("stage 3 (-maxclient 2)", "stage3_limited", ("-maxclient", "2", "-maxtotal", "60")),
]
#: The clients' receive buffer (and largest read): small, so that a slow reader slows the sender.
READ_WINDOW = 64 * KIB
#: Longest one request may take, in seconds.
REQUEST_TIMEOUT = 60.0


@dataclass
class Span:
    """One request's times, in seconds from the start of its run."""

    client: int
    path: str
    connect: float
    first_byte: float
    last_byte: float
    status: int


def timed_get(port: int, path: str, client: int, origin: float, speak_after: float,
              read_rate: float) -> Span:
    """GET @p path, sent @p speak_after seconds after connecting, recording connect, first
    byte and last byte (status 0: no reply)."""
    connect = time.perf_counter() - origin
    first = last = connect
    status = 0
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            # A small window, so that the server feels the client's pace.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, READ_WINDOW)
            sock.settimeout(REQUEST_TIMEOUT)
            sock.connect(("127.0.0.1", port))
            time.sleep(speak_after)
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            head, got = b"", 0
            while chunk := sock.recv(READ_WINDOW):
                if not head:
                    first = time.perf_counter() - origin
                if len(head) < 16:
                    head += chunk[:16]
                got += len(chunk)
                # Reads at most read_rate bytes a second, as a client on a slower network.
                ahead = first + got / read_rate - (time.perf_counter() - origin)
                if ahead > 0:
                    time.sleep(ahead)
            last = time.perf_counter() - origin
            if head.startswith(b"HTTP/"):
                status = int(head.split()[1])
    except OSError:
        last = time.perf_counter() - origin
    return Span(client, path, connect, first, last, status)


def run(port: int, paths: list[str], clients: int, speak_after: float,
        read_rate: float) -> list[Span]:
    """@p clients threads share @p paths (each takes the next untaken one), all timed."""
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

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
    for thread in threads:
        thread.start()
    origin_box.append(time.perf_counter())
    ready.wait()
    for thread in threads:
        thread.join(timeout=REQUEST_TIMEOUT * len(paths))
    return sorted(spans, key=lambda s: s.connect)


def draw(results: dict[str, list[Span]], title: str, out: Path) -> None:
    """One panel per stage, one row per request, on a shared time axis."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(results), 1, sharex=True,
                             figsize=(9, 1.2 + 1.6 * len(results)), squeeze=False)
    for ax, (name, spans) in zip(axes[:, 0], results.items()):
        for row, s in enumerate(spans):
            refused = s.status in (429, 503)
            ax.hlines(row, s.connect, s.first_byte, colors="#999999", linewidth=1)
            if refused:
                ax.plot(s.first_byte, row, "x", color="#b00020", markersize=5)
            else:
                ax.hlines(row, s.first_byte, s.last_byte, colors="#1e6fbf", linewidth=3)
        refusals = sum(s.status in (429, 503) for s in spans)
        end = max((s.last_byte for s in spans), default=0)
        label = f"{name}: {end:.2f} s" + (f", {refusals} refused (x)" if refusals else "")
        ax.set_title(label, loc="left", fontsize=9)
        ax.set_ylabel("request")
        ax.invert_yaxis()
        ax.set_yticks([])
    axes[-1, 0].set_xlabel("seconds since the clients started "
                           "(grey: waiting for the first byte; blue: first to last byte)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def write_csv(results: dict[str, list[Span]], out: Path) -> None:
    with open(out, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["stage", "client", "path", "connect_s", "first_byte_s", "last_byte_s",
                         "status"])
        for name, spans in results.items():
            for s in spans:
                writer.writerow([name, s.client, s.path, f"{s.connect:.4f}",
                                 f"{s.first_byte:.4f}", f"{s.last_byte:.4f}", s.status])


def measure(bin_dir: Path, root: Path, paths: list[str], clients: int, rtt: float,
            speak_after: float, read_rate: float, workdir: Path) -> dict[str, list[Span]]:
    """Every stage of STAGES through its own shaped proxy, one after the other."""
    results = {}
    for name, binary, extra in STAGES:
        (workdir / binary).mkdir(exist_ok=True)
        server = sv.StageServer(workdir / binary, root, bin_dir / binary, binary,
                                extra=tuple(extra)).start()
        proxy = ShapedProxy(server.port, rtt=rtt).start() if rtt > 0 else None
        try:
            results[name] = run(proxy.port if proxy else server.port, paths, clients,
                                speak_after, read_rate)
        finally:
            if proxy:
                proxy.stop()
            server.stop()
    return results


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness/bench timeline", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bin", default=str(REPO_DIR / "build" / "bin"))
    parser.add_argument("--out", default=str(REPO_DIR / "build" / "timeline"))
    parser.add_argument("--clients", type=int, default=12)
    parser.add_argument("--rtt-ms", type=float, default=0.0,
                        help="through bench shaped's simulated network with this round trip "
                             "(default 0: straight to the server; the proxy opens its upstream "
                             "connection only once the request has come, which hides what a "
                             "silent client does to stage 1)")
    parser.add_argument("--read-mbit", type=float, default=40.0,
                        help="each client reads at most this many Mbit/s (default 40)")
    parser.add_argument("--speak-after-ms", type=float, default=0.0,
                        help="each client sends its request this long after connecting, as a "
                             "person typing would (default 0)")
    parser.add_argument("--small", type=int, default=36, help="files of test case 1")
    parser.add_argument("--large", type=int, default=4, help="files of test case 2")
    parser.add_argument("--large-mib", type=int, default=4, help="size of each large file")
    parser.add_argument("--no-png", action="store_true", help="the CSV only")
    args = parser.parse_args(argv)
    if not 1 <= args.clients <= 64:
        parser.error("--clients takes 1 to 64")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="lab-timeline-") as tmp:
        site = make_site(Path(tmp) / "www", small_count=args.small, large_count=args.large,
                         large_size=args.large_mib * MIB, huge_size=MIB)
        cases = {"testcase1": ("test case 1: many small files", list(site.many_small)),
                 "testcase2": ("test case 2: a few large files", list(site.few_large))}
        for key, (title, paths) in cases.items():
            results = measure(Path(args.bin), site.root, paths, args.clients,
                              args.rtt_ms / 1000, args.speak_after_ms / 1000,
                              args.read_mbit * 1e6 / 8, Path(tmp))
            write_csv(results, out / f"timeline-{key}.csv")
            network = f"{args.rtt_ms:g} ms round trip" if args.rtt_ms > 0 else "loopback"
            heading = (f"Question 5, {title}: {len(paths)} requests by {args.clients} clients "
                       f"({network}), each reading at {args.read_mbit:g} Mbit/s")
            if not args.no_png:
                draw(results, heading, out / f"timeline-{key}.png")
            for name, spans in results.items():
                refused = sum(s.status in (429, 503) for s in spans)
                end = max(s.last_byte for s in spans)
                print(f"{key} {name}: {len(spans)} requests, {refused} refused, "
                      f"done after {end:.2f} s", flush=True)
    print(f"written to {out}/")
    return 0

