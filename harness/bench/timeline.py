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
import sys
import tempfile
from pathlib import Path

from bench.lib import servers as sv
from bench.lib import spans
from bench.lib.spans import Span
from bench.lib.shaper import ShapedProxy
from bench.lib.site import MIB, make_site

REPO_DIR = Path(__file__).resolve().parents[2]

#: The stages drawn, and the options each runs with. Stage 3's per-client limit is below the
#: number of clients, so that the picture shows refusals.
STAGES = [
    ("stage 1 (sequential)", "stage1_sequential", ()),
    ("stage 2 (a thread each)", "stage2_threaded", ()),
    ("stage 3 (-maxclient 2)", "stage3_limited", ("-maxclient", "2", "-maxtotal", "60")),
]


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
            results[name] = spans.record(proxy.port if proxy else server.port, paths,
                                         clients, speak_after, read_rate)
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
    missing_png = None if args.no_png else spans.matplotlib_missing()
    if missing_png:
        print(f"timeline: {missing_png}", file=sys.stderr, flush=True)
    with tempfile.TemporaryDirectory(prefix="lab-timeline-") as tmp:
        site = make_site(Path(tmp) / "www", small_count=args.small, large_count=args.large,
                         large_size=args.large_mib * MIB, huge_size=MIB)
        cases = {"testcase1": ("test case 1: many small files", list(site.many_small)),
                 "testcase2": ("test case 2: a few large files", list(site.few_large))}
        for key, (title, paths) in cases.items():
            results = measure(Path(args.bin), site.root, paths, args.clients,
                              args.rtt_ms / 1000, args.speak_after_ms / 1000,
                              args.read_mbit * 1e6 / 8, Path(tmp))
            network = f"{args.rtt_ms:g} ms round trip" if args.rtt_ms > 0 else "loopback"
            heading = (f"Question 5, {title}: {len(paths)} requests by {args.clients} clients "
                       f"({network}), each reading at {args.read_mbit:g} Mbit/s")
            spans.save(results, heading, out, f"timeline-{key}", png=not args.no_png)
            for name, made in results.items():
                refused = sum(s.refused for s in made)
                print(f"{key} {name}: {len(made)} requests, {refused} refused, "
                      f"done after {spans.finished(made):.2f} s", flush=True)
    print(f"written to {out}/")
    return 0
