"""The idle-connection flood: what thousands of silent clients cost each stage, and who still
gets in.

For one freshly started stage:

1. **Unloaded rate.** A fresh client address (FRESH_IP) runs a closed loop for ``window``
   seconds: ``clients`` threads, each fetching the 1 KiB file over a new connection, the next
   request as soon as the previous one ended. *Admitted requests per second* is the number of
   200 replies divided by the elapsed time of the loop.
2. **Flood.** ``count`` connections are opened, each from its own loopback address
   (127.1.x.y, then 127.3.x.y past 64,000; one connection per address, so the per-client
   limit of stages 3 and 4 never applies), and
   none of them sends a byte. Every ``sample_every`` connections, once the server's thread
   count has settled, Threads, VmRSS and VmHWM are read from /proc/PID/status: the
   threads-vs-open-connections series. Right after opening, each flood socket is classified:
   answered 503 or 429 (refused at once), closed without answer, or still held (accepted and
   waiting, or queued in the listen backlog).
3. **Admitted rate under the flood.** With every flood socket still open, the same closed
   loop as in 1 runs again from FRESH_IP. Replies are counted as admitted (200), refused
   (429/503; the thread then waits REFUSAL_BACKOFF before its next try, as a client honouring
   Retry-After would, only shorter), or failed (no reply within ``request_timeout``). The
   ratio *admitted/s under the flood ÷ admitted/s unloaded* is the figure reported.
4. **Recovery** (servers with limits only): if nothing was admitted in 3, the loop goes on
   until the first 200 and reports how long after the flood was fully open that came — the
   flood's admitted connections hold their slots until the server's read deadline (``-t``).

The *trickle* variant is the same, except that from the moment it is opened every flood
connection sends TRICKLE_BYTES bytes of a request head every TRICKLE_PERIOD seconds and never
finishes it: a slowloris client, which an idle-timeout that only looks for silence would miss.

VmHWM is the server's peak resident set over its whole life: the server is started fresh for
this test, so that is the peak of steps 1–4.
"""

from __future__ import annotations

import errno
import select
import socket
import statistics
import threading
import time
from dataclasses import dataclass, field

from .client import FetchError, fetch
from .servers import proc_status

#: The address the measuring client uses; no flood connection comes from it.
FRESH_IP = "127.2.0.1"
#: Pause after a 429/503 before the measuring client tries again.
REFUSAL_BACKOFF = 0.01
#: How long opening one flood connection may take before it counts as failed.
CONNECT_TIMEOUT = 3.0
#: Consecutive failed flood connections after which the flood stops growing.
MAX_CONSECUTIVE_CONNECT_ERRORS = 10
#: Trickle flood: seconds between two sends on each connection, and bytes per send.
TRICKLE_PERIOD = 0.3
TRICKLE_BYTES = 3
#: What a trickling connection sends, a few bytes at a time: a head that never ends.
TRICKLE_HEAD = b"GET /index.html HTTP/1.0\r\nX-Slow: " + b"a" * 4000


#: Flood addresses per /16 block: 127.N.a.b with a from 0 to 255 and b from 1 to 250.
IPS_PER_BLOCK = 256 * 250
#: The /16 blocks the flood takes its addresses from, in order (127.2 is FRESH_IP's).
FLOOD_BLOCKS = (1, 3)


def flood_ips(count: int) -> list[str]:
    """@p count distinct loopback addresses: 127.1.a.b (b from 1 to 250), then 127.3.a.b."""
    if count > IPS_PER_BLOCK * len(FLOOD_BLOCKS):
        raise ValueError(f"at most {IPS_PER_BLOCK * len(FLOOD_BLOCKS)} flood addresses")
    ips = []
    for i in range(count):
        block, j = divmod(i, IPS_PER_BLOCK)
        ips.append(f"127.{FLOOD_BLOCKS[block]}.{j // 250}.{j % 250 + 1}")
    return ips


@dataclass
class Sample:
    """The server's state with ``open_connections`` flood connections open."""

    open_connections: int
    threads: int
    vmrss_kib: int
    vmhwm_kib: int
    answered: int  #: flood sockets the server has answered or closed so far
    phase: str = "opening"  #: "opening", or "held" (after the admitted-rate loop)


