"""Abuse: what a hostile or broken client may send, and what the server must survive.

Every case checks the reply it provokes (or the cut it earns) AND that the server still
serves a normal GET correctly afterwards:

- traversal forms that test_http.py does not cover: `.%2e`, double encoding, backslashes,
  targets that are not origin-form, symlinks out of the root (to /etc, to a sibling `root2`);
- malformed framing: stray CR and NUL, header lines without a colon or with folding, heads
  too long or too large, each answered with a complete reply although the client sent more
  than the server read, and with the server's memory bounded;
- connection abuse: floods of connect-and-close and of resets mid-transfer (descriptor
  count flat, stage 3's and 4's limits intact), readers that stop, headers trickled a byte at
  a time;
- descriptor exhaustion under a low RLIMIT_NOFILE: no busy loop, recovery afterwards;
- a restart on the same port right after SIGKILL, while a connection sits in TIME_WAIT;
- log injection: control bytes in a request line reach the access log escaped, one line each.

Raw sockets throughout; every socket has a timeout and every loop a bound in count and time.
Figures worth a look (descriptor counts, CPU seconds, memory growth) are printed: run with -s.
"""

from __future__ import annotations

import contextlib
import os
import re
import resource
import select
import signal
import socket
import struct
import subprocess
import time
from pathlib import Path

import pytest

from conftest import (
    LISTENING_RE,
    LIMITED_STAGES,
    REASONS,
    SANITIZER_REPORT,
    STARTUP_DEADLINE,
    STOP_DEADLINE,
    THREADED_STAGES,
    Holder,
    Server,
    binary,
    connect,
    ip_range,
    nothing_received,
    parse_response,
    read_to_eof,
    request,
    stage_params,
    wait_until,
)

MiB = 1 << 20

#: The file every "does it still work" check fetches.
PROBE = "notes.txt"

#: How far the server's descriptor count may end above its idle count after a flood.
FD_TOLERANCE = 2
#: How long a flood's descriptors may take to be given back (refusals linger ~1 s in stages 3
#: and 4).
FD_SETTLE = 10.0

#: Stage 3's and 4's limits in the flood tests; the floods come from FLOOD_IPS in turn.
FLOOD_MAXCLIENT = 8
FLOOD_MAXTOTAL = 100
FLOOD_IPS = ip_range("127.0.4.", 1, 8)
#: The client that fills its per-client allowance after a flood.
CAPACITY_IP = "127.0.5.1"

#: Size of the sparse file the transfer tests ask for: far more than socket buffers hold.
HUGE_SIZE = 64 * MiB

#: The descriptor limit of the exhaustion test, and the idle connections opened against it.
NOFILE = 64
EXHAUSTION_CLIENTS = 100
#: Wall time over which the server's CPU use is measured while it is out of descriptors.
EXHAUSTION_EPISODE = 2.0
#: CPU seconds allowed in that episode; a server spinning on accept() would burn ~2.0.
EXHAUSTION_CPU_MAX = 0.5

#: The endless header block that must get a complete 431, and the endless flood after it.
HEAD_FLOOD_SIZE = 1 * MiB
ENDLESS_FLOOD_MAX = 64 * MiB
#: Memory (VmRSS peak, VmHWM) growth allowed over both. The parser keeps at most ~64 KiB of
#: head; a server that buffered what it is sent would grow by up to 64 MiB. The margin is
#: for the sanitizer builds, which add a few MiB of their own.
HEAD_FLOOD_GROWTH_MAX = 16 * MiB


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


def fd_count(pid: int) -> int:
    """Descriptors the process holds now, from /proc/PID/fd."""
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fd_count(pid: int, timeout: float = 3.0) -> int:
    """The descriptor count once three readings 50 ms apart agree (a reply's file may still
    be closing when its client sees EOF)."""
    readings: list[int] = []

    def steady():
        readings.append(fd_count(pid))
        return len(readings) >= 3 and len(set(readings[-3:])) == 1

    wait_until(steady, timeout=timeout, interval=0.05, message="a steady descriptor count")
    return readings[-1]


