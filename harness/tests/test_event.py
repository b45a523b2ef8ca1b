"""Stage 4, the event-driven server: what a thread per connection could not do, and what its
loops must never do. Everything stage 4 shares with stage 3 (replies, limits, deadlines, the
status page, the abuse suite) is tested by the modules parametrised over the stages; these
tests are about its own promises (issue 11):

- test_5000_idle_connections_on_a_few_threads: 5,000 idle connections from 5,000 loopback
  addresses: the thread count stays at most nproc + 3 and VmHWM at most 64 MiB throughout,
  fresh clients get their 200 within 0.5 s each while all of them are held, and every
  descriptor comes back once they close;
- test_slow_readers_never_delay_others: clients reading a 32 MiB file through a small receive
  window, slowly, while 50 fresh requests each complete within 0.5 s; every slow reader gets
  the file to the byte;
- test_limits_exact_under_concurrent_bursts: -maxclient 5 -maxtotal 20, threads connecting at
  the same instant from a few addresses: exactly 5 per address and 20 in all are admitted,
  every other one gets a complete 429 or 503, and /server-status agrees;
- test_sigterm_with_1000_connections_exits_0_within_2s: 900 idle connections and 100
  downloads stalled mid-file, then SIGTERM: exit 0 within 2 s;
- test_out_of_descriptors_does_not_spin: a low RLIMIT_NOFILE (soft and hard: stage 4 raises
  its soft limit to the hard one) and more idle clients than it can hold: no CPU spent while
  accept() fails, the connections it holds are still served, and it accepts again as soon as
  descriptors are free;
- test_memory_follows_open_connections_under_a_reset_storm (issue 22): -t 3600 and 300,000
  short connections from 500 addresses, each reset by its client (SO_LINGER 0): VmRSS grows
  by at most 3 MiB, since a closed connection leaves nothing behind in the timer heap.

Distinct clients are distinct source addresses of 127.0.0.0/8. Every loop is bounded in count
and time, every socket has a timeout, servers bind port 0 and the `servers` fixture stops
them. Figures worth a look are printed: run with -s.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import (
    EVENT_THREAD_MAX,
    STAGE4,
    Holder,
    binary,
    connect,
    ip_range,
    nothing_received,
    parse_response,
    read_to_eof,
    request,
    wait_until,
)
from test_abuse import (
    add_sparse,
    fd_count,
    out_of_descriptors_episode,
    recv_at_least,
    settled_fd_count,
    wait_fds_back,
)
from test_limits import assert_refusal
from test_security import is_sanitized

MiB = 1 << 20

# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def open_files_at_least(count: int):
    """Raises this process's RLIMIT_NOFILE to at least @p count for the block (a server started
    inside inherits it), and restores it afterwards. Skips the test if it may not."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= count:
        yield
        return
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (count, max(hard, count)))
    except (ValueError, OSError) as error:
        pytest.skip(f"cannot raise RLIMIT_NOFILE from {soft}/{hard} to {count}: {error}")
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def spread_addresses(second_octet: int, count: int) -> list[str]:
    """@p count distinct addresses 127.<second_octet>.x.y, y from 1 to 250."""
    assert count <= 250 * 256
    return [f"127.{second_octet}.{i // 250}.{i % 250 + 1}" for i in range(count)]


