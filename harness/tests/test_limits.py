"""Stage 3's admission control, which stage 4 shares: per-client and total limits, refusals
under load, thread bound, read deadlines freeing slots, /server-status, and the limit options.
Every test runs on both stages; where they differ (the thread count) each has its expectation.

Distinct clients are distinct source addresses: every socket here binds to an address of
127.0.0.0/8 before it connects.
"""

from __future__ import annotations

import select
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (
    EVENT_THREAD_MAX,
    LIMITED_STAGES,
    REASONS,
    STAGE4,
    Holder,
    binary,
    connect,
    ip_range,
    nothing_received,
    parse_response,
    read_to_eof,
    request,
    run_cli,
    stage_params,
    trickle,
    wait_until,
)
from test_security import is_sanitized

STATUS_KEYS = {
    "active",
    "per_client",
    "accepted",
    "served",
    "refused_per_client",
    "refused_total",
    "timed_out",
    "reclaimed",
    "max_per_client",
    "max_total",
    "status_views",
    "slots",
}


def assert_refusal(data: bytes, code: int):
    """A complete 429/503 reply: status, Retry-After, Content-Length matching, HTML body."""
    reply = parse_response(data)
    assert reply.status_line == f"HTTP/1.0 {code} {REASONS[code]}", reply.status_line
    assert reply.headers.get("connection", "").lower() == "close"
    assert reply.headers.get("retry-after", "").isdigit(), reply.headers
    assert "content-length" in reply.headers, reply.headers
    assert len(reply.body) == int(reply.headers["content-length"]), "body cut short"
    assert reply.headers.get("content-type", "").startswith("text/html")
    assert b"<html" in reply.body.lower() or b"<!doctype html" in reply.body.lower()
    return reply


def wait_idle(server, timeout: float = 3.0) -> dict:
    """Polls /server-status until only the asking connection holds a slot.

    A poll made before the server has seen the last clients leave may find it still full and
    be refused (503), which the server counts: the snapshot returned leaves those out of
    ``refused_total``, so that it counts the test's own clients only.
    """
    refused_polls = 0

    def idle():
        nonlocal refused_polls
        status = server.try_status()  # refused while the server is still full
        if status is None:
            refused_polls += 1
        elif status["active"] == 1 and status["per_client"] == {"127.0.0.1": 1}:
            return status
        return None

    status = wait_until(
        idle,
        timeout=timeout,
        message="every slot to come back (active == 1: the status request itself)",
    )
    return {**status, "refused_total": status["refused_total"] - refused_polls}


def refused_without_sending(port: int, source_ip: str, code: int, within: float = 1.0):
    """Connects from @p source_ip, sends nothing, and expects a complete @p code at once."""
    with connect(port, source_ip=source_ip, timeout=5) as sock:
        start = time.monotonic()
        data = read_to_eof(sock, start + within)
        elapsed = time.monotonic() - start
    reply = assert_refusal(data, code)
    assert elapsed < within, f"refusal took {elapsed:.2f} s"
    return reply


