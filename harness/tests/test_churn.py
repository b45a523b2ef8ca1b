"""Stage 3's thread bound under churn: clients that open and close connections as fast as they
can, at full capacity, must not make the server run more than ``-maxtotal + 4`` threads.

The churn is the issue's: three clients, each binding to its own run of 250 loopback
addresses, keep about 30 connections open each and close the oldest as they open a new one,
for CHURN_SECONDS, against limits 12/60. A sampler reads ``Threads`` from /proc/PID/status
about every millisecond.

- test_threads_stay_bounded_under_churn (with and without --reclaim-idle): the peak is at
  most -maxtotal + 4 (the main thread, the signal watcher, the Refuser's thread and the
  ThreadSet's reaper beside one thread per slot).
- test_churn_never_runs_out_of_threads: the server runs as a throwaway uid with RLIMIT_NPROC
  CHURN_NPROC, far above the bound: an ordinary client asking over and over during the churn
  never gets the "out of resources" 503 that a failed thread start sends (the limiter's own
  503 "server full" is fine: the server is full).

Figures (peak threads, connections made, replies) are printed: run with -s.
"""

from __future__ import annotations

import collections
import multiprocessing
import os
import random
import socket
import threading
import time

import pytest

from conftest import STAGE3, binary, connect, parse_response, read_to_eof
from test_security import (
    NPROC_UIDS,
    as_throwaway_user,
    is_sanitized,
    runnable_by_anyone,
    world_readable_site,
)

#: The limits the issue measured with.
MAX_PER_CLIENT = 12
MAX_TOTAL = 60
#: Threads beside one per slot: main, signal watcher, Refuser, ThreadSet's reaper.
EXTRA_THREADS = 4
#: How long the clients churn, and how many connections each keeps open.
CHURN_SECONDS = 6.0
CHURN_CLIENTS = 3
CHURN_OPEN = 30
CHURN_ADDRESSES = 250
#: RLIMIT_NPROC for the out-of-threads case: far above the bound, far below a pile-up.
CHURN_NPROC = 300
#: The body of the 503 a server sends when it cannot start a thread (session.cpp).
OUT_OF_RESOURCES = b"out of resources"


def churn(port: int, prefix: str, seconds: float, made) -> None:
    """One churning client: connects from @p prefix + 1..250 in turn, keeps CHURN_OPEN
    connections open and closes the oldest as it opens a new one; stops after @p seconds."""
    addresses = [f"{prefix}{k}" for k in range(1, CHURN_ADDRESSES + 1)]
    open_socks: collections.deque[socket.socket] = collections.deque()
    count = failed = 0
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            try:
                address = addresses[(count + failed) % len(addresses)]
                sock = connect(port, source_ip=address, timeout=1.0)
            except OSError:  # a full accept queue drops the SYN: try the next address
                failed += 1
                continue
            count += 1
            open_socks.append(sock)
            if len(open_socks) > CHURN_OPEN:
                open_socks.popleft().close()
    finally:
        for sock in open_socks:
            sock.close()
        made.value = count


class Churn:
    """CHURN_CLIENTS churning processes (the GIL would slow threads down), each from its own
    run of addresses; ``with Churn(port):`` waits for them (at most CHURN_SECONDS + 10 s)."""

    def __init__(self, port: int, seconds: float = CHURN_SECONDS):
        context = multiprocessing.get_context("fork")
        # Two runs at once most likely churn from different addresses; 127.100.x.x-127.252.x.x.
        base = random.randint(0, 30) * 5
        self.made = [context.Value("q", 0) for _ in range(CHURN_CLIENTS)]
        self.procs = [
            context.Process(target=churn,
                            args=(port, f"127.{100 + base + i}.1.", seconds, self.made[i]),
                            daemon=True)
            for i in range(CHURN_CLIENTS)
        ]
        self.seconds = seconds

    def __enter__(self):
        for proc in self.procs:
            proc.start()
        return self

    def __exit__(self, *exc):
        deadline = time.monotonic() + self.seconds + 10
        for proc in self.procs:
            proc.join(timeout=max(0.1, deadline - time.monotonic()))
        for proc in self.procs:  # only ours, by pid
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=5)

    def alive(self) -> bool:
        return any(proc.is_alive() for proc in self.procs)

    def connections(self) -> int:
        return sum(value.value for value in self.made)