def wait_fds_back(pid: int, baseline: int, what: str) -> int:
    """Waits until the descriptor count is back within FD_TOLERANCE of @p baseline."""
    last = 0

    def back():
        nonlocal last
        last = fd_count(pid)
        return last <= baseline + FD_TOLERANCE

    try:
        wait_until(back, timeout=FD_SETTLE, interval=0.05)
    except AssertionError:
        pytest.fail(f"after {what} the server holds {last} descriptors, {baseline} before "
                    f"(tolerance {FD_TOLERANCE}, waited {FD_SETTLE} s): descriptors leak",
                    pytrace=False)
    settled = settled_fd_count(pid)
    assert settled <= baseline + FD_TOLERANCE, (
        f"after {what}: {settled} descriptors, {baseline} before")
    return settled


def out_of_descriptors_episode(server, nofile: int, seconds: float, who: str):
    """Waits until the server holds (nearly) all @p nofile descriptors, then measures the CPU
    it spends over @p seconds in that state. Returns (descriptors, CPU s, wall s); fails if
    the server died meanwhile."""
    full = wait_until(lambda: (n := fd_count(server.pid)) >= nofile - 2 and n,
                      timeout=5, message=f"{who} to reach its {nofile} descriptors")
    cpu_start, wall_start = cpu_seconds(server.pid), time.monotonic()
    time.sleep(seconds)  # the measured episode, not a synchronisation
    cpu = cpu_seconds(server.pid) - cpu_start
    wall = time.monotonic() - wall_start
    assert server.alive(), f"{who} died out of descriptors: {server.stderr()[-2000:]}"
    return full, cpu, wall


def cpu_seconds(pid: int) -> float:
    """utime + stime of the whole process (all threads), from /proc/PID/stat."""
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    # After "pid (comm)": state is field 3, utime field 14, stime field 15.
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def memory_kib(pid: int, key: str) -> int:
    """A kB figure of /proc/PID/status, e.g. VmRSS or VmHWM."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise AssertionError(f"no {key} line in /proc/{pid}/status")


def add_sparse(site, rel: str, size: int) -> Path:
    """A file of @p size zero bytes that takes no disk space."""
    path = site.root / rel
    with open(path, "wb") as out:
        out.truncate(size)
    return path


def assert_serves(server, site, source_ip: str | None = None):
    """The server still answers a normal GET with the right bytes."""
    reply = request(server.port, f"/{PROBE}", timeout=5, source_ip=source_ip)
    assert reply.status == 200, f"a normal GET /{PROBE} got {reply.status_line!r}"
    assert reply.body == site.bytes_of(PROBE), f"a normal GET /{PROBE} got other bytes"


def assert_complete_error(data: bytes, code: int):
    """A complete error reply: exact status line, Connection: close, the whole body."""
    reply = parse_response(data)
    assert reply.status_line == f"HTTP/1.0 {code} {REASONS[code]}", (
        f"expected {code}, got {reply.status_line!r}; body {reply.body[:200]!r}")
    assert reply.headers.get("connection", "").lower() == "close", reply.headers
    assert "content-length" in reply.headers, reply.headers
    assert len(reply.body) == int(reply.headers["content-length"]), (
        f"reply cut short: {len(reply.body)} body bytes, Content-Length "
        f"{reply.headers['content-length']}")
    return reply


def assert_no_leak(data: bytes, site, what: str):
    """Nothing outside the root (the planted secrets, /etc/passwd) is in @p data."""
    for marker in site.markers:
        assert marker.encode() not in data, f"{what} leaked a file outside the root"
    assert b"root:x:" not in data, f"{what} leaked /etc/passwd"


def exchange(port: int, data: bytes, chunk: int = 64 * 1024, timeout: float = 10.0,
             on_chunk=None, source_ip: str | None = None) -> bytes:
    """Sends @p data in chunks, half-closes, and reads the reply to EOF.

    A reset at any point fails the test with what was sent and received: an error reply must
    arrive whole even when the client sent more than the server read.
    """
    sent = 0
    received = bytearray()
    with connect(port, source_ip=source_ip, timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        try:
            while sent < len(data):
                assert time.monotonic() < deadline, f"sending took over {timeout} s"
                sock.sendall(data[sent:sent + chunk])
                sent = min(len(data), sent + chunk)
                if on_chunk:
                    on_chunk()
            sock.shutdown(socket.SHUT_WR)
            while True:
                remaining = deadline - time.monotonic()
                assert remaining > 0, (f"no EOF within {timeout} s; got {len(received)} bytes: "
                                       f"{bytes(received[:200])!r}")
                sock.settimeout(remaining)
                piece = sock.recv(65536)
                if not piece:
                    return bytes(received)
                received += piece
                assert len(received) <= MiB, "reply larger than any error page"
        except (ConnectionResetError, BrokenPipeError) as error:
            pytest.fail(f"connection reset ({error!r}) after the client sent {sent} of "
                        f"{len(data)} bytes and read {len(received)} reply bytes: "
                        f"{bytes(received[:200])!r}", pytrace=False)


def reset_close(sock: socket.socket):
    """Closes with SO_LINGER {1, 0}: the kernel sends RST instead of FIN."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def recv_at_least(sock: socket.socket, count: int, timeout: float = 5.0) -> bytes:
    """Reads until @p count bytes have arrived (or EOF); bounded by @p timeout."""
    got = bytearray()
    deadline = time.monotonic() + timeout
    while len(got) < count:
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"only {len(got)} of {count} bytes within {timeout} s"
        sock.settimeout(remaining)
        piece = sock.recv(count - len(got))
        if not piece:
            break
        got += piece
    return bytes(got)


