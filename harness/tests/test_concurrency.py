"""How the stages behave with many clients: blocking (stage 1) versus threads (stages 2, 3)
and event loops (stage 4), concurrent downloads, slow readers, threads per connection,
deadlines and shutdown with open connections.

The tests with several clients record each request's connect, first byte and last byte per
client (the ``timeline`` fixture) and write them as a timeline, timeline-<test>.csv and .png
(the PNG with python3-matplotlib), into $LAB_TIMELINE_DIR or else the test's temporary
directory; some assert on those times: stage 1 never serves two slow readers at once, the
threaded stages serve them together.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from bench.lib import spans
from bench.lib.spans import Span

from conftest import (
    EVENT_THREAD_MAX,
    LIMITED_STAGES,
    REASONS,
    STAGE1,
    STAGE2,
    STAGE4,
    THREADED_STAGES,
    Holder,
    connect,
    ip_range,
    parse_response,
    read_to_eof,
    request,
    stage_params,
    trickle,
    wait_until,
)

GET_INDEX = b"GET /index.html HTTP/1.0\r\n\r\n"
#: Where the timelines go when set (else each test's temporary directory).
TIMELINE_DIR_ENV = "LAB_TIMELINE_DIR"


@pytest.fixture
def timeline(request, tmp_path):
    """A dict the test fills, panel name → the Spans of its requests; written at teardown as
    timeline-<test>.csv and .png into $LAB_TIMELINE_DIR or the test's temporary directory."""
    panels: dict[str, list[Span]] = {}
    yield panels
    if panels:
        directory = Path(os.environ.get(TIMELINE_DIR_ENV) or tmp_path)
        stem = "timeline-" + re.sub(r"[^\w.-]+", "_", request.node.name).strip("_")
        spans.save(panels, request.node.nodeid, directory, stem)


def read_timed(sock: socket.socket, deadline: float, origin: float, *, chunk: int = 65536,
               pause: float = 0.0, busy_below: int | None = None):
    """Reads to EOF (read_to_eof) and times it from @p origin (perf_counter): returns the
    bytes, the first byte's and the last byte's times, and the last time the client had read
    fewer than @p busy_below bytes (None if never timed): until then, the server had not
    finished sending (spans.send_buffer_bound()). @p pause: a sleep after each read."""
    first = last = busy_until = None
    total = 0

    def on_read(data: bytes) -> None:
        nonlocal first, last, busy_until, total
        now = time.perf_counter() - origin
        if not data:
            last = now
            return
        if first is None:
            first = now
        total += len(data)
        if busy_below is not None and total < busy_below:
            busy_until = now
        if pause:
            time.sleep(pause)

    data = read_to_eof(sock, deadline, chunk=chunk, on_read=on_read)
    return data, first if first is not None else last, last, busy_until


def get_over(sock: socket.socket, path: str, deadline: float, origin: float | None = None,
             client: int = 0):
    """Sends GET @p path on an open socket and returns the parsed response and, timed from
    @p origin (perf_counter, default now), its Span (connect counted from the send)."""
    origin = time.perf_counter() if origin is None else origin
    sent = time.perf_counter() - origin
    sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    data, first, last, _ = read_timed(sock, deadline, origin)
    reply = parse_response(data)
    return reply, Span(client, path, sent, first, last, reply.status)


# --------------------------------------------------------------------------------------------
# One silent client
# --------------------------------------------------------------------------------------------


def test_stage1_silent_client_blocks_the_next(site, servers, timeline):
    server = servers(STAGE1, site.root, "-t", "30")
    origin = time.perf_counter()
    with connect(server.port) as silent, connect(server.port) as second:
        connected = time.perf_counter() - origin
        second.sendall(GET_INDEX)
        second.settimeout(1.0)
        with pytest.raises(socket.timeout):
            data = second.recv(1)
            pytest.fail(f"stage 1 answered while another client held it: {data!r}")
        silent.close()
        closed = time.perf_counter() - origin
        data, first, last, _ = read_timed(second, time.monotonic() + 5, origin)
        reply = parse_response(data)
    timeline["stage 1: a silent client, then a request"] = [
        Span(0, "(silent)", 0.0, closed, closed, 0),
        Span(1, "/index.html", connected, first, last, reply.status)]
    assert reply.status == 200
    assert reply.body == site.bytes_of("index.html")
    # Its first byte can only come once the silent client has gone.
    assert first >= closed, (f"the reply's first byte came at {first:.3f} s, before the silent "
                             f"client closed at {closed:.3f} s")