def refused_after_request(port: int, source_ip: str, code: int, timeout: float = 5.0):
    """Connects, sends a request at once, and expects a complete @p code."""
    with connect(port, source_ip=source_ip, timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the refusal may already be there; what matters is reading it in full
        data = read_to_eof(sock, deadline)
    return assert_refusal(data, code)


# --------------------------------------------------------------------------------------------
# Per-client and total limits
# --------------------------------------------------------------------------------------------


@stage_params(LIMITED_STAGES)
def test_per_client_limit(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "60", "-t", "30",
                     "--status")
    with Holder() as holder:
        held = holder.open(server.port, 12, source_ips=["127.0.0.2"])
        status = wait_until(lambda: (s := server.status())["active"] == 13 and s,
                            timeout=3, message="12 held connections and the status request")
        assert status["per_client"] == {"127.0.0.2": 12, "127.0.0.1": 1}

        refused_without_sending(server.port, "127.0.0.2", 429)
        refused_after_request(server.port, "127.0.0.2", 429)

        # Another address is not affected.
        reply = request(server.port, "/index.html", source_ip="127.0.0.3")
        assert reply.status == 200
        assert reply.body == site.bytes_of("index.html")

        # A held connection that finally asks is served: being held is not being refused.
        held[0].sendall(b"GET /notes.txt HTTP/1.0\r\n\r\n")
        reply = parse_response(read_to_eof(held[0], time.monotonic() + 5))
        assert reply.status == 200
        assert reply.body == site.bytes_of("notes.txt")

        # Its slot came back with its close: 127.0.0.2 may open one more.
        wait_until(lambda: server.status()["per_client"].get("127.0.0.2") == 11, timeout=3,
                   message="the served connection's slot to come back")
        reply = request(server.port, "/data.json", source_ip="127.0.0.2")
        assert reply.status == 200

        status = server.status()
        assert status["refused_per_client"] == 2
        assert status["refused_total"] == 0
    wait_idle(server)


@stage_params(LIMITED_STAGES)
def test_total_limit(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "60", "-t", "30",
                     "--status")
    ips = ip_range("127.0.1.", 1, 10)
    with Holder() as holder:
        holder.open(server.port, 60, source_ips=ips)  # 6 from each of 10 addresses
        refused_without_sending(server.port, "127.0.1.11", 503)
        refused_after_request(server.port, "127.0.1.12", 503)
        refused_without_sending(server.port, "127.0.0.1", 503)  # even the status page
        holder.close_all()
    status = wait_idle(server)
    assert status["refused_total"] == 3
    assert status["refused_per_client"] == 0
    for ip in ips + ["127.0.1.11"]:
        reply = request(server.port, "/notes.txt", source_ip=ip)
        assert reply.status == 200, (ip, reply.status_line)


@stage_params(LIMITED_STAGES)
def test_per_client_limit_is_checked_before_total(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "3", "-maxtotal", "6", "-t", "30")
    with Holder() as holder:
        holder.open(server.port, 3, source_ips=["127.0.5.1"])
        holder.open(server.port, 3, source_ips=["127.0.5.2"])
        # Both limits are reached for 127.0.5.1: the answer is about the client.
        refused_without_sending(server.port, "127.0.5.1", 429)
        # A newcomer hits only the total.
        refused_without_sending(server.port, "127.0.5.3", 503)


@stage_params(LIMITED_STAGES)
def test_refusal_flood_gets_complete_replies(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "60", "-t", "30",
                     "-q", "--status")
    with Holder() as holder:
        holder.open(server.port, 12, source_ips=["127.0.0.2"])
        holder.open(server.port, 48, source_ips=ip_range("127.0.3.", 1, 6))  # 8 each
        # 150 from the full client (429) and 150 from new addresses (503), all sending a
        # request straight away.
        jobs = [("127.0.0.2", 429)] * 150 + [(ip, 503) for ip in ip_range("127.0.6.", 1, 150)]
        barrier = threading.Barrier(30, timeout=10)

        def worker(chunk):
            barrier.wait()
            return [refused_after_request(server.port, ip, code).status for ip, code in chunk]

        chunks = [jobs[i::30] for i in range(30)]
        with ThreadPoolExecutor(max_workers=30) as pool:
            results = [status for part in pool.map(worker, chunks) for status in part]
        assert results.count(429) == 150
        assert results.count(503) == 150
        holder.close_all()
    assert server.alive()
    status = wait_idle(server)
    assert status["refused_per_client"] == 150
    assert status["refused_total"] == 150
    for ip in ("127.0.0.1", "127.0.0.2", "127.0.6.1"):
        assert request(server.port, "/", source_ip=ip).status == 200


@stage_params(LIMITED_STAGES)
def test_threads_stay_bounded_under_idle_flood(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "60", "-t", "30", "-q")
    peak = [server.threads()]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            try:
                peak[0] = max(peak[0], server.threads())
            except OSError:
                return
            stop.wait(0.005)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        with Holder() as holder:
            # 200 idle connections from 20 addresses, 10 each: no per-client refusals.
            socks = holder.open(server.port, 200, source_ips=ip_range("127.0.7.", 1, 20))
            # Exactly 140 are told 503 at once. Which ones is not fixed: stage 4's loops
            # take clients from one queue, but two loops may ask the limiter in either order.
            told = set()
            deadline = time.monotonic() + 5
            while len(told) < 140 and time.monotonic() < deadline:
                readable, _, _ = select.select([s for s in socks if s not in told], [], [], 0.1)
                told.update(readable)
            for sock in told:
                assert_refusal(read_to_eof(sock, deadline), 503)
            time.sleep(0.1)  # a 141st refusal would be there by now
            silent = [sock for sock in socks if sock not in told]
            for sock in silent:  # admitted: nothing said to them
                assert nothing_received(sock), "an admitted idle connection was told something"
            assert len(told) == 140 and len(silent) == 60, (
                f"{len(told)} refused and {len(silent)} admitted with -maxtotal 60")
            time.sleep(0.1)  # let the sampler see the settled state as well
    finally:
        stop.set()
        sampler.join(timeout=2)
    print(f"\n{stage} peak threads with -maxtotal 60 and 200 idle connections: {peak[0]}")
    if stage == STAGE4:
        # No thread per connection: the loops it started with, whatever the load.
        assert peak[0] <= EVENT_THREAD_MAX, (
            f"{peak[0]} threads with 60 idle connections ({EVENT_THREAD_MAX} at most)")
    else:
        # -maxtotal + 4 (main, signal watcher, refuser, reaper), and a sanitizer's own thread
        bound = 64 + (1 if is_sanitized(binary(stage)) else 0)
        assert peak[0] <= bound, f"{peak[0]} threads with -maxtotal 60 (at most {bound})"
        assert peak[0] >= 60, f"only {peak[0]} threads: were the 60 admitted clients served?"


# --------------------------------------------------------------------------------------------
# Deadlines free slots
# --------------------------------------------------------------------------------------------


@stage_params(LIMITED_STAGES)
def test_slow_clients_are_cut_and_free_their_slots(stage, site, servers):
    server = servers(stage, site.root, "-t", "2", "--status")
    results = {}

    def idle():
        with connect(server.port, source_ip="127.0.8.1", timeout=5) as sock:
            start = time.monotonic()
            data = read_to_eof(sock, start + 4)
            results["idle"] = (time.monotonic() - start, data)

    def trickler():
        line = b"GET /index.html HTTP/1.0\r\nX-Slow: " + b"s" * 100
        results["trickle"] = trickle(server.port, line, interval=0.2, give_up_after=5,
                                     source_ip="127.0.8.2")

    threads = [threading.Thread(target=idle), threading.Thread(target=trickler)]
    for t in threads:
        t.start()
    wait_until(lambda: server.status()["active"] == 3, timeout=2,
               message="both slow clients to hold a slot")
    for t in threads:
        t.join(timeout=10)
    idle_time, idle_data = results["idle"]
    assert idle_data == b"", f"idle client got {idle_data[:200]!r}"
    assert 1.5 <= idle_time <= 3.0, f"idle client closed after {idle_time:.2f} s with -t 2"
    trickle_time, trickle_data = results["trickle"]
    assert trickle_time <= 2.7, f"trickling client held on for {trickle_time:.2f} s with -t 2"
    if trickle_data:
        reply = parse_response(trickle_data)
        assert reply.status_line == f"HTTP/1.0 408 {REASONS[408]}"
    status = wait_idle(server)
    assert status["timed_out"] == 2


# --------------------------------------------------------------------------------------------
# /server-status and options
# --------------------------------------------------------------------------------------------


@stage_params(LIMITED_STAGES)
def test_status_counters(stage, site, servers):
    # -maxclient 3: the polls come from 127.0.0.1 too, and on a loaded machine a finished poll
    # may hold its place until its thread is reaped; two such must not turn a poll away.
    server = servers(stage, site.root, "-maxclient", "3", "-maxtotal", "6", "--status")
    first = server.status()
    assert set(first) == STATUS_KEYS
    assert first["active"] == 1
    assert first["per_client"] == {"127.0.0.1": 1}
    assert first["max_per_client"] == 3
    assert first["max_total"] == 6
    assert first["refused_per_client"] == 0
    assert first["refused_total"] == 0
    assert first["timed_out"] == 0
    assert first["accepted"] == 1
    assert first["served"] == 0  # counted when the status request itself ends

    assert request(server.port, "/", source_ip="127.0.9.1").status == 200
    assert request(server.port, "/missing", source_ip="127.0.9.1").status == 404
    polls = 0

    def held_state():
        nonlocal polls
        polls += 1
        status = server.status()
        return status if status["per_client"] == {"127.0.9.2": 3, "127.0.0.1": 1} else None

    with Holder() as holder:
        holder.open(server.port, 3, source_ips=["127.0.9.2"])
        refused_without_sending(server.port, "127.0.9.2", 429)
        status = wait_until(held_state, timeout=3, message="only the three held connections")
        assert status["active"] == 4
        assert status["refused_per_client"] == 1
        assert status["refused_total"] == 0
        # first status, "/", "/missing", three held, one refused, and the polls since
        assert status["accepted"] == first["accepted"] + 2 + 3 + 1 + polls
    status = wait_idle(server)
    # Served to the end: the first status, "/", "/missing" and every poll but the last one.
    assert status["served"] >= 3 + polls


@stage_params(LIMITED_STAGES)
def test_status_page_counts_against_the_limits(stage, site, servers):
    # A decision (docs/stage3.md, "The status page and the limits"), pinned: the status page
    # is no way around -maxtotal, even for a loopback client the rules admit.
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "3", "-t", "30",
                     "--status")
    with Holder() as holder:
        holder.open(server.port, 3, source_ips=ip_range("127.0.31.", 1, 3))
        full = wait_until(lambda: server.try_status() is None, timeout=3,
                          message="the server to be full")
        assert full
        reply = request(server.port, "/server-status")
        assert reply.status_line == f"HTTP/1.0 503 {REASONS[503]}", reply.status_line
        assert b"per_client" not in reply.body
    status = wait_until(server.try_status, timeout=5, message="a slot to come back")
    assert status["refused_total"] >= 2


@pytest.mark.parametrize(
    "args",
    [
        ["-maxclient", "0"],
        ["-maxtotal", "-1"],
        ["-maxclient", "many"],
        ["-maxtotal", "0"],
    ],
    ids=["maxclient-0", "maxtotal-negative", "maxclient-text", "maxtotal-0"],
)
@stage_params(LIMITED_STAGES)
def test_bad_limits_exit_2(stage, tmp_path, args):
    proc = run_cli(stage, "-p", "0", "-r", str(tmp_path), *args)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.decode(errors="replace").strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got {lines!r}"


@stage_params(LIMITED_STAGES)
def test_status_page_off_by_default(stage, site, servers):
    server = servers(stage, site.root)
    assert request(server.port, "/server-status").status == 404
