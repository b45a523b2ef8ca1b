"""A raw-socket HTTP/1.0 client that checks every byte count, and the two testcases.

Each request is one connection: connect, send ``GET path HTTP/1.0``, read to EOF. A reply
counts only if its status is 200, its Content-Length (when sent) matches the body, and the
body has exactly the size of the file on disk; anything else raises FetchError.

Testcase 1 fetches the many small files and testcase 2 the few large ones, each
- sequentially: one client fetches every file, one after the other;
- concurrently: ``clients`` threads share the same list, each taking the next file not yet
  taken, until the list is empty.
The time is wall-clock from the moment all threads are ready until the last one finishes.
"""

from __future__ import annotations

import re
import resource
import socket
import threading
import time
from dataclasses import dataclass

#: Bytes per recv() call; large enough that reading a large file is not syscall-bound.
RECV_CHUNK = 256 * 1024
#: Longest response head accepted.
MAX_HEAD = 64 * 1024

# One receive buffer per thread, reused by every request the thread makes.
_buffers = threading.local()

_STATUS_RE = re.compile(rb"^HTTP/(\d)\.(\d) (\d{3})")
_LENGTH_RE = re.compile(rb"^content-length:\s*(\d+)\s*$", re.I | re.M)


class FetchError(Exception):
    """A request that failed: no connection, timeout, bad status or wrong byte count."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


@dataclass
class Reply:
    """What one request got."""

    status: int
    body_bytes: int
    seconds: float  #: from connect() to EOF


def fetch(port: int, path: str, *, expect_size: int | None = None, timeout: float = 30.0,
          source_ip: str | None = None, accept_status: tuple[int, ...] = (200,)) -> Reply:
    """GET @p path over a fresh connection and read the reply to EOF.

    @p timeout bounds the whole exchange. A status outside @p accept_status raises FetchError
    (whose ``status`` says which); for 200, the body must have @p expect_size bytes.
    """
    start = time.perf_counter()
    deadline = start + timeout
    request = (f"GET {path} HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n"
               f"User-Agent: lab-bench/1.0\r\n\r\n").encode("ascii")
    view = getattr(_buffers, "view", None)
    if view is None:
        view = _buffers.view = memoryview(bytearray(RECV_CHUNK))
    head = bytearray()
    head_done = False
    body = 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.settimeout(timeout)
        if source_ip is not None:
            sock.bind((source_ip, 0))
        sock.connect(("127.0.0.1", port))
        sock.sendall(request)
        while True:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                raise FetchError(f"GET {path}: no EOF within {timeout} s")
            sock.settimeout(remaining)
            n = sock.recv_into(view)
            if n == 0:
                break
            if head_done:
                body += n
                continue
            head += view[:n]
            end = head.find(b"\r\n\r\n")
            if end >= 0:
                head_done = True
                body = len(head) - end - 4
                del head[end:]
            elif len(head) > MAX_HEAD:
                raise FetchError(f"GET {path}: response head longer than {MAX_HEAD} bytes")
    except socket.timeout as error:
        raise FetchError(f"GET {path}: timed out after {timeout} s") from error
    except OSError as error:
        raise FetchError(f"GET {path}: {error}") from error
    finally:
        sock.close()
    seconds = time.perf_counter() - start
    if not head_done:
        raise FetchError(f"GET {path}: connection closed before the end of the head "
                         f"({bytes(head[:80])!r})")
    match = _STATUS_RE.match(head)
    if not match:
        raise FetchError(f"GET {path}: bad status line {bytes(head[:80])!r}")
    status = int(match[3])
    if status not in accept_status:
        raise FetchError(f"GET {path}: status {status}", status=status)
    length = _LENGTH_RE.search(head)
    if length and int(length[1]) != body:
        raise FetchError(f"GET {path}: Content-Length {int(length[1])} but {body} body bytes",
                         status=status)
    if status == 200 and expect_size is not None and body != expect_size:
        raise FetchError(f"GET {path}: {body} bytes, the file has {expect_size}", status=status)
    return Reply(status, body, seconds)


def listen_overflows() -> int | None:
    """The kernel's count of connections dropped because a listen queue was full.

    TcpExt ListenOverflows in /proc/net/netstat: system-wide, so other programs running at
    the same time add to it too. A jump while one server is measured usually means that
    server's backlog is too short (a dropped SYN is retried after 1 s).
    """
    try:
        with open("/proc/net/netstat", encoding="ascii") as netstat:
            lines = netstat.read().splitlines()
    except OSError:
        return None
    for names, values in zip(lines, lines[1:]):
        if names.startswith("TcpExt:") and values.startswith("TcpExt:"):
            table = dict(zip(names.split()[1:], values.split()[1:]))
            return int(table["ListenOverflows"]) if "ListenOverflows" in table else None
    return None


@dataclass
class RunResult:
    """One sequential or concurrent pass over a list of files."""

    seconds: float
    files: int
    bytes: int
    error: str = ""
    #: CPU time (user + system) this client process used during the pass / wall time.
    client_cpu: float | None = None


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def timed(run) -> RunResult:
    """Calls @p run() and fills in the client CPU share of the RunResult it returns."""
    before = _cpu_seconds()
    result = run()
    if result.seconds > 0:
        result.client_cpu = (_cpu_seconds() - before) / result.seconds
    return result


def run_sequential(port: int, files: dict[str, int], timeout: float) -> RunResult:
    """One client fetches every file of @p files (path → size) in order."""
    start = time.perf_counter()
    deadline = start + timeout
    total = 0
    for path, size in files.items():
        remaining = deadline - time.perf_counter()
        if remaining <= 0:
            return RunResult(time.perf_counter() - start, 0, total, f"not done in {timeout} s")
        try:
            total += fetch(port, path, expect_size=size, timeout=remaining).body_bytes
        except FetchError as error:
            return RunResult(time.perf_counter() - start, 0, total, str(error))
    return RunResult(time.perf_counter() - start, len(files), total)


def run_concurrent(port: int, files: dict[str, int], clients: int, timeout: float) -> RunResult:
    """@p clients threads share @p files: each takes the next untaken file until none is left."""
    items = list(files.items())
    next_index = 0
    lock = threading.Lock()
    totals = [0] * clients
    errors: list[str] = []
    ready = threading.Barrier(clients + 1)
    deadline_box: list[float] = []

    def worker(k: int) -> None:
        nonlocal next_index
        ready.wait()
        deadline = deadline_box[0]
        while True:
            with lock:
                if errors or next_index >= len(items):
                    return
                path, size = items[next_index]
                next_index += 1
            remaining = deadline - time.perf_counter()
            try:
                if remaining <= 0:
                    raise FetchError(f"not done in {timeout} s")
                totals[k] += fetch(port, path, expect_size=size, timeout=remaining).body_bytes
            except FetchError as error:
                with lock:
                    errors.append(str(error))
                return

    threads = [threading.Thread(target=worker, args=(k,), daemon=True) for k in range(clients)]
    for thread in threads:
        thread.start()
    start = time.perf_counter()
    deadline_box.append(start + timeout)
    ready.wait()  # releases every worker at once
    for thread in threads:
        thread.join(timeout + 5)
    seconds = time.perf_counter() - start
    if any(thread.is_alive() for thread in threads):
        errors.append("a client thread did not finish")
    if errors:
        return RunResult(seconds, 0, sum(totals), errors[0])
    return RunResult(seconds, len(items), sum(totals))