@stage_params(THREADED_STAGES)
def test_threaded_stages_serve_while_clients_stall(stage, site, servers, timeline):
    server = servers(stage, site.root, "-t", "30")
    origin = time.perf_counter()
    with Holder() as holder:
        stalled = holder.open(server.port, 5)
        stalled[0].sendall(b"GET /ind")  # some stall mid-request, some before a byte
        stalled[1].sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n")
        start = time.monotonic()
        with connect(server.port) as sock:
            connected = time.perf_counter() - origin
            reply, span = get_over(sock, "/notes.txt", start + 5, origin, client=5)
        span.connect = connected
        elapsed = time.monotonic() - start
    released = time.perf_counter() - origin
    timeline[f"{stage}: 5 stalled clients, then a request"] = [
        Span(k, "(stalled)", 0.0, released, released, 0) for k in range(5)] + [span]
    assert reply.status == 200
    assert reply.body == site.bytes_of("notes.txt")
    assert elapsed < 1.0, f"{stage} took {elapsed:.2f} s to answer beside 5 stalled clients"
    assert span.last_byte < released, "the request was not served while the clients stalled"


# --------------------------------------------------------------------------------------------
# Many clients at once
# --------------------------------------------------------------------------------------------


@stage_params()
def test_concurrent_fetch_mixed_sizes(stage, site, servers, timeline):
    big = os.urandom(4 << 20)
    site.add_file("big.bin", big)
    medium = os.urandom(300_000)
    site.add_file("medium.bin", medium)
    expected = {
        "/big.bin": big,
        "/medium.bin": medium,
        "/logo.png": site.bytes_of("logo.png"),
        "/index.html": site.bytes_of("index.html"),
        "/guide.pdf": site.bytes_of("guide.pdf"),
        "/style.css": site.bytes_of("style.css"),
    }
    paths = list(expected)
    server = servers(stage, site.root, "-q")
    # 24 clients from 6 addresses, 4 each: inside stage 3's default per-client limit.
    ips = ip_range("127.0.2.", 1, 6)
    barrier = threading.Barrier(24, timeout=10)
    origin = time.perf_counter()

    def client(i: int):
        path = paths[i % len(paths)]
        connected = time.perf_counter() - origin
        with connect(server.port, source_ip=ips[i % len(ips)], timeout=30) as sock:
            barrier.wait()
            reply, span = get_over(sock, path, time.monotonic() + 60, origin, client=i)
        span.connect = connected
        return path, reply, span

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(client, range(24)))
    timeline[f"{stage}: 24 clients, mixed sizes"] = sorted(
        (span for _, _, span in results), key=lambda s: s.first_byte)
    for path, reply, span in results:
        assert reply.status == 200, (path, reply.status_line)
        assert reply.body == expected[path], f"{path}: body differs ({len(reply.body)} bytes)"
        assert span.connect <= span.first_byte <= span.last_byte, span
    assert server.alive()


# A slow link, simulated: each client keeps a small receive window and pauses between reads,
# so it takes a few MB/s. The file must be well larger than what the kernel buffers for one
# connection (the server's send buffer autotunes up to net.ipv4.tcp_wmem's 4 MiB, of which
# about 3 MB is payload): stage 1 only moves on to the next client once the rest of the file
# fits into that buffer. With 1 MiB files stage 1 is not measurably slower at all.
SLOW_FILE_SIZE = 8 << 20
SLOW_CLIENTS = 8
SLOW_RCVBUF = 16384
SLOW_READ = 16384
SLOW_PAUSE = 0.005


#: While a slow reader has read fewer bytes than this, the server is still sending it its
#: reply: the rest cannot all sit in the kernel's buffers (for a server that leaves its send
#: buffer to the kernel's autotuning, as the stages do: none sets SO_SNDBUF).
SLOW_BUSY_BELOW = SLOW_FILE_SIZE - spans.send_buffer_bound(SLOW_RCVBUF)


def slow_fetch_all(port: int, count: int) -> tuple[float, list[Span]]:
    """@p count clients with a small receive buffer each read the slow file in 16 KiB chunks
    with a 5 ms pause between reads, all at once; returns the wall time for all of them and
    their Spans, each with the time up to which the server was surely still sending it."""
    barrier = threading.Barrier(count + 1, timeout=30)
    origin = time.perf_counter()

    def client(k):
        connected = time.perf_counter() - origin
        with connect(port, timeout=60, rcvbuf=SLOW_RCVBUF) as sock:
            barrier.wait()
            sock.sendall(b"GET /slow.bin HTTP/1.0\r\n\r\n")
            data, first, last, busy = read_timed(sock, time.monotonic() + 60, origin,
                                                 chunk=SLOW_READ, pause=SLOW_PAUSE,
                                                 busy_below=SLOW_BUSY_BELOW)
            reply = parse_response(data)
            return reply, Span(k, "/slow.bin", connected, first, last, reply.status, busy)

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(client, i) for i in range(count)]
        barrier.wait()
        start = time.monotonic()
        results = [f.result(timeout=120) for f in futures]
        elapsed = time.monotonic() - start
    for reply, _ in results:
        assert reply.status == 200, reply.status_line
        assert len(reply.body) == SLOW_FILE_SIZE
    return elapsed, sorted((span for _, span in results), key=lambda s: s.first_byte)