def assert_recovered(stage: str, server, site, before: int, what: str):
    """After a flood: descriptors back near @p before, the server still serves, and (stages 3
    and 4) every slot came back."""
    after = wait_fds_back(server.pid, before, what)
    print(f"\n{stage}: descriptors before {before}, after {what} {after}")
    assert_serves(server, site)
    if stage in LIMITED_STAGES:
        assert_full_capacity(server, FLOOD_MAXCLIENT)
        assert_serves(server, site)


def assert_full_capacity(server, maxclient: int):
    """Stages 3 and 4 after abuse: every slot came back, and a client gets exactly its allowance."""
    def idle():
        status = server.try_status()
        ok = status and status["active"] == 1 and status["per_client"] == {"127.0.0.1": 1}
        return status if ok else None

    wait_until(idle, timeout=FD_SETTLE,
               message="active back to 1 (the status request itself)")
    with Holder() as holder:
        admitted = holder.open(server.port, maxclient, source_ips=[CAPACITY_IP])
        wait_until(lambda: server.status()["per_client"].get(CAPACITY_IP) == maxclient,
                   timeout=5, message=f"{maxclient} connections of {CAPACITY_IP} admitted")
        with connect(server.port, source_ip=CAPACITY_IP) as extra:
            assert_complete_error(read_to_eof(extra, time.monotonic() + 3), 429)
        refused = [i for i, sock in enumerate(admitted) if not nothing_received(sock)]
        assert not refused, f"connections {refused} of the allowance were answered or closed"
        assert server.status()["per_client"].get(CAPACITY_IP) == maxclient


def flood_server(servers, stage, site, *extra):
    """A server for the flood tests; stages 3 and 4 get room for them and the status page."""
    if stage in LIMITED_STAGES:
        extra = (*extra, "-maxclient", str(FLOOD_MAXCLIENT), "-maxtotal", str(FLOOD_MAXTOTAL),
                 "--status")
    return servers(stage, site.root, *extra)


class SpawnedServer(Server):
    """A Server started with process limits, which conftest's factory cannot set.

    Same discipline as the factory: `-p 0`, output to files, wait for the listening line.
    Used through spawned_server(), which always stops it.
    """

    def start(self, stage: str, root: Path, *extra: str, port: int = 0,
              nofile: int | None = None) -> "SpawnedServer":
        self.stage = stage
        args = [str(binary(stage)), "-p", str(port), "-r", str(root), *extra]

        def limit():  # runs in the child between fork and exec
            if nofile is not None:
                resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                         cwd=self.workdir, preexec_fn=limit)

        def listening():
            first = self.stdout().split("\n", 1)
            if len(first) == 2:
                return LISTENING_RE.match(first[0]) or pytest.fail(
                    f"unexpected first stdout line of {stage}: {first[0]!r}", pytrace=False)
            if self.proc.poll() is not None:
                pytest.fail(f"{stage} exited with status {self.proc.returncode} before "
                            f"listening; stderr {self.stderr()!r}", pytrace=False)
            return None

        match = wait_until(listening, timeout=STARTUP_DEADLINE, interval=0.01,
                           message=f"{stage}'s listening line")
        assert match["stage"] == stage
        self.host, self.port, self.root_printed = match["host"], int(match["port"]), match["root"]
        assert self.port > 0
        return self


