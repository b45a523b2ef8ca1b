"""How the stages behave with many clients: blocking (stage 1) versus threads (stages 2, 3)
and event loops (stage 4), concurrent downloads, slow readers, threads per connection,
deadlines and shutdown with open connections.
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

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


def get_over(sock: socket.socket, path: str, deadline: float):
    """Sends GET @p path on an open socket and returns the parsed response."""
    sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
    return parse_response(read_to_eof(sock, deadline))


# --------------------------------------------------------------------------------------------
# One silent client
# --------------------------------------------------------------------------------------------


def test_stage1_silent_client_blocks_the_next(site, servers):
    server = servers(STAGE1, site.root, "-t", "30")
    with connect(server.port) as silent, connect(server.port) as second:
        second.sendall(GET_INDEX)
        second.settimeout(1.0)
        with pytest.raises(socket.timeout):
            data = second.recv(1)
            pytest.fail(f"stage 1 answered while another client held it: {data!r}")
        silent.close()
        reply = parse_response(read_to_eof(second, time.monotonic() + 5))
    assert reply.status == 200
    assert reply.body == site.bytes_of("index.html")


@stage_params(THREADED_STAGES)
def test_threaded_stages_serve_while_clients_stall(stage, site, servers):
    server = servers(stage, site.root, "-t", "30")
    with Holder() as holder:
        stalled = holder.open(server.port, 5)
        stalled[0].sendall(b"GET /ind")  # some stall mid-request, some before a byte
        stalled[1].sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n")
        start = time.monotonic()
        reply = request(server.port, "/notes.txt", timeout=5)
        elapsed = time.monotonic() - start
    assert reply.status == 200
    assert reply.body == site.bytes_of("notes.txt")
    assert elapsed < 1.0, f"{stage} took {elapsed:.2f} s to answer beside 5 stalled clients"


# --------------------------------------------------------------------------------------------
# Many clients at once
# --------------------------------------------------------------------------------------------


@stage_params()
def test_concurrent_fetch_mixed_sizes(stage, site, servers):
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

    def client(i: int):
        path = paths[i % len(paths)]
        with connect(server.port, source_ip=ips[i % len(ips)], timeout=30) as sock:
            barrier.wait()
            reply = get_over(sock, path, time.monotonic() + 60)
        return path, reply

    with ThreadPoolExecutor(max_workers=24) as pool:
        results = list(pool.map(client, range(24)))
    for path, reply in results:
        assert reply.status == 200, (path, reply.status_line)
        assert reply.body == expected[path], f"{path}: body differs ({len(reply.body)} bytes)"
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


def slow_fetch_all(port: int, count: int) -> float:
    """@p count clients with a small receive buffer each read the slow file in 16 KiB chunks
    with a 5 ms pause between reads, all at once; returns the wall time for all of them."""
    barrier = threading.Barrier(count + 1, timeout=30)

    def client(_):
        with connect(port, timeout=60, rcvbuf=SLOW_RCVBUF) as sock:
            barrier.wait()
            sock.sendall(b"GET /slow.bin HTTP/1.0\r\n\r\n")
            chunks = []
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                chunk = sock.recv(SLOW_READ)
                if not chunk:
                    break
                chunks.append(chunk)
                time.sleep(SLOW_PAUSE)
            return parse_response(b"".join(chunks))

    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(client, i) for i in range(count)]
        barrier.wait()
        start = time.monotonic()
        replies = [f.result(timeout=120) for f in futures]
        elapsed = time.monotonic() - start
    for reply in replies:
        assert reply.status == 200, reply.status_line
        assert len(reply.body) == SLOW_FILE_SIZE
    return elapsed


def test_slow_readers_threaded_stages_are_faster(site, servers):
    site.add_file("slow.bin", os.urandom(SLOW_FILE_SIZE))
    times = {}
    for stage in (STAGE1, *THREADED_STAGES):
        server = servers(stage, site.root, "-q", "-t", "30")
        times[stage] = slow_fetch_all(server.port, SLOW_CLIENTS)
        server.stop()
    print(
        "\nslow readers, wall time for all: "
        + ", ".join(f"{stage} {t:.2f} s" for stage, t in times.items())
    )
    for stage in THREADED_STAGES:
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
    baseline_threads = server.threads()
    with connect(server.port, rcvbuf=4096) as stuck:
        stuck.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
        start = time.monotonic()
        if stage == STAGE1:
            # The next client is served once the stuck one has been cut.
            reply = request(server.port, "/notes.txt", timeout=5)
            assert reply.status == 200
        elif stage == STAGE2:
            # Compared with the count while stuck, not the one at start: a sanitizer's runtime
            # may add a thread of its own on the way.
            stuck_threads = wait_until(
                lambda: (n := server.threads()) >= baseline_threads + 1 and n, timeout=2,
                message="the stuck client's thread")
            wait_until(lambda: server.threads() < stuck_threads, timeout=4,
                       message="the stuck client's thread to end")
        else:  # stages 3 and 4: the slot shows it
            wait_until(lambda: server.status()["active"] == 2, timeout=2,
                       message="the stuck client to hold a slot")
            wait_until(lambda: server.status()["active"] == 1, timeout=4,
                       message="the stuck client's slot to come back")
        elapsed = time.monotonic() - start
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