class ProcSampler:
    """Reads a process's thread count and VmHWM from /proc/PID/status every few milliseconds,
    in a thread of its own, for as long as the block lasts; keeps the peaks."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid = pid
        self.interval = interval
        self.peak_threads = 0
        self.hwm_kib = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def sample(self) -> None:
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Threads:"):
                    self.peak_threads = max(self.peak_threads, int(line.split()[1]))
                elif line.startswith("VmHWM:"):
                    self.hwm_kib = max(self.hwm_kib, int(line.split()[1]))
        self.samples += 1

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.sample()
            except OSError:  # the process is gone: the test will say so
                return
            self._stop.wait(self.interval)

    def __enter__(self) -> "ProcSampler":
        self.sample()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        with contextlib.suppress(OSError):
            self.sample()


def open_one_per_address(holder: Holder, port: int, addresses: list[str], budget: float,
                         every=None, each: int = 100) -> list[socket.socket]:
    """Opens one connection from each of @p addresses, in order, within @p budget seconds;
    calls @p every after each @p each connections."""
    opened = []
    deadline = time.monotonic() + budget
    for index, address in enumerate(addresses):
        assert time.monotonic() < deadline, (
            f"only {index} of {len(addresses)} connections opened in {budget} s")
        opened += holder.open(port, 1, source_ips=[address])
        if every and (index + 1) % each == 0:
            every()
    return opened


def readable(socks: list[socket.socket], timeout: float) -> list[socket.socket]:
    """Those of @p socks with something to read (data, EOF or a reset) within @p timeout
    seconds; poll(), so that descriptors above 1023 are fine."""
    poller = select.poll()
    by_fd = {sock.fileno(): sock for sock in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    return [by_fd[fd] for fd, _ in poller.poll(timeout * 1000)]


def timed_get(port: int, path: str, source_ip: str, expected: bytes) -> float:
    """GETs @p path from @p source_ip; asserts a 200 with @p expected; returns the seconds."""
    started = time.monotonic()
    reply = request(port, path, source_ip=source_ip, timeout=5)
    took = time.monotonic() - started
    assert reply.status == 200, f"GET {path} from {source_ip}: {reply.status_line!r}"
    assert reply.body == expected, f"GET {path} from {source_ip}: other bytes"
    return took


# --------------------------------------------------------------------------------------------
# 1. Thousands of idle connections on a few threads
# --------------------------------------------------------------------------------------------

#: Idle connections, one per address, and the wall time allowed to open them.
IDLE_COUNT = 5000
IDLE_OPEN_BUDGET = 60.0
IDLE_ADDRESSES = spread_addresses(4, IDLE_COUNT)  # 127.4.0.1 ... 127.4.19.250
#: Memory stage 4 may ever have resident (VmHWM) while it holds them.
IDLE_HWM_MAX = 64 * MiB
#: Fresh clients asking while all are held, each from an address of its own, and how soon
#: each must have its whole 200.
FRESH_CLIENTS = 20
FRESH_ADDRESSES = ip_range("127.5.0.", 1, FRESH_CLIENTS)
FRESH_DEADLINE = 0.5


def test_5000_idle_connections_on_a_few_threads(site, servers):
    sanitized = is_sanitized(binary(STAGE4))
    expected = site.bytes_of("notes.txt")
    with open_files_at_least(IDLE_COUNT + 1024):
        server = servers(STAGE4, site.root, "-q", "-maxclient", "12", "-maxtotal", "20000",
                         "-t", "30", "--status")
        timed_get(server.port, "/notes.txt", "127.5.1.1", expected)  # warm
        baseline = settled_fd_count(server.pid)
        with ProcSampler(server.pid) as sampler, Holder() as holder:
            started = time.monotonic()
            socks = open_one_per_address(holder, server.port, IDLE_ADDRESSES, IDLE_OPEN_BUDGET)
            opened_in = time.monotonic() - started
            held = wait_until(lambda: (s := server.status())["active"] == IDLE_COUNT + 1 and s,
                              timeout=10, message=f"all {IDLE_COUNT} connections admitted")
            assert held["refused_total"] == held["refused_per_client"] == 0, held
            took = [timed_get(server.port, "/notes.txt", ip, expected) for ip in FRESH_ADDRESSES]
            # None of the idle ones has been answered, closed or cut.
            told = readable(socks, 0)
            assert not told, f"{len(told)} idle connections were answered or closed"
            assert server.status()["active"] == IDLE_COUNT + 1
            fds_held = fd_count(server.pid)
            holder.close_all()
        after = wait_fds_back(server.pid, baseline, f"{IDLE_COUNT} idle connections closed")
    print(f"\nstage 4, {IDLE_COUNT} idle connections (opened in {opened_in:.1f} s): peak threads "
          f"{sampler.peak_threads} ({sampler.samples} samples), VmHWM {sampler.hwm_kib} kB, "
          f"descriptors {baseline} -> {fds_held} -> {after}; fresh clients served in "
          f"{min(took) * 1e3:.1f}-{max(took) * 1e3:.1f} ms")
    assert sampler.peak_threads <= EVENT_THREAD_MAX, (
        f"stage 4 ran {sampler.peak_threads} threads holding {IDLE_COUNT} connections "
        f"({EVENT_THREAD_MAX} at most: a loop per core and a signal watcher)")
    slow = [(ip, round(t, 3)) for ip, t in zip(FRESH_ADDRESSES, took) if t > FRESH_DEADLINE]
    assert not slow, (f"fresh clients waited longer than {FRESH_DEADLINE} s for their 200 "
                      f"beside {IDLE_COUNT} idle connections: {slow}")
    if sanitized:  # a sanitizer's shadow memory and quarantine are no part of the server's
        print(f"VmHWM bound of {IDLE_HWM_MAX // MiB} MiB not checked: sanitizer build")
    else:
        assert sampler.hwm_kib * 1024 <= IDLE_HWM_MAX, (
            f"stage 4's VmHWM reached {sampler.hwm_kib // 1024} MiB holding {IDLE_COUNT} idle "
            f"connections (at most {IDLE_HWM_MAX // MiB} MiB)")
    assert wait_until(lambda: (s := server.status())["active"] == 1 and s, timeout=5,
                      message="every slot back")["per_client"] == {"127.0.0.1": 1}


# --------------------------------------------------------------------------------------------
# 2. Slow readers never delay the others
# --------------------------------------------------------------------------------------------

#: Clients reading the big file through a small window, a chunk at a time with a pause.
SLOW_READERS = 4
SLOW_SIZE = 32 * MiB
SLOW_RCVBUF = 16 * 1024
SLOW_CHUNK = 16 * 1024
SLOW_PAUSE = 0.002
SLOW_BUDGET = 120.0
#: How far each slow reader must be into the file before the fresh requests start.
SLOW_HEAD_START = 1 * MiB
#: Fresh requests for a small file, one after the other, each done within FRESH_DEADLINE.
SLOW_FRESH = 50


def test_slow_readers_never_delay_others(site, servers):
    data = os.urandom(SLOW_SIZE)
    site.add_file("big.bin", data)
    small = site.bytes_of("notes.txt")
    server = servers(STAGE4, site.root, "-q", "-t", "30")
    progress = [0] * SLOW_READERS
    bodies: list[bytes | None] = [None] * SLOW_READERS
    errors: list[str] = []

    def reader(index: int):
        try:
            with connect(server.port, source_ip=f"127.0.24.{index + 1}", timeout=30,
                         rcvbuf=SLOW_RCVBUF) as sock:
                sock.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
                chunks = []
                deadline = time.monotonic() + SLOW_BUDGET
                while True:
                    assert time.monotonic() < deadline, f"{progress[index]} bytes in {SLOW_BUDGET} s"
                    chunk = sock.recv(SLOW_CHUNK)
                    if not chunk:
                        break
                    chunks.append(chunk)
                    progress[index] += len(chunk)
                    time.sleep(SLOW_PAUSE)
                bodies[index] = b"".join(chunks)
        except BaseException as error:  # reported by the test below
            errors.append(f"slow reader {index}: {error!r}")
            bodies[index] = b""

    readers = [threading.Thread(target=reader, args=(i,), daemon=True)
               for i in range(SLOW_READERS)]
    for thread in readers:
        thread.start()
    try:
        wait_until(lambda: min(progress) >= SLOW_HEAD_START or errors, timeout=20,
                   message=f"every slow reader {SLOW_HEAD_START} bytes into the file")
        assert not errors, errors
        took = [timed_get(server.port, "/notes.txt", f"127.0.25.{n % 10 + 1}", small)
                for n in range(SLOW_FRESH)]
        still_reading = sum(body is None for body in bodies)
        at = list(progress)
    finally:
        for thread in readers:
            thread.join(timeout=SLOW_BUDGET + 10)
    print(f"\nstage 4: {SLOW_FRESH} fresh requests beside {SLOW_READERS} slow readers of "
          f"{SLOW_SIZE // MiB} MiB: {min(took) * 1e3:.1f}-{max(took) * 1e3:.1f} ms each; the "
          f"readers were at {[n // MiB for n in at]} MiB, {still_reading} still reading")
    assert not errors, errors
    assert still_reading, "the slow readers were done before the fresh requests: nothing tested"
    slow = [round(t, 3) for t in took if t > FRESH_DEADLINE]
    assert not slow, (f"{len(slow)} of {SLOW_FRESH} fresh requests took longer than "
                      f"{FRESH_DEADLINE} s beside {SLOW_READERS} slow readers: {slow}")
    for index, body in enumerate(bodies):
        assert body is not None, f"slow reader {index} still running after {SLOW_BUDGET} s"
        reply = parse_response(body)
        assert reply.status == 200, f"slow reader {index}: {reply.status_line!r}"
        assert len(reply.body) == SLOW_SIZE, f"slow reader {index}: {len(reply.body)} bytes"
        assert reply.body == data, f"slow reader {index}: the bytes differ from the file's"


# --------------------------------------------------------------------------------------------
# 3. Limits exact under concurrent bursts
# --------------------------------------------------------------------------------------------

BURST_MAXCLIENT = 5
BURST_MAXTOTAL = 20
#: First burst: a few addresses, each trying more than its allowance: exactly BURST_MAXCLIENT
#: each get in, the rest are told 429; the total is not reached.
BURST_A_ADDRESSES = ip_range("127.0.26.", 1, 3)
BURST_A_EACH = 12
#: Second burst: new addresses, each within its allowance, more than the total has room for:
#: exactly the room left gets in, the rest are told 503.
BURST_B_ADDRESSES = ip_range("127.0.27.", 1, 10)
BURST_B_EACH = 3
BURST_ROUNDS = 3
#: How long the refusals may take to arrive, and the quiet time after which no more may come.
BURST_REFUSAL_WINDOW = 3.0
BURST_QUIET = 0.3


def burst(holder: Holder, port: int, sources: list[str]) -> list[tuple[str, socket.socket]]:
    """Connects from every one of @p sources at the same instant, one thread each; the
    sockets go to @p holder, which closes them."""
    barrier = threading.Barrier(len(sources), timeout=10)

    def one(source: str):
        barrier.wait()
        sock = connect(port, source_ip=source, timeout=5)
        holder.socks.append(sock)
        return source, sock

    with ThreadPoolExecutor(max_workers=len(sources)) as pool:
        return list(pool.map(one, sources))


def sort_out(clients: list[tuple[str, socket.socket]], admitted: int):
    """Waits for the refusals of a burst in which @p admitted clients should get in: returns
    (admitted per address, refusal codes). Every refusal must be a complete 429/503."""
    socks = [sock for _, sock in clients]
    told: set[socket.socket] = set()
    deadline = time.monotonic() + BURST_REFUSAL_WINDOW
    while len(told) < len(socks) - admitted and time.monotonic() < deadline:
        told.update(readable([s for s in socks if s not in told], 0.05))
    time.sleep(BURST_QUIET)  # one refusal too many would be there by now
    told.update(readable([s for s in socks if s not in told], 0))
    codes = Counter()
    for sock in told:
        reply = parse_response(read_to_eof(sock, time.monotonic() + 5))
        assert reply.status in (429, 503), f"a burst client got {reply.status_line!r}"
        assert_refusal(reply.raw, reply.status)
        codes[reply.status] += 1
    inside = Counter(source for source, sock in clients if sock not in told)
    for source, sock in clients:
        if sock not in told:
            assert nothing_received(sock), f"an admitted client of {source} was told something"
    return inside, codes


def status_when_room(server) -> tuple[dict, int]:
    """/server-status once it gets a slot; also how many times it was refused (503) before."""
    refused = 0

    def ask():
        nonlocal refused
        status = server.try_status()
        refused += status is None
        return status

    status = wait_until(ask, timeout=5, interval=0.05, message="/server-status to get a slot")
    return status, refused


def test_limits_exact_under_concurrent_bursts(site, servers):
    server = servers(STAGE4, site.root, "-q", "-maxclient", str(BURST_MAXCLIENT),
                     "-maxtotal", str(BURST_MAXTOTAL), "-t", "30", "--status")
    for round_ in range(1, BURST_ROUNDS + 1):
        before = server.status()
        assert before["active"] == 1, before
        with Holder() as holder:
            # Burst A: 3 addresses x 12 at once: 5 of each get in, 21 are told 429.
            clients_a = burst(holder, server.port,
                              [ip for ip in BURST_A_ADDRESSES for _ in range(BURST_A_EACH)])
            room_a = BURST_MAXCLIENT * len(BURST_A_ADDRESSES)
            inside_a, codes_a = sort_out(clients_a, room_a)
            assert inside_a == {ip: BURST_MAXCLIENT for ip in BURST_A_ADDRESSES}, (
                f"round {round_}, burst A: admitted per address {dict(inside_a)}, refusals "
                f"{dict(codes_a)} (-maxclient {BURST_MAXCLIENT})")
            assert codes_a == {429: len(clients_a) - room_a}, dict(codes_a)
            status = server.status()
            assert status["active"] == room_a + 1, status
            assert status["per_client"] == {**inside_a, "127.0.0.1": 1}, status["per_client"]
            assert status["refused_per_client"] - before["refused_per_client"] == codes_a[429]
            assert status["refused_total"] == before["refused_total"], status

            # Burst B: 10 new addresses x 3 at once: the 5 slots left go, 25 are told 503.
            clients_b = burst(holder, server.port,
                              [ip for ip in BURST_B_ADDRESSES for _ in range(BURST_B_EACH)])
            room_b = BURST_MAXTOTAL - room_a
            inside_b, codes_b = sort_out(clients_b, room_b)
            assert sum(inside_b.values()) == room_b, (
                f"round {round_}, burst B: {sum(inside_b.values())} admitted of "
                f"{len(clients_b)} with {room_b} slots left (-maxtotal {BURST_MAXTOTAL}): "
                f"{dict(inside_b)}, refusals {dict(codes_b)}")
            assert codes_b == {503: len(clients_b) - room_b}, dict(codes_b)

            # Full: the status page gets in once one of burst A's clients leaves.
            leaving_source, leaving = next((s, c) for s, c in clients_a if nothing_received(c))
            leaving.close()
            status, refused_polls = status_when_room(server)
            held = inside_a + inside_b
            held[leaving_source] -= 1
            assert status["active"] == BURST_MAXTOTAL, status
            assert status["per_client"] == {**{ip: n for ip, n in held.items() if n},
                                            "127.0.0.1": 1}, status["per_client"]
            assert status["refused_per_client"] - before["refused_per_client"] == codes_a[429]
            assert (status["refused_total"] - before["refused_total"]
                    == codes_b[503] + refused_polls), (status, refused_polls)
        wait_until(lambda: (s := server.try_status()) and s["active"] == 1, timeout=5,
                   message=f"every slot back after round {round_}")
        print(f"\nround {round_}: burst A {dict(inside_a)} admitted, {dict(codes_a)}; burst B "
              f"{sum(inside_b.values())} admitted, {dict(codes_b)}")


# --------------------------------------------------------------------------------------------
# 4. SIGTERM with 1,000 connections open
# --------------------------------------------------------------------------------------------

SHUTDOWN_IDLE = 900
SHUTDOWN_DOWNLOADS = 100
SHUTDOWN_DEADLINE = 2.0
#: The file the stalled downloads ask for (sparse): far more than socket buffers hold.
SHUTDOWN_FILE_SIZE = 64 * MiB


def test_sigterm_with_1000_connections_exits_0_within_2s(site, servers):
    add_sparse(site, "huge.bin", SHUTDOWN_FILE_SIZE)
    total = SHUTDOWN_IDLE + SHUTDOWN_DOWNLOADS
    with open_files_at_least(total + 1024):
        server = servers(STAGE4, site.root, "-q", "-maxclient", "20", "-maxtotal", "2000",
                         "-t", "30", "--status")
        with Holder() as holder:
            open_one_per_address(holder, server.port, spread_addresses(6, SHUTDOWN_IDLE), 30)
            for address in spread_addresses(7, SHUTDOWN_DOWNLOADS):
                sock = connect(server.port, source_ip=address, rcvbuf=4096)
                holder.socks.append(sock)
                sock.sendall(b"GET /huge.bin HTTP/1.0\r\n\r\n")
                first = recv_at_least(sock, 1024)  # under way; then this client stops reading
                assert first.startswith(b"HTTP/1.0 200 "), first[:100]
            wait_until(lambda: server.status()["active"] == total + 1, timeout=10,
                       message=f"all {total} connections held")
            started = time.monotonic()
            server.send_signal(signal.SIGTERM)
            status = server.wait(SHUTDOWN_DEADLINE + 3)
            elapsed = time.monotonic() - started
    print(f"\nstage 4 with {SHUTDOWN_IDLE} idle connections and {SHUTDOWN_DOWNLOADS} stalled "
          f"downloads: status {status} {elapsed:.2f} s after SIGTERM")
    assert status == 0, f"stage 4 ended with {status} after SIGTERM: {server.stderr()[-500:]!r}"
    assert elapsed <= SHUTDOWN_DEADLINE, (
        f"stage 4 took {elapsed:.2f} s to exit after SIGTERM with {total} connections open")


# --------------------------------------------------------------------------------------------
# 5. Out of descriptors: no busy loop, service goes on and comes back
# --------------------------------------------------------------------------------------------

EMFILE_NOFILE = 64
EMFILE_CLIENTS = 100
#: Of them, the first ones closed to give descriptors back; the others stay.
EMFILE_CLOSED = 70
EMFILE_EPISODE = 2.0
#: CPU seconds allowed over EMFILE_EPISODE: a loop that spun on accept() would burn all of it.
EMFILE_CPU_MAX = 0.1


def test_out_of_descriptors_does_not_spin(site, servers):
    def low_nofile():  # in the child: the hard limit too, or stage 4 would raise its soft one
        resource.setrlimit(resource.RLIMIT_NOFILE, (EMFILE_NOFILE, EMFILE_NOFILE))

    expected = site.bytes_of("notes.txt")
    server = servers(STAGE4, site.root, "-q", "-maxclient", "200", "-maxtotal", "200",
                     "-t", "30", preexec_fn=low_nofile)
    timed_get(server.port, "/notes.txt", "127.0.0.1", expected)
    idle = settled_fd_count(server.pid)
    with Holder() as holder:
        socks = holder.open(server.port, EMFILE_CLIENTS)
        full, cpu, wall = out_of_descriptors_episode(server, EMFILE_NOFILE, EMFILE_EPISODE,
                                                     "stage 4")
        assert "Too many open files" in server.stderr(), "the descriptor limit never bit"
        print(f"\nstage 4, RLIMIT_NOFILE {EMFILE_NOFILE}, {EMFILE_CLIENTS} idle clients: "
              f"descriptors {idle} -> {full}; {cpu:.3f} s CPU in {wall:.2f} s")
        assert cpu <= EMFILE_CPU_MAX, (
            f"stage 4 used {cpu:.2f} s CPU in {wall:.2f} s while out of descriptors: a busy loop")

        # Some leave: the clients still queued are taken in, and there is room for a new one.
        for sock in socks[:EMFILE_CLOSED]:
            sock.close()
        started = time.monotonic()
        tries = []

        def served():
            try:
                return timed_get(server.port, "/notes.txt", "127.0.0.1", expected)
            except (OSError, TimeoutError, AssertionError) as error:
                tries.append(repr(error)[:80])
                return None

        wait_until(served, timeout=5, interval=0.1,
                   message=f"a new client served once {EMFILE_CLOSED} clients left")
        recovered = time.monotonic() - started
        # Those that stayed were admitted in the end, and are served when they ask.
        last = socks[-1]
        last.sendall(b"GET /notes.txt HTTP/1.0\r\n\r\n")
        reply = parse_response(read_to_eof(last, time.monotonic() + 5))
        assert reply.status == 200 and reply.body == expected, reply.status_line
        print(f"served again {recovered:.2f} s after {EMFILE_CLOSED} clients left "
              f"({len(tries)} failed tries first)")
    after = wait_fds_back(server.pid, idle, "the idle clients closed")
    assert after <= idle + 2


# --------------------------------------------------------------------------------------------
# 6. Memory follows open connections, not connections ever made (issue 22)
# --------------------------------------------------------------------------------------------

#: The storm: client processes, each opening connections round-robin over its share of
#: STORM_ADDRESSES and resetting (SO_LINGER 0) the oldest once STORM_HOLD of its own are open,
#: so that each lives long enough for the server to accept it and start waiting on it. The
#: issue's storm lasted 12 s; this one is bounded by count (and by time), so that a slower
#: machine makes as many connections: at 16 bytes a closed connection, the heap that kept
#: their entries grew by 4.6 MiB over 300,000 of them.
STORM_WORKERS = 2
STORM_ADDRESSES = spread_addresses(8, 500)  # 127.8.0.1 ... 127.8.1.250
STORM_HOLD = 100
STORM_CONNECTIONS = 300_000
STORM_SECONDS = 60.0
#: A deadline far away: the old heap kept a closed connection's entry until it came due.
STORM_TIMEOUT = "3600"
#: Most VmRSS may grow between before and after the storm, with no connection open.
STORM_RSS_GROWTH_MAX = 3 * MiB
#: Fewest connections the server must have accepted for the memory figure to mean anything
#: (the old heap's 16 bytes each are then more than STORM_RSS_GROWTH_MAX).
STORM_MIN_ACCEPTED = 250_000

STORM_WORKER = r"""
import collections, socket, struct, sys, time
port, hold, most = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[4])
seconds = float(sys.argv[3])
addresses = sys.argv[5:]
open_now = collections.deque()
made = 0
deadline = time.monotonic() + seconds
reset = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends RST, no TIME_WAIT
while made < most and time.monotonic() < deadline:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, reset)
    try:
        sock.bind((addresses[made % len(addresses)], 0))
        sock.connect(("127.0.0.1", port))
    except OSError:
        sock.close()
        continue
    made += 1
    open_now.append(sock)
    if len(open_now) > hold:
        open_now.popleft().close()