def busy_overlap(made: list[Span]) -> int:
    """The most replies the server was surely sending at one instant (Span.busy_until)."""
    return spans.max_overlap([(s.first_byte, s.busy_until) for s in made
                              if s.busy_until is not None])


def test_slow_readers_threaded_stages_are_faster(site, servers, timeline):
    assert SLOW_BUSY_BELOW > SLOW_FILE_SIZE // 4, (
        f"the kernel's send buffers may hold {spans.send_buffer_bound(SLOW_RCVBUF)} bytes: "
        f"{SLOW_FILE_SIZE}-byte replies no longer show when the server is sending them")
    site.add_file("slow.bin", os.urandom(SLOW_FILE_SIZE))
    times = {}
    for stage in (STAGE1, *THREADED_STAGES):
        server = servers(stage, site.root, "-q", "-t", "30")
        times[stage], timeline[f"{stage}: {SLOW_CLIENTS} slow readers"] = slow_fetch_all(
            server.port, SLOW_CLIENTS)
        server.stop()
    print(
        "\nslow readers, wall time for all: "
        + ", ".join(f"{stage} {t:.2f} s" for stage, t in times.items())
    )
    # Stage 1 serves one client at a time: no two replies are ever being sent together.
    sequential = timeline[f"{STAGE1}: {SLOW_CLIENTS} slow readers"]
    assert all(s.busy_until is not None for s in sequential), sequential
    assert busy_overlap(sequential) == 1, (
        f"stage 1 was sending {busy_overlap(sequential)} replies at once: {sequential}")
    for stage in THREADED_STAGES:
        made = timeline[f"{stage}: {SLOW_CLIENTS} slow readers"]
        assert busy_overlap(made) >= SLOW_CLIENTS // 2, (
            f"{stage} was sending at most {busy_overlap(made)} of {SLOW_CLIENTS} replies at "
            f"once: {made}")
        assert times[STAGE1] >= 3 * times[stage], (
            f"{stage} took {times[stage]:.2f} s against stage 1's {times[STAGE1]:.2f} s: "
            f"less than 3x faster with {SLOW_CLIENTS} slow readers"
        )


# --------------------------------------------------------------------------------------------
# Threads and deadlines
# --------------------------------------------------------------------------------------------


#: Idle connections of the thread-count test, and the addresses they come from (stage 4 gets
#: limits that admit them all, so that every one of them is a connection it holds).
IDLE_CONNECTIONS = 200
IDLE_IPS = ip_range("127.0.23.", 1, 20)