@contextlib.contextmanager
def spawned_server(workdir: Path, stage: str, root: Path, *extra: str, port: int = 0,
                   nofile: int | None = None):
    """Starts a SpawnedServer and always stops it; checks it stopped cleanly (exit 0 on
    SIGTERM, no sanitizer report) unless the test ended it on purpose (returncode set)."""
    server = SpawnedServer(workdir)
    problem = None
    try:
        yield server.start(stage, root, *extra, port=port, nofile=nofile)
    finally:
        if server.proc is not None:
            ended_on_purpose = server.returncode is not None
            crashed = not ended_on_purpose and server.proc.poll() is not None
            status = server.stop()
            if crashed:
                problem = f"{stage} ended during the test with status {server.proc.returncode}"
            elif not ended_on_purpose and status != 0:
                problem = f"{stage} did not exit 0 within {STOP_DEADLINE} s of SIGTERM ({status})"
            if SANITIZER_REPORT.search(server.stderr()):
                problem = f"{stage} sanitizer report: {server.stderr()[-4000:]}"
    if problem:
        pytest.fail(problem, pytrace=False)


# --------------------------------------------------------------------------------------------
# Traversal forms
# --------------------------------------------------------------------------------------------

TRAVERSALS = {
    # id: (request line, statuses that are correct)
    "dot-pct2e": (b"GET /.%2e/secret.txt HTTP/1.0", (400,)),
    "pct2e-dot": (b"GET /%2e./secret.txt HTTP/1.0", (400,)),
    "dot-pct2e-from-sub": (b"GET /sub/.%2e/.%2e/secret.txt HTTP/1.0", (400,)),
    # "%%32%65" is no valid escape; a lenient decoder reading it as "%2e" must still not
    # decode a second time. Refused (400) or looked up as a literal name (404): never served.
    "double-encoded": (b"GET /%%32%65%%32%65/secret.txt HTTP/1.0", (400, 404)),
    # On POSIX a backslash is an ordinary byte: "..\..\secret.txt" is one (missing) name.
    "backslashes": (b"GET /..\\..\\secret.txt HTTP/1.0", (400, 404)),
    "encoded-backslashes": (b"GET /..%5c..%5csecret.txt HTTP/1.0", (400, 404)),
    "absolute-form-climb": (b"GET http://localhost/../../etc/passwd HTTP/1.0", (400,)),
    "relative-target": (b"GET ../x HTTP/1.0", (400,)),
    "asterisk": (b"GET * HTTP/1.0", (400,)),
    # Whatever lies outside the root is "not found", existing or not (no existence oracle).
    "symlink-to-etc": (b"GET /etc/passwd HTTP/1.0", (404,)),
    "symlink-to-etc-encoded": (b"GET /%65tc/passw%64 HTTP/1.0", (404,)),
    "symlink-to-sibling-file": (b"GET /escape HTTP/1.0", (404,)),  # -> ../root2/secret.txt
    "symlink-to-sibling-dir": (b"GET /sibling/secret.txt HTTP/1.0", (404,)),  # -> ../root2
}


@stage_params()
@pytest.mark.parametrize("line,allowed", TRAVERSALS.values(), ids=TRAVERSALS.keys())
def test_traversal_form_is_refused(stage, site, servers, line, allowed):
    # root2 extends the root's name: a prefix check without the trailing '/' would admit it.
    (site.root / "sibling").symlink_to("../root2")
    assert (site.root / "etc" / "passwd").read_bytes().startswith(b"root:x:")  # the bait works
    server = servers(stage, site.root)
    data = exchange(server.port, line + b"\r\n\r\n")
    assert_no_leak(data, site, repr(line))
    status = parse_response(data).status
    assert status in allowed, f"{line!r} got {status}, expected one of {allowed}"
    assert_complete_error(data, status)
    assert_serves(server, site)


# --------------------------------------------------------------------------------------------
# Malformed framing
# --------------------------------------------------------------------------------------------

TOO_MANY_HEADERS = "".join(f"X-H-{i}: v\r\n" for i in range(101)).encode()