while open_now:
    open_now.popleft().close()
print(made)
"""


def vm_rss(pid: int) -> int:
    """Bytes resident (VmRSS) of process @p pid now."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS: line in /proc status")


def test_memory_follows_open_connections_under_a_reset_storm(site, servers):
    sanitized = is_sanitized(binary(STAGE4))
    expected = site.bytes_of("notes.txt")
    server = servers(STAGE4, site.root, "-q", "-maxclient", "50", "-maxtotal", "2000",
                     "-t", STORM_TIMEOUT, "--status")
    for ip in ip_range("127.9.0.", 1, 20):  # warm: every loop has served and grown a little
        timed_get(server.port, "/notes.txt", ip, expected)
    before = vm_rss(server.pid)
    accepted_before = server.status()["accepted"]
    shares = [STORM_ADDRESSES[i::STORM_WORKERS] for i in range(STORM_WORKERS)]
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", STORM_WORKER, str(server.port), str(STORM_HOLD),
             str(STORM_SECONDS), str(STORM_CONNECTIONS // STORM_WORKERS), *share],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for share in shares
    ]
    made = 0
    for worker in workers:
        try:
            out, err = worker.communicate(timeout=STORM_SECONDS + 10)
        except subprocess.TimeoutExpired:
            worker.kill()
            out, err = worker.communicate()
        assert worker.returncode == 0, f"storm client failed: {err[-500:]!r}"
        made += int(out)
    # Every connection is gone once the server counts only the one asking for its status.
    status = wait_until(lambda: (s := server.status())["active"] == 1 and s, timeout=10,
                        message="every storm connection closed")
    after = vm_rss(server.pid)
    accepted = status["accepted"] - accepted_before - 1
    print(f"\nstage 4 -t {STORM_TIMEOUT}, a reset storm from "
          f"{len(STORM_ADDRESSES)} addresses: {made} connections made, {accepted} accepted "
          f"({status['refused_per_client'] + status['refused_total']} refused); VmRSS "
          f"{before / MiB:.1f} -> {after / MiB:.1f} MiB")
    timed_get(server.port, "/notes.txt", "127.9.1.1", expected)  # still serving
    if sanitized:  # a sanitizer's quarantine holds freed memory on purpose, and is slower
        print(f"VmRSS bound of {STORM_RSS_GROWTH_MAX // MiB} MiB not checked: sanitizer build")
        return
    assert accepted >= STORM_MIN_ACCEPTED, (
        f"the server accepted only {accepted} storm connections in {STORM_SECONDS:.0f} s: "
        f"too few for the memory bound to tell")
    assert after - before <= STORM_RSS_GROWTH_MAX, (
        f"stage 4's VmRSS grew by {(after - before) / MiB:.1f} MiB over {accepted} connections "
        f"that all closed (at most {STORM_RSS_GROWTH_MAX // MiB} MiB): memory follows "
        f"connections ever made, not those open")