@dataclass
class LoopResult:
    """One closed loop of the measuring client."""

    seconds: float = 0.0
    admitted: int = 0
    refused: int = 0
    failed: int = 0
    admitted_latencies: list[float] = field(default_factory=list)
    first_admitted_at: float | None = None  #: seconds after the loop started

    @property
    def attempts(self) -> int:
        return self.admitted + self.refused + self.failed

    @property
    def admitted_per_s(self) -> float:
        return self.admitted / self.seconds if self.seconds > 0 else 0.0

    @property
    def p50_ms(self) -> float | None:
        if not self.admitted_latencies:
            return None
        return statistics.median(self.admitted_latencies) * 1000


@dataclass
class FloodResult:
    """Everything measured for one stage."""

    stage: str
    command: str
    target: int  #: flood connections to open
    variant: str = "idle"  #: "idle" or "trickle"
    opened: int = 0
    connect_errors: int = 0
    held: int = 0
    refused_503: int = 0
    refused_429: int = 0
    closed: int = 0
    samples: list[Sample] = field(default_factory=list)
    threads_idle: int = 0
    max_threads: int = 0
    vmhwm_kib: int = 0
    unloaded: LoopResult = field(default_factory=LoopResult)
    loaded: LoopResult = field(default_factory=LoopResult)
    recovery_s: float | None = None  #: first 200 after the flood was open (None: none seen)
    recovery_note: str = ""

    @property
    def rate_ratio(self) -> float | None:
        if self.unloaded.admitted_per_s <= 0:
            return None
        return self.loaded.admitted_per_s / self.unloaded.admitted_per_s


def closed_loop(port: int, path: str, size: int, clients: int, seconds: float,
                request_timeout: float, stop_at_first_admitted: bool = False) -> LoopResult:
    """@p clients threads from FRESH_IP fetch @p path back to back for @p seconds."""
    result = LoopResult()
    lock = threading.Lock()
    start = time.perf_counter()
    end = start + seconds
    stop = threading.Event()

    def worker() -> None:
        while not stop.is_set() and time.perf_counter() < end:
            try:
                reply = fetch(port, path, expect_size=size, timeout=request_timeout,
                              source_ip=FRESH_IP, accept_status=(200, 429, 503))
            except FetchError:
                with lock:
                    result.failed += 1
                continue
            with lock:
                if reply.status == 200:
                    result.admitted += 1
                    result.admitted_latencies.append(reply.seconds)
                    if result.first_admitted_at is None:
                        result.first_admitted_at = time.perf_counter() - start
                    if stop_at_first_admitted:
                        stop.set()
                else:
                    result.refused += 1
            if reply.status != 200:
                time.sleep(REFUSAL_BACKOFF)

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(seconds + request_timeout + 5)
    result.seconds = time.perf_counter() - start
    return result


class Trickler:
    """Sends a few more bytes of an endless head on every flood socket, every TRICKLE_PERIOD."""

    def __init__(self, socks: list[socket.socket]):
        self._socks = socks
        self._sent = [0] * len(socks)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> "Trickler":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)

    def __enter__(self) -> "Trickler":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _run(self) -> None:
        while not self._stop.wait(TRICKLE_PERIOD):
            for i, sock in enumerate(self._socks):
                done = self._sent[i]
                if done < 0 or done + TRICKLE_BYTES > len(TRICKLE_HEAD):
                    continue
                try:
                    sock.send(TRICKLE_HEAD[done:done + TRICKLE_BYTES], socket.MSG_DONTWAIT)
                    self._sent[i] = done + TRICKLE_BYTES
                except OSError:
                    self._sent[i] = -1  # answered and closed by the server: leave it be


def settled_status(pid: int, limit: float = 0.5) -> dict[str, int]:
    """/proc status once Threads has not changed for three reads 10 ms apart (or @p limit)."""
    deadline = time.monotonic() + limit
    last = proc_status(pid)
    same = 0
    while same < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
        now = proc_status(pid)
        same = same + 1 if now.get("Threads") == last.get("Threads") else 0
        last = now
    return last


def _answered(poller: select.poll) -> int:
    """Flood sockets with something to read (a reply) or closed by the server."""
    return len(poller.poll(0))