class PeakThreads:
    """Samples a server's thread count about every millisecond on a thread of its own."""

    def __init__(self, server):
        self.server = server
        self.peak = server.threads()
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        path = f"/proc/{self.server.pid}/status"
        while not self._stop.is_set():
            try:
                with open(path, "rb") as status:
                    text = status.read()
            except OSError:
                return
            start = text.find(b"\nThreads:")
            if start >= 0:
                self.peak = max(self.peak, int(text[start + 9:text.index(b"\n", start + 1)]))
                self.samples += 1
            time.sleep(0.001)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=5)


@pytest.mark.parametrize("reclaim", [False, True], ids=["plain", "reclaim_idle"])
def test_threads_stay_bounded_under_churn(reclaim, site, servers):
    extra = ["--reclaim-idle"] if reclaim else []
    server = servers(STAGE3, site.root, "-q", "-maxclient", str(MAX_PER_CLIENT),
                     "-maxtotal", str(MAX_TOTAL), *extra)
    with PeakThreads(server) as sampler, Churn(server.port) as churning:
        while churning.alive():
            time.sleep(0.1)
    assert server.alive(), f"stage 3 died under churn: {server.stderr()[-300:]!r}"
    print(f"\nstage3_limited{' --reclaim-idle' if reclaim else ''}: peak {sampler.peak} threads "
          f"in {sampler.samples} samples, {churning.connections()} connections in "
          f"{CHURN_SECONDS:.0f} s, -maxtotal {MAX_TOTAL}")
    assert sampler.samples >= 1000, f"only {sampler.samples} samples of the thread count"
    assert churning.connections() >= 1000, (
        f"only {churning.connections()} connections: the churn did not churn")
    # A sanitizer's runtime runs a thread of its own (TSan's background thread).
    bound = MAX_TOTAL + EXTRA_THREADS + (1 if is_sanitized(binary(STAGE3)) else 0)
    assert sampler.peak <= bound, (
        f"{sampler.peak} threads under churn with -maxtotal {MAX_TOTAL} (at most {bound})")


def ask_until(port: int, source_ip: str, stop: threading.Event, replies: list) -> None:
    """An ordinary client: one request after another until @p stop, each reply's status line
    and whether it was the out-of-resources 503 go into @p replies."""
    while not stop.is_set():
        try:
            with connect(port, source_ip=source_ip, timeout=5) as sock:
                sock.sendall(b"GET /index.html HTTP/1.0\r\n\r\n")
                data = read_to_eof(sock, time.monotonic() + 5)
        except (OSError, TimeoutError) as error:
            replies.append((f"no reply: {error!r}", False))
            continue
        status = parse_response(data).status_line if data else "closed without a reply"
        replies.append((status, OUT_OF_RESOURCES in data))


def test_churn_never_runs_out_of_threads(servers):
    if os.geteuid() != 0:
        pytest.skip("needs root to run the server as a throwaway uid")
    uid = random.randint(*NPROC_UIDS)
    with world_readable_site() as root:
        server = servers(STAGE3, root, "-q", "-maxclient", str(MAX_PER_CLIENT),
                         "-maxtotal", str(MAX_TOTAL),
                         preexec_fn=as_throwaway_user(uid, CHURN_NPROC),
                         program=runnable_by_anyone(STAGE3, root))
        replies: list[tuple[str, bool]] = []
        stop = threading.Event()
        asker = threading.Thread(target=ask_until,
                                 args=(server.port, "127.0.99.1", stop, replies), daemon=True)
        # A sanitized server serves several times slower: churn longer, so that the ordinary
        # client still asks often enough during the churn for its replies to mean something.
        seconds = CHURN_SECONDS * (3 if is_sanitized(binary(STAGE3)) else 1)
        with Churn(server.port, seconds) as churning:
            asker.start()
            while churning.alive():
                time.sleep(0.1)
        stop.set()
        asker.join(timeout=15)
        assert server.alive(), f"stage 3 died under churn: {server.stderr()[-300:]!r}"
        server.stop()  # while the root still exists
    statuses = collections.Counter(status for status, _ in replies)
    out_of_resources = sum(1 for _, bad in replies if bad)
    print(f"\nstage3_limited as uid {uid}, RLIMIT_NPROC {CHURN_NPROC}, churn of "
          f"{churning.connections()} connections: the ordinary client got {dict(statuses)}; "
          f"{out_of_resources} out of resources")
    assert churning.connections() >= 1000, (
        f"only {churning.connections()} connections: the churn did not churn")
    assert len(replies) >= 10, f"the ordinary client got only {len(replies)} replies"
    assert out_of_resources == 0, (
        f"{out_of_resources} of {len(replies)} replies said the server was out of resources "
        f"(RLIMIT_NPROC {CHURN_NPROC}, -maxtotal {MAX_TOTAL}): {dict(statuses)}")