@stage_params([STAGE2, STAGE4])
def test_threads_per_connection(stage, site, servers):
    """Stage 2 runs a thread for each connection; stage 4 runs the same few threads whatever
    the number of connections (one event loop per core and a signal watcher)."""
    extra = ("-maxclient", "20", "-maxtotal", "400", "--status") if stage == STAGE4 else ()
    server = servers(stage, site.root, "-q", "-t", "30", *extra)
    baseline = server.threads()
    peak = baseline
    with Holder() as holder:
        for _ in range(IDLE_CONNECTIONS // 20):
            holder.open(server.port, 20, source_ips=IDLE_IPS)
            peak = max(peak, server.threads())
        if stage == STAGE2:
            # One thread for each idle connection, on top of the main and watcher threads.
            peak = wait_until(
                lambda: server.threads() if server.threads() >= baseline + IDLE_CONNECTIONS else 0,
                timeout=10,
                message=f"stage 2 to run a thread for each of {IDLE_CONNECTIONS} idle connections",
            )
        else:
            wait_until(lambda: server.status()["active"] == IDLE_CONNECTIONS + 1, timeout=5,
                       message=f"stage 4 to hold all {IDLE_CONNECTIONS} idle connections")
            peak = max(peak, server.threads())
            assert peak <= EVENT_THREAD_MAX, (
                f"stage 4 ran {peak} threads with {IDLE_CONNECTIONS} idle connections "
                f"({EVENT_THREAD_MAX} at most: one loop per core and a signal watcher)")
        holder.close_all()
    wait_until(
        lambda: server.threads() <= baseline + 2,
        timeout=5,
        message=f"threads to drop back to ~{baseline} after the clients closed",
    )
    print(f"\n{stage} threads: baseline {baseline}, peak {peak}, after {server.threads()}")
    assert server.alive()


@stage_params()
def test_read_deadline(stage, site, servers):
    server = servers(stage, site.root, "-t", "1")
    # Silent: closed without a word at the deadline.
    with connect(server.port) as silent:
        start = time.monotonic()
        data = read_to_eof(silent, start + 4)
        elapsed = time.monotonic() - start
    assert data == b"", f"a silent client got {data[:200]!r}"
    assert 0.7 <= elapsed <= 2.0, f"silent client closed after {elapsed:.2f} s with -t 1"
    # Partial head: told 408 at the deadline.
    with connect(server.port) as partial:
        start = time.monotonic()
        partial.sendall(b"GET /index.html HTTP/1.0\r\nHost: x")
        reply = parse_response(read_to_eof(partial, start + 4))
        elapsed = time.monotonic() - start
    assert reply.status_line == f"HTTP/1.0 408 {REASONS[408]}"
    assert len(reply.body) == int(reply.headers["content-length"])
    assert 0.7 <= elapsed <= 2.0, f"408 came after {elapsed:.2f} s with -t 1"


@stage_params()
def test_read_deadline_is_absolute(stage, site, servers):
    """Trickling one byte at a time must not extend the deadline."""
    server = servers(stage, site.root, "-t", "1")
    line = b"GET /index.html HTTP/1.0\r\nX-Slow: " + b"s" * 200
    elapsed, data = trickle(server.port, line, interval=0.1, give_up_after=4)
    assert elapsed <= 2.0, f"a trickling client held the connection for {elapsed:.2f} s with -t 1"
    assert data.startswith(b"HTTP/1.0 408 ") or data == b"", data[:200]


@stage_params()
def test_send_deadline_cuts_a_client_that_stops_reading(stage, site, servers):
    big = os.urandom(8 << 20)
    site.add_file("big.bin", big)
    extra = ("--status",) if stage in LIMITED_STAGES else ()
    server = servers(stage, site.root, "-t", "1", *extra)
    with connect(server.port, rcvbuf=4096) as stuck:
        stuck.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
        start = time.monotonic()
        wait_until(lambda: server.holds(stuck), timeout=2,
                   message="the server to take the stuck client")
        # The most threads seen while the stuck client is held. A sanitizer's runtime may start a
        # thread of its own beside the server's first one, so this, not the count before the
        # client came, is what its thread's end must bring the count under.
        most_threads = server.threads()
        while server.holds(stuck) and time.monotonic() - start < 4:
            most_threads = max(most_threads, server.threads())
            time.sleep(0.02)
        assert not server.holds(stuck), "the server still holds a client that stopped reading"
        elapsed = time.monotonic() - start
        if stage == STAGE1:
            # The next client is served once the stuck one has been cut.
            assert request(server.port, "/notes.txt", timeout=5).status == 200
        elif stage == STAGE2:
            wait_until(lambda: server.threads() < most_threads, timeout=2,
                       message="the stuck client's thread to end")
        else:  # stages 3 and 4: its slot comes back
            wait_until(lambda: server.status()["active"] == 1, timeout=2,
                       message="the stuck client's slot to come back")
        # What the stuck client can still read ends well short of the file.
        try:
            received = len(read_to_eof(stuck, time.monotonic() + 5))
        except ConnectionResetError:
            received = -1
    assert received < len(big), "the stuck client was sent the whole file"
    assert elapsed <= 3.5, f"a client that stopped reading held on for {elapsed:.2f} s with -t 1"


@stage_params(THREADED_STAGES)
def test_sigterm_with_idle_connections(stage, site, servers):
    server = servers(stage, site.root, "-t", "30")
    with Holder() as holder:
        holder.open(server.port, 10)
        assert request(server.port, "/").status == 200  # all 10 have been accepted by now
        start = time.monotonic()
        server.send_signal(signal.SIGTERM)
        status = server.wait(3.0)
        elapsed = time.monotonic() - start
    assert status == 0, f"{stage} did not exit 0 within 3 s of SIGTERM (status {status})"
    print(f"\n{stage} exited {elapsed:.2f} s after SIGTERM with 10 idle connections")


def test_stage1_sigterm_while_idle(site, servers):
    server = servers(STAGE1, site.root)
    assert request(server.port, "/").status == 200
    start = time.monotonic()
    assert server.stop(timeout=3.0) == 0
    assert time.monotonic() - start < 3.0