def classify(sock: socket.socket) -> str:
    """'503', '429', 'closed' (EOF or reset without a reply) or 'held' (nothing yet)."""
    sock.setblocking(False)
    try:
        data = sock.recv(16, socket.MSG_PEEK)
    except BlockingIOError:
        return "held"
    except OSError as error:
        if error.errno in (errno.ECONNRESET, errno.EPIPE):
            return "closed"
        raise
    if not data:
        return "closed"
    if data.startswith(b"HTTP/1.") and data[9:12] in (b"503", b"429"):
        return data[9:12].decode()
    return "closed"  # something else: treat as not held


def open_flood(port: int, pid: int, count: int, sample_every: int, result: FloodResult,
               socks: list[socket.socket]) -> None:
    """Opens @p count idle connections into @p socks, sampling the server as they open."""
    poller = select.poll()

    def sample() -> None:
        status = settled_status(pid)
        result.samples.append(Sample(len(socks), status.get("Threads", 0),
                                     status.get("VmRSS", 0), status.get("VmHWM", 0),
                                     _answered(poller)))

    sample()
    consecutive_errors = 0
    for ip in flood_ips(count):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(CONNECT_TIMEOUT)
            sock.bind((ip, 0))
            sock.connect(("127.0.0.1", port))
        except OSError:
            sock.close()
            result.connect_errors += 1
            consecutive_errors += 1
            if consecutive_errors >= MAX_CONSECUTIVE_CONNECT_ERRORS:
                break
            continue
        consecutive_errors = 0
        socks.append(sock)
        poller.register(sock, select.POLLIN)
        if len(socks) % sample_every == 0:
            sample()
    if len(socks) % sample_every:
        sample()
    result.opened = len(socks)


def run(server, path: str, size: int, count: int, clients: int, window: float,
        request_timeout: float, sample_every: int, recovery_limit: float | None,
        trickle: bool = False) -> FloodResult:
    """Steps 1–4 of the module docstring against @p server (started, unloaded)."""
    result = FloodResult(stage=server.name, command=server.describe(), target=count,
                         variant="trickle" if trickle else "idle")
    result.unloaded = closed_loop(server.port, path, size, clients, window, request_timeout)
    result.threads_idle = settled_status(server.pid).get("Threads", 0)

    socks: list[socket.socket] = []
    trickler = None
    try:
        open_flood(server.port, server.pid, count, sample_every, result, socks)
        opened_at = time.perf_counter()
        if trickle:
            trickler = Trickler(socks).start()
        for sock in socks:
            verdict = classify(sock)
            if verdict == "held":
                result.held += 1
            elif verdict == "503":
                result.refused_503 += 1
            elif verdict == "429":
                result.refused_429 += 1
            else:
                result.closed += 1

        loaded_start = time.perf_counter()
        result.loaded = closed_loop(server.port, path, size, clients, window, request_timeout)
        status = proc_status(server.pid)
        result.samples.append(Sample(len(socks), status.get("Threads", 0),
                                     status.get("VmRSS", 0), status.get("VmHWM", 0),
                                     len(socks) - result.held, "held"))
        if result.loaded.first_admitted_at is not None:
            result.recovery_s = loaded_start - opened_at + result.loaded.first_admitted_at
        elif recovery_limit is not None:
            more_start = time.perf_counter()
            remaining = recovery_limit - (more_start - opened_at)
            if remaining > 0:
                more = closed_loop(server.port, path, size, clients, remaining,
                                   request_timeout, stop_at_first_admitted=True)
                if more.first_admitted_at is not None:
                    result.recovery_s = more_start - opened_at + more.first_admitted_at
            if result.recovery_s is None:
                result.recovery_note = f"no request admitted within {recovery_limit:.0f} s"
        else:
            result.recovery_note = f"none within {window:.0f} s (not waited for)"
        final = proc_status(server.pid)
        result.vmhwm_kib = final.get("VmHWM", 0)
        result.max_threads = max([s.threads for s in result.samples] + [final.get("Threads", 0)])
    finally:
        if trickler is not None:
            trickler.stop()
        for sock in socks:
            sock.close()
    return result
