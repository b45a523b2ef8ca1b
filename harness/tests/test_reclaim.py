"""Stage 3's --reclaim-idle, which stage 4 shares (every test runs on both): when the total limit is full, the oldest connection that has not
sent a whole request head gives its slot to the newcomer (and is told 408), so a flood of idle
or trickling connections cannot lock everybody else out. Without the flag, the course's
semantics hold: a slot counts until close, and the next client gets 503.

Every flood here comes from its own loopback addresses (127.0.x.y), so the per-client limit
never applies and only the total limit is in play.
"""

from __future__ import annotations

import socket
import time

from bench.lib.flood import Trickler
from conftest import (
    LIMITED_STAGES,
    REASONS,
    Holder,
    connect,
    ip_range,
    nothing_received,
    parse_response,
    read_to_eof,
    request,
    stage_params,
    wait_until,
)

#: Most seconds a fresh client may wait for its 200 while a flood holds every slot.
FRESH_DEADLINE = 1.0


def fresh_requests_all_served(port: int, ips: list[str]) -> list[float]:
    """One request from each of @p ips; each must be a 200 within FRESH_DEADLINE."""
    elapsed = []
    for ip in ips:
        start = time.monotonic()
        reply = request(port, "/notes.txt", source_ip=ip, timeout=FRESH_DEADLINE + 2)
        took = time.monotonic() - start
        assert reply.status == 200, f"{ip}: {reply.status_line}"
        assert took <= FRESH_DEADLINE, f"{ip} waited {took:.2f} s for its 200"
        elapsed.append(took)
    return elapsed


@stage_params(LIMITED_STAGES)
def test_without_the_flag_a_full_server_refuses(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "20", "-t", "30")
    with Holder() as holder:
        holder.open(server.port, 20, source_ips=ip_range("127.0.8.", 1, 20))
        reply = parse_response(
            read_to_eof(connect(server.port, source_ip="127.0.8.21", timeout=5),
                        time.monotonic() + 2))
        assert reply.status_line == f"HTTP/1.0 503 {REASONS[503]}"
        # The idle ones were not touched.
        for sock in holder.socks:
            assert nothing_received(sock), "an admitted idle connection was told something"


@stage_params(LIMITED_STAGES)
def test_idle_flood_does_not_lock_out_fresh_clients(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "20", "-t", "10",
                     "--reclaim-idle", "--status")
    with Holder() as holder:
        flood = holder.open(server.port, 100, source_ips=ip_range("127.0.9.", 1, 100))
        time.sleep(0.2)  # let the server admit or refuse them all
        fresh_requests_all_served(server.port, ip_range("127.0.10.", 1, 20))
        # The reclaimed ones were told why: a complete 408, not a silent close.
        told = 0
        for sock in flood[:20]:
            data = read_to_eof(sock, time.monotonic() + 2)
            if data:
                reply = parse_response(data)
                assert reply.status in (408, 503), reply.status_line
                told += reply.status == 408
        assert told >= 1
        status = server.status()
        assert status["reclaimed"] >= 20
        assert status["active"] <= 20
    log = "\n".join(server.log_lines())
    assert '" 408 ' in log


@stage_params(LIMITED_STAGES)
def test_trickle_flood_does_not_lock_out_fresh_clients(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "20", "-t", "10",
                     "--reclaim-idle", "--status")
    with Holder() as holder:
        flood = holder.open(server.port, 60, source_ips=ip_range("127.0.11.", 1, 60))
        with Trickler(flood):  # the bench's slowloris: 3 bytes every 0.3 s, never done
            time.sleep(0.7)  # a couple of trickles have gone out
            fresh_requests_all_served(server.port, ip_range("127.0.12.", 1, 20))
    assert server.alive()


@stage_params(LIMITED_STAGES)
def test_slow_download_is_never_reclaimed(stage, site, servers):
    # A client reading a 4 MiB file slowly holds its slot for seconds after its head arrived:
    # floods and fresh clients must not take it, and every byte must arrive intact.
    data = bytes(range(256)) * (4 * 4096)
    site.add_file("big.bin", data)
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "5", "-t", "10",
                     "--reclaim-idle")
    slow = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.bind(("127.0.13.1", 0))
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
    # The reply has begun, so the server has the whole head: from now on the slot is safe.
    slow.settimeout(5)
    received = bytearray(slow.recv(4096))
    assert received.startswith(b"HTTP/1.0 200 OK"), bytes(received[:100])
    try:
        with Holder() as holder:
            for round_ in range(4):
                holder.open(server.port, 10, source_ips=ip_range(f"127.0.{14 + round_}.", 1, 10))
                fresh_requests_all_served(server.port, [f"127.0.20.{round_ + 1}"])
                slow.settimeout(5)
                for _ in range(8):  # a little, slowly
                    chunk = slow.recv(4096)
                    assert chunk, "the slow download was cut"
                    received += chunk
                    time.sleep(0.02)
        slow.settimeout(10)
        received += read_to_eof(slow, time.monotonic() + 20)
    finally:
        slow.close()
    reply = parse_response(bytes(received))
    assert reply.status == 200, reply.status_line
    assert reply.body == data


@stage_params(LIMITED_STAGES)
def test_reclaimed_slots_come_back_and_counts_stay_exact(stage, site, servers):
    server = servers(stage, site.root, "-maxclient", "12", "-maxtotal", "10", "-t", "10",
                     "--reclaim-idle", "--status")
    with Holder() as holder:
        holder.open(server.port, 50, source_ips=ip_range("127.0.21.", 1, 50))
        fresh_requests_all_served(server.port, ip_range("127.0.22.", 1, 10))
        holder.close_all()

    def settled():
        status = server.status()
        return status if status["active"] == 1 else None

    status = wait_until(settled, timeout=5, message="every slot back")
    assert status["per_client"] == {"127.0.0.1": 1}
    assert status["reclaimed"] >= 10