FRAMING = {
    # id: (bytes, status)
    "bare-cr-in-request-line": (b"GET /index.html\rX HTTP/1.0\r\n\r\n", 400),
    "cr-cr-lf-ending": (b"GET /index.html HTTP/1.0\r\r\n\r\n", 400),
    "bare-cr-in-header-value": (b"GET / HTTP/1.0\r\nX-A: b\rc\r\n\r\n", 400),
    "header-without-colon": (b"GET / HTTP/1.0\r\nHost localhost\r\n\r\n", 400),
    "space-before-colon": (b"GET / HTTP/1.0\r\nHost :localhost\r\n\r\n", 400),
    "first-header-starts-with-space": (b"GET / HTTP/1.0\r\n Host: localhost\r\n\r\n", 400),
    "first-header-starts-with-tab": (b"GET / HTTP/1.0\r\n\tHost: localhost\r\n\r\n", 400),
    # obs-fold: the server's documented choice is to reject it.
    "folded-continuation": (b"GET / HTTP/1.0\r\nX-A: one\r\n two\r\nHost: x\r\n\r\n", 400),
    "nul-in-method": (b"G\x00T /index.html HTTP/1.0\r\n\r\n", 400),
    "nul-in-target": (b"GET /index.html\x00.txt HTTP/1.0\r\n\r\n", 400),
    "nul-in-header-name": (b"GET / HTTP/1.0\r\nX-\x00A: b\r\n\r\n", 400),
    "nul-in-header-value": (b"GET / HTTP/1.0\r\nX-A: b\x00c\r\n\r\n", 400),
    # The server stops reading after ~12 KiB; the other ~52 KiB must not cost the reply.
    "request-line-64k": (b"GET /" + b"a" * (64 * 1024) + b" HTTP/1.0\r\n\r\n", 414),
    "request-line-9k-unterminated": (b"GET /" + b"a" * (9 * 1024), 414),
    # 101 headers, then 256 KiB the server never parses.
    "101-headers-then-more": (b"GET / HTTP/1.0\r\n" + TOO_MANY_HEADERS + b"\r\n"
                              + b"z" * (256 * 1024), 431),
}


@stage_params()
@pytest.mark.parametrize("data,code", FRAMING.values(), ids=FRAMING.keys())
def test_malformed_framing_gets_complete_error(stage, site, servers, data, code):
    server = servers(stage, site.root)
    assert_complete_error(exchange(server.port, data), code)
    assert_serves(server, site)


def endless_head(size: int) -> bytes:
    """@p size bytes of a request head that never ends: 1 KiB header lines, no blank line,
    so the 64 KiB header-block limit bites before the 100-field one."""
    line = b"X-Fill: " + b"f" * 1014 + b"\r\n"
    return (b"GET / HTTP/1.0\r\n" + line * (size // len(line) + 1))[:size]


def endless_flood(port: int, limit: int, on_chunk, timeout: float = 30.0) -> int:
    """Sends a head that never ends until the server stops taking it (closes, resets, or
    leaves the socket full for 5 s) or @p limit bytes are sent; returns the bytes sent."""
    chunk = endless_head(64 * 1024 + 100)[100:]  # header lines only, no request line
    sent = 0
    with connect(port, timeout=5) as sock:
        deadline = time.monotonic() + timeout
        try:
            sock.sendall(b"GET / HTTP/1.0\r\n")
            while sent < limit and time.monotonic() < deadline:
                sock.sendall(chunk)
                sent += len(chunk)
                on_chunk()
        except (BrokenPipeError, ConnectionResetError, socket.timeout):
            pass  # the server stopped taking bytes: what this flood is waiting for
    return sent


@stage_params()
def test_endless_header_block_is_431_with_bounded_memory(stage, site, servers):
    server = servers(stage, site.root)
    pid = server.pid
    assert_serves(server, site)
    rss_before, hwm_before = memory_kib(pid, "VmRSS"), memory_kib(pid, "VmHWM")
    rss_peak = rss_before

    def sample():
        nonlocal rss_peak
        rss_peak = max(rss_peak, memory_kib(pid, "VmRSS"))

    # 1 MiB with no end, in 16 KiB chunks: a complete 431 though the server reads ~64 KiB.
    data = exchange(server.port, endless_head(HEAD_FLOOD_SIZE), chunk=16 * 1024,
                    on_chunk=sample)
    assert_complete_error(data, 431)
    # Then no end at all, as fast as the server takes it.
    flooded = endless_flood(server.port, ENDLESS_FLOOD_MAX, sample)
    sample()
    hwm_growth = (memory_kib(pid, "VmHWM") - hwm_before) * 1024
    rss_growth = (rss_peak - rss_before) * 1024
    print(f"\n{stage}: header floods (1 MiB, then {flooded / MiB:.1f} MiB taken): VmRSS "
          f"{rss_before} kB -> peak {rss_peak} kB (+{rss_growth // 1024} kB), "
          f"VmHWM +{hwm_growth // 1024} kB")
    growth = max(hwm_growth, rss_growth)
    assert growth < HEAD_FLOOD_GROWTH_MAX, (
        f"{stage} grew by {growth / MiB:.1f} MiB under header floods of 1 and "
        f"{flooded / MiB:.1f} MiB (limit {HEAD_FLOOD_GROWTH_MAX / MiB:.0f} MiB)")
    assert_serves(server, site)


# --------------------------------------------------------------------------------------------
# Connection abuse
# --------------------------------------------------------------------------------------------


@stage_params()
def test_connect_and_close_flood_leaks_nothing(stage, site, servers):
    server = flood_server(servers, stage, site, "-t", "5")
    assert_serves(server, site)
    before = settled_fd_count(server.pid)
    deadline = time.monotonic() + 30
    for i in range(1000):
        assert time.monotonic() < deadline, f"only {i} connect-and-close rounds in 30 s"
        connect(server.port, source_ip=FLOOD_IPS[i % len(FLOOD_IPS)]).close()
    assert_recovered(stage, server, site, before, "1000 connect-and-close")


@stage_params()
def test_reset_mid_transfer_flood_leaks_nothing(stage, site, servers):
    add_sparse(site, "huge.bin", HUGE_SIZE)
    server = flood_server(servers, stage, site, "-t", "5")
    assert_serves(server, site)
    before = settled_fd_count(server.pid)
    deadline = time.monotonic() + 40
    for i in range(200):
        assert time.monotonic() < deadline, f"only {i} reset rounds in 40 s"
        sock = connect(server.port, source_ip=FLOOD_IPS[i % len(FLOOD_IPS)])
        try:
            sock.sendall(b"GET /huge.bin HTTP/1.0\r\n\r\n")
            first = recv_at_least(sock, 1024)  # the transfer is under way
        finally:
            reset_close(sock)
        assert first.startswith(b"HTTP/1.0 200 "), f"round {i}: {first[:100]!r}"
    assert_recovered(stage, server, site, before, "200 resets mid-transfer")


@stage_params()
def test_reader_that_stops_is_cut_at_send_deadline(stage, site, servers):
    add_sparse(site, "huge.bin", HUGE_SIZE)
    server = servers(stage, site.root, "-t", "2")
    assert_serves(server, site)
    before = settled_fd_count(server.pid)
    with connect(server.port, rcvbuf=4096) as sock:
        sock.sendall(b"GET /huge.bin HTTP/1.0\r\n\r\n")
        first = recv_at_least(sock, 1024)
        stopped = time.monotonic()
        assert first.startswith(b"HTTP/1.0 200 "), first[:100]
        during = fd_count(server.pid)
        assert during >= before + 1, f"the transfer holds no descriptor ({during} vs {before})"
        # The connection's socket (and the file) are given back when the server cuts it.
        wait_until(lambda: fd_count(server.pid) <= before, timeout=10, interval=0.05,
                   message="the server to cut a client that stopped reading (-t 2)")
        elapsed = time.monotonic() - stopped
        # What is still in the pipe ends in EOF or a reset, well short of the file.
        received = len(first)
        end = time.monotonic() + 10
        try:
            while time.monotonic() < end:
                piece = sock.recv(1 << 20)
                if not piece:
                    break
                received += len(piece)
            else:
                pytest.fail(f"no EOF 10 s after the cut; {received} bytes read", pytrace=False)
        except ConnectionResetError:
            pass
    print(f"\n{stage}: stalled reader cut {elapsed:.2f} s after it stopped; descriptors "
          f"{before} -> {during} -> {fd_count(server.pid)}; it got {received} bytes")
    assert received < HUGE_SIZE, "the stalled reader was sent the whole file"
    # The send deadline is an idle limit of -t: cut about 2 s after the reader stopped (plus
    # what its buffers still took), not twice that.
    assert 1.0 <= elapsed <= 3.5, f"stalled reader cut after {elapsed:.2f} s with -t 2"
    assert_serves(server, site)


@stage_params()
def test_trickled_headers_are_cut_at_read_deadline(stage, site, servers):
    """One byte every 300 ms would take ~40 s; -t 2 must end it after ~2 s."""
    server = servers(stage, site.root, "-t", "2")
    trickle = b"GET /index.html HTTP/1.0\r\nX-Slow: " + b"s" * 100
    data = b""
    cut = False
    with connect(server.port) as sock:
        start = time.monotonic()
        for i in range(len(trickle)):
            if time.monotonic() - start > 10:
                break
            try:
                sock.sendall(trickle[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                cut = True
                break
            readable, _, _ = select.select([sock], [], [], 0.3)
            if readable:
                cut = True
                try:
                    data = sock.recv(65536)
                except ConnectionResetError:
                    data = b""
                break
        elapsed = time.monotonic() - start
        if data:
            sock.shutdown(socket.SHUT_WR)
            data += read_to_eof(sock, time.monotonic() + 5)
    print(f"\n{stage}: trickled head cut after {elapsed:.2f} s, {i + 1} bytes sent")
    assert cut, f"still trickling after {elapsed:.2f} s with -t 2"
    assert elapsed <= 4.5, f"a trickling client held on for {elapsed:.2f} s with -t 2"
    assert elapsed >= 1.5, f"cut after {elapsed:.2f} s, before the 2 s deadline"
    if data:
        assert_complete_error(data, 408)
    assert_serves(server, site)


# --------------------------------------------------------------------------------------------
# Descriptor exhaustion
# --------------------------------------------------------------------------------------------


@stage_params(THREADED_STAGES)
def test_descriptor_exhaustion_does_not_spin(stage, site, tmp_path):
    extra = ["-t", "30"]
    if stage in LIMITED_STAGES:  # let the descriptor limit bite, not the connection limits
        extra += ["-maxclient", "200", "-maxtotal", "200"]
    with spawned_server(tmp_path, stage, site.root, *extra, nofile=NOFILE) as server:
        assert_serves(server, site)
        idle = settled_fd_count(server.pid)
        with Holder() as holder:
            holder.open(server.port, EXHAUSTION_CLIENTS)
            full, cpu, wall = out_of_descriptors_episode(server, NOFILE, EXHAUSTION_EPISODE, stage)
        print(f"\n{stage}: RLIMIT_NOFILE {NOFILE}, {EXHAUSTION_CLIENTS} idle clients: "
              f"descriptors {idle} -> {full}; {cpu:.2f} s CPU in {wall:.2f} s wall")
        assert "Too many open files" in server.stderr(), "the descriptor limit never bit"
        assert cpu < EXHAUSTION_CPU_MAX, (
            f"{stage} used {cpu:.2f} s CPU in {wall:.2f} s while out of descriptors: a busy loop")

        # Clients gone: the server must recover and serve again within a few seconds.
        replies = []

        def probe():
            try:
                reply = request(server.port, f"/{PROBE}", timeout=2)
            except (OSError, TimeoutError) as error:
                replies.append(repr(error))
                return None
            replies.append(reply.status_line)
            return reply if reply.status == 200 else None

        try:
            reply = wait_until(probe, timeout=8, interval=0.2)
        except AssertionError:
            reply = None
        if reply is None:
            pytest.fail(f"{stage} did not serve again within 8 s of the clients closing; "
                        f"{len(replies)} GET /{PROBE} answered {sorted(set(replies))}; "
                        f"{fd_count(server.pid)} descriptors in /proc, {server.threads()} "
                        f"threads; stderr {server.stderr()[-300:]!r}", pytrace=False)
        assert reply.body == site.bytes_of(PROBE)
        after = wait_fds_back(server.pid, idle, "the idle clients closed")
        print(f"{stage}: recovered after {len(replies)} probe(s); descriptors back to {after}")


# --------------------------------------------------------------------------------------------
# Restart right after SIGKILL
# --------------------------------------------------------------------------------------------


def time_wait_on(port: int) -> int:
    """Sockets in TIME_WAIT whose local port is @p port (the server closed first)."""
    count = 0
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError), open(table, encoding="ascii") as rows:
            next(rows)
            for row in rows:
                fields = row.split()
                if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "06":
                    count += 1
    return count


@stage_params()
def test_restart_on_same_port_right_after_sigkill(stage, site, tmp_path, servers):
    with spawned_server(tmp_path, stage, site.root) as first:
        port = first.port
        assert_serves(first, site)
        # The server closes first, so its side of that connection lingers in TIME_WAIT.
        wait_until(lambda: time_wait_on(port), timeout=3, message=f"TIME_WAIT on port {port}")
        first.proc.send_signal(signal.SIGKILL)
        assert first.wait(STOP_DEADLINE) == -signal.SIGKILL
        assert time_wait_on(port), "TIME_WAIT gone before the restart: the test proves nothing"
    second = servers(stage, site.root, port=port)  # fails the test if it cannot bind
    assert second.port == port
    assert_serves(second, site)


# --------------------------------------------------------------------------------------------
# Log injection
# --------------------------------------------------------------------------------------------

LOG_LINE_RE = re.compile(
    r'^(?P<host>\S+) - - \[[^\]]+\] "(?P<request>(?:[^"\\]|\\.)*)" (?P<status>\d{3}) '
    r'(?P<bytes>\d+|-)$'
)

FORGED = b'127.0.0.9 - - [01/Jan/2020:00:00:00 +0000] "GET /forged HTTP/1.0" 200 1'

LOG_INJECTIONS = [
    # (bytes sent, status, how the logged request must start). A rejected line may be logged
    # with the CR of its own line ending (escaped), hence "start".
    (b"GET /a\x1b[31mX HTTP/1.0\r\n\r\n", 400, r"GET /a\x1b[31mX HTTP/1.0"),
    (b"GET /x HTTP/1.0\rInjected\r\n\r\n", 400, r"GET /x HTTP/1.0\x0dInjected"),
    # Bare LF ends the request line; what follows looks like a log line, not a header.
    (b"GET /x HTTP/1.0\n" + FORGED + b"\n\n", 400, "GET /x HTTP/1.0"),
    (b"GET /x\x1b]0;title\x07 HTTP/1.0\n\n", 400, r"GET /x\x1b]0;title\x07 HTTP/1.0"),
    (b"GET /a%0d%0a" + FORGED.replace(b" ", b"%20") + b" HTTP/1.0\r\n\r\n", 404,
     "GET /a%0d%0a127.0.0.9%20"),
    (b"GET /caf\xc3\xa9 HTTP/1.0\r\n\r\n", 404, r"GET /caf\xc3\xa9 HTTP/1.0"),
    (b'GET /a"b HTTP/1.0\r\n\r\n', 404, r'GET /a\"b HTTP/1.0'),
]


@stage_params()
def test_control_bytes_reach_the_log_escaped(stage, site, servers):
    server = servers(stage, site.root)  # no -q: the access log is what is checked
    for number, (data, code, logged) in enumerate(LOG_INJECTIONS, start=1):
        client = f"127.0.6.{number}"
        before = len(server.log_lines())
        assert_complete_error(exchange(server.port, data, source_ip=client), code)
        # The line is written before the connection closes, so it is there by now.
        new = server.log_lines()[before:]
        assert len(new) == 1, f"{data!r} made {len(new)} log lines: {new!r}"
        match = LOG_LINE_RE.match(new[0])
        assert match, f"{data!r} made a malformed log line {new[0]!r}"
        assert match["host"] == client and match["status"] == str(code), new[0]
        assert match["request"].startswith(logged), (
            f"{data!r} logged as {match['request']!r}, expected it to start with {logged!r}")
        if b"\n" + FORGED in data:  # the forged text is no part of the request line
            assert "forged" not in match["request"], new[0]
    log = server.stdout_path.read_bytes()
    raw_controls = sorted({chr(b) for b in log if (b < 0x20 and b != 0x0A) or b >= 0x7F})
    assert not raw_controls, f"raw control or non-ASCII bytes in the log: {raw_controls!r}"
    clients = {"127.0.0.1"} | {f"127.0.6.{n}" for n in range(1, len(LOG_INJECTIONS) + 1)}
    for line in server.log_lines():
        match = LOG_LINE_RE.match(line)
        assert match and match["host"] in clients, f"forged or malformed log line {line!r}"
    assert_serves(server, site)
