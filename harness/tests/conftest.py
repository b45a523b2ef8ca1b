"""Shared fixtures and helpers for the lab kit's pytest harness.

The harness starts the real server binaries on a free port (``-p 0``) with a document root in
the test's own temporary directory, and talks to them over real sockets. Nothing here uses a
fixed port or a shared directory, so two pytest runs can go on side by side.

Where the binaries are: ``$LAB_BIN_DIR`` (CTest sets it to ``<build>/bin``), else
``build/bin`` at the top of the kit. A missing binary fails the test with a message
saying so: a harness that skips what it cannot find would pass on an empty build.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pytest

#: What AddressSanitizer, UBSan, LeakSanitizer and ThreadSanitizer print when they find a bug.
SANITIZER_REPORT = re.compile(r"(ERROR|WARNING): (Address|Leak|Thread|UndefinedBehavior)Sanitizer|runtime error:")

TESTS_DIR = Path(__file__).resolve().parent
TESTDATA = TESTS_DIR / "testdata"
HARNESS_DIR = TESTS_DIR.parent
REPO_DIR = HARNESS_DIR.parent
WWW_DIR = REPO_DIR / "www"
BIN_DIR = Path(os.environ.get("LAB_BIN_DIR", REPO_DIR / "build" / "bin")).resolve()
# The tools under test are packages beside this folder (harness/grader, harness/bench, ...);
# pytest puts this folder on sys.path, and the tools' parent goes there too.
if str(HARNESS_DIR) not in sys.path:
    sys.path.insert(1, str(HARNESS_DIR))

from grader import httpclient  # noqa: E402 (needs the path above)

STAGE1 = "stage1_sequential"
STAGE2 = "stage2_threaded"
STAGE3 = "stage3_limited"
STAGE4 = "stage4_event"
STAGES = [STAGE1, STAGE2, STAGE3, STAGE4]
#: Stages that serve many clients at once, so a silent client does not block the others:
#: with a thread each (stages 2 and 3) or with event loops (stage 4). Tests that are about
#: threads themselves say how stage 4 differs.
THREADED_STAGES = [STAGE2, STAGE3, STAGE4]
#: Stages with stage 3's command line and behaviour: -maxclient/-maxtotal (429/503),
#: /server-status, --status-remote, --reclaim-idle.
LIMITED_STAGES = [STAGE3, STAGE4]
STAGE_IDS = {STAGE1: "stage1", STAGE2: "stage2", STAGE3: "stage3", STAGE4: "stage4"}

#: Most threads stage 4 may run, whatever its load: one event loop per core (the main thread
#: runs one), a signal watcher, and two to spare (a sanitizer's runtime may add its own).
EVENT_THREAD_MAX = (os.cpu_count() or 1) + 3

#: How long a server may take to print its "listening" line.
STARTUP_DEADLINE = 5.0
#: How long a server may take to exit after SIGTERM before it is killed.
STOP_DEADLINE = 5.0

#: The startup line every stage prints, e.g.
#: ``stage2_threaded listening on http://127.0.0.1:40123/ (root /tmp/x/root)``.
LISTENING_RE = re.compile(
    r"^(?P<stage>\S+) listening on http://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)/ "
    r"\(root (?P<root>.*)\)$"
)

#: Sample files of www/ and the exact Content-Type each must be served with.
SAMPLE_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "style.css": "text/css; charset=utf-8",
    "logo.png": "image/png",
    "guide.pdf": "application/pdf",
    "data.json": "application/json",
    "notes.txt": "text/plain; charset=utf-8",
    "app.js": "text/javascript; charset=utf-8",
    "sub/index.html": "text/html; charset=utf-8",
}

#: Reason phrases (RFC 9110 and RFC 6585) the servers use.
REASONS = {
    200: "OK",
    301: "Moved Permanently",
    304: "Not Modified",
    400: "Bad Request",
    403: "Forbidden",
    404: "Not Found",
    408: "Request Timeout",
    414: "URI Too Long",
    429: "Too Many Requests",
    431: "Request Header Fields Too Large",
    501: "Not Implemented",
    503: "Service Unavailable",
}


def stage_params(stages=STAGES):
    """``pytest.mark.parametrize`` arguments for a ``stage`` parameter with short ids."""
    return pytest.mark.parametrize("stage", stages, ids=[STAGE_IDS[s] for s in stages])


def binary(stage: str) -> Path:
    """Path of a stage's executable; fails the test (never skips) when it is not built."""
    path = BIN_DIR / stage
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(
            f"server binary {path} not found or not executable: build the project first "
            f"(cmake -S . -B build && cmake --build build) or set LAB_BIN_DIR",
            pytrace=False,
        )
    return path


# --------------------------------------------------------------------------------------------
# Running servers
# --------------------------------------------------------------------------------------------


class Server:
    """One server process under test, with its stdout and stderr in files of ``workdir``.

    Output goes to files, never to a pipe nobody reads: the access log would fill the pipe and
    block the server.
    """

    _counter = 0

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.stage = ""
        self.port = 0
        self.host = ""
        self.root_printed = ""
        Server._counter += 1
        self._tag = f"server{Server._counter}"
        self.stdout_path = workdir / f"{self._tag}.stdout"
        self.stderr_path = workdir / f"{self._tag}.stderr"
        self.returncode: int | None = None

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, stage: str, root: Path, *extra: str, port: int = 0,
              preexec_fn=None, program: Path | None = None) -> "Server":
        """Starts @p stage serving @p root and waits for its listening line.

        @p preexec_fn, if given, runs in the child between fork and exec: the place to lower
        a resource limit or drop privileges for one server. @p program, if given, is the
        executable to run instead of the build's (a copy of it elsewhere).
        """
        self.stage = stage
        args = [str(program or binary(stage)), "-p", str(port), "-r", str(root), *extra]
        with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=self.workdir,
                preexec_fn=preexec_fn,
            )
        deadline = time.monotonic() + STARTUP_DEADLINE
        while time.monotonic() < deadline:
            first = self.stdout().split("\n", 1)
            if len(first) == 2:  # the line is complete
                match = LISTENING_RE.match(first[0])
                assert match, f"unexpected first stdout line of {stage}: {first[0]!r}"
                assert match["stage"] == stage, f"startup line names {match['stage']!r}"
                self.host = match["host"]
                self.port = int(match["port"])
                self.root_printed = match["root"]
                assert self.port > 0, f"{stage} announced port 0"
                return self
            if self.proc.poll() is not None:
                pytest.fail(
                    f"{stage} exited with status {self.proc.returncode} before listening; "
                    f"args {args[1:]}; stderr: {self.stderr()!r}",
                    pytrace=False,
                )
            time.sleep(0.01)
        self.kill()
        pytest.fail(
            f"{stage} printed no listening line within {STARTUP_DEADLINE} s; "
            f"stdout {self.stdout()!r}; stderr {self.stderr()!r}",
            pytrace=False,
        )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def send_signal(self, signum: int) -> None:
        """Sends @p signum to this server (and only to it) if it still runs."""
        if self.alive():
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        """Waits up to @p timeout seconds for the process to end; its status, or None."""
        try:
            self.returncode = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None
        return self.returncode

    def stop(self, signum: int = signal.SIGTERM, timeout: float = STOP_DEADLINE) -> int | None:
        """Signals the server, waits up to @p timeout, then kills it. Returns the exit status
        if it exited on its own in time, else None."""
        if self.proc is None:
            return None
        if self.proc.poll() is not None:
            self.returncode = self.proc.returncode
            return self.returncode
        self.proc.send_signal(signum)
        status = self.wait(timeout)
        if status is None:
            self.kill()
        return status

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            try:
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                pass

    # -- observation -----------------------------------------------------------------------

    def stdout(self) -> str:
        return self.stdout_path.read_bytes().decode("utf-8", "replace")

    def stderr(self) -> str:
        return self.stderr_path.read_bytes().decode("utf-8", "replace")

    def log_lines(self) -> list[str]:
        """Complete stdout lines after the listening line (the access log)."""
        text = self.stdout()
        lines = text.split("\n")[:-1]  # drop an unfinished last line
        return lines[1:]

    def threads(self) -> int:
        """The server's current thread count, from /proc/PID/status."""
        with open(f"/proc/{self.pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("Threads:"):
                    return int(line.split()[1])
        raise AssertionError("no Threads: line in /proc status")

    def holds(self, client: socket.socket) -> bool:
        """Whether the server still has an fd open on its end of @p client's connection.

        Its end is the TCP socket bound to the server's port whose peer is @p client's
        address (from /proc/net/tcp and tcp6); it is held while one of /proc/PID/fd links to
        that socket's inode. Closing the fd ends it, whatever the server's threads do.
        """
        client_port = client.getsockname()[1]
        inodes = set()
        for table in ("/proc/net/tcp", "/proc/net/tcp6"):
            with open(table, encoding="ascii") as rows:
                next(rows)  # the header
                for row in rows:
                    fields = row.split()
                    local_port = int(fields[1].rsplit(":", 1)[1], 16)
                    remote_port = int(fields[2].rsplit(":", 1)[1], 16)
                    if (local_port, remote_port) == (self.port, client_port) and fields[9] != "0":
                        inodes.add(f"socket:[{fields[9]}]")
        fd_dir = Path(f"/proc/{self.pid}/fd")
        for fd in fd_dir.iterdir():
            try:
                if os.readlink(fd) in inodes:
                    return True
            except FileNotFoundError:  # closed while we looked
                pass
        return False

    def status(self, source_ip: str | None = None) -> dict:
        """GET /server-status (stages 3 and 4 with --status) and returns the JSON.

        The snapshot counts the connection that asks for it, so an otherwise idle server
        reports ``active == 1``.
        """
        reply = self.try_status(source_ip)
        assert reply is not None, "/server-status was refused"
        return reply

    def try_status(self, source_ip: str | None = None) -> dict | None:
        """Like status(), but None when the server refuses the request (429/503)."""
        reply = request(self.port, "/server-status", source_ip=source_ip)
        if reply.status in (429, 503):
            return None
        assert reply.status == 200, f"/server-status answered {reply.status_line!r}"
        assert reply.headers.get("content-type") == "application/json", reply.headers
        return json.loads(reply.body)


@pytest.fixture
def servers(tmp_path):
    """A factory for Server objects; every server it made is stopped at teardown."""
    made: list[Server] = []

    def start(stage: str, root: Path, *extra: str, port: int = 0, preexec_fn=None,
              program: Path | None = None) -> Server:
        server = Server(tmp_path)
        made.append(server)
        return server.start(stage, root, *extra, port=port, preexec_fn=preexec_fn,
                            program=program)

    yield start
    # A server that ended by itself, unasked, crashed: say so even if every assert passed.
    crashed = [
        f"{s.stage} (pid {s.pid}) exited with status {s.proc.returncode}; stderr {s.stderr()!r}"
        for s in made
        if s.proc is not None and s.returncode is None and s.proc.poll() is not None
    ]
    # Every server must also leave cleanly: exit 0 on SIGTERM, in time, with no sanitizer
    # report (the asan and tsan presets run this same suite against instrumented builds).
    unclean = []
    for server in made:
        status = server.stop()
        if server.proc is None:
            continue
        report = SANITIZER_REPORT.search(server.stderr())
        if status is None:
            unclean.append(f"{server.stage} (pid {server.pid}) ignored SIGTERM for {STOP_DEADLINE} s")
        elif status != 0:
            unclean.append(f"{server.stage} (pid {server.pid}) exited with status {status}")
        if report:
            unclean.append(f"{server.stage} (pid {server.pid}) sanitizer report: {server.stderr()[-4000:]}")
    if crashed:
        pytest.fail("server ended during the test: " + "; ".join(crashed), pytrace=False)
    if unclean:
        pytest.fail("server did not stop cleanly: " + "; ".join(unclean), pytrace=False)


def run_cli(stage: str, *args: str, timeout: float = 5.0) -> subprocess.CompletedProcess:
    """Runs a stage with @p args expecting it to exit by itself (bad options and the like).

    Output is captured by subprocess.run, which reads both pipes while it waits.
    """
    try:
        return subprocess.run(
            [str(binary(stage)), *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{stage} {' '.join(args)} was still running after {timeout} s", pytrace=False)


# --------------------------------------------------------------------------------------------
# The document root
# --------------------------------------------------------------------------------------------


@dataclass
class Site:
    """A per-test copy of www/ plus files that must never be served."""

    base: Path  #: tmp_path: holds root/, root2/ and secret.txt
    root: Path  #: the document root to serve
    secret: Path  #: base/secret.txt, beside the root
    marker: str  #: unique text inside secret.txt
    secret2: Path  #: base/root2/secret.txt, a sibling directory's file
    marker2: str
    markers: list[str] = field(default_factory=list)

    def bytes_of(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def add_file(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path


@pytest.fixture
def site(tmp_path) -> Site:
    """Copies www/ into tmp_path/root and plants secrets around it.

    - tmp_path/secret.txt: beside the root, reachable only by climbing out;
    - tmp_path/root2/secret.txt: a sibling whose name shares the root's prefix;
    - root/escape -> ../root2/secret.txt and root/etc -> /etc: symlinks leading out;
    - root/noindex/: a directory without index.html;
    - root/a..b.txt: a legitimate name containing "..".
    """
    assert (WWW_DIR / "index.html").is_file(), f"sample site missing at {WWW_DIR}"
    root = tmp_path / "root"
    shutil.copytree(WWW_DIR, root, symlinks=False)
    marker = f"SECRET-{uuid.uuid4().hex}"
    secret = tmp_path / "secret.txt"
    secret.write_text(f"{marker}\nthis file is outside the document root\n")
    root2 = tmp_path / "root2"
    root2.mkdir()
    marker2 = f"SECRET2-{uuid.uuid4().hex}"
    secret2 = root2 / "secret.txt"
    secret2.write_text(f"{marker2}\nthis file is in a sibling of the document root\n")
    (root / "escape").symlink_to("../root2/secret.txt")
    (root / "etc").symlink_to("/etc")
    (root / "noindex").mkdir()
    (root / "noindex" / "file.txt").write_text("a directory without index.html\n")
    (root / "a..b.txt").write_text("two dots inside a name are fine\n")
    return Site(tmp_path, root, secret, marker, secret2, marker2, [marker, marker2])


# --------------------------------------------------------------------------------------------
# Talking to a server
# --------------------------------------------------------------------------------------------


@dataclass
class Response:
    """A parsed HTTP/1.x response; header names are lower-cased."""

    raw: bytes
    status_line: str
    version: str
    status: int
    reason: str
    headers: dict[str, str]
    header_list: list[tuple[str, str]]
    body: bytes

    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


def parse_response(raw: bytes) -> Response:
    """Parses a complete response read to EOF; asserts it is well-formed."""
    head, sep, body = raw.partition(b"\r\n\r\n")
    assert sep, f"no end of response head in {raw[:300]!r}"
    lines = head.decode("latin-1").split("\r\n")
    status_line = lines[0]
    match = re.fullmatch(r"(HTTP/\d\.\d) (\d{3}) (.*)", status_line)
    assert match, f"bad status line {status_line!r}"
    header_list = []
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        assert colon and name and name == name.strip(), f"bad header line {line!r}"
        header_list.append((name.lower(), value.strip()))
    headers = dict(header_list)
    assert len(headers) == len(header_list), f"repeated header in {header_list}"
    return Response(
        raw, status_line, match[1], int(match[2]), match[3], headers, header_list, body
    )


def connect(
    port: int,
    source_ip: str | None = None,
    timeout: float = 5.0,
    rcvbuf: int | None = None,
    host: str = "127.0.0.1",
) -> socket.socket:
    """A TCP connection to the server, optionally from a given loopback source address.

    All of 127.0.0.0/8 is local on Linux, so binding to 127.0.0.2, 127.0.1.7, ... before
    connecting makes the server see distinct client IPs. The grader's client does the work.
    """
    return httpclient.connect(port, source_ip, timeout, host=host, rcvbuf=rcvbuf)


def read_to_eof(sock: socket.socket, deadline: float, limit: int = 64 << 20, *,
                chunk: int = 65536, on_read=None) -> bytes:
    """Reads until the peer closes; raises TimeoutError if @p deadline (monotonic) passes.
    @p on_read, if given, is called with each read's bytes as it returns (b"" at the end)."""
    chunks = []
    total = 0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"no EOF before the deadline; got {total} bytes: "
                               f"{b''.join(chunks)[:200]!r}")
        sock.settimeout(remaining)
        try:
            data = sock.recv(chunk)
        except socket.timeout as error:
            raise TimeoutError(f"no EOF before the deadline; got {total} bytes: "
                               f"{b''.join(chunks)[:200]!r}") from error
        if on_read is not None:
            on_read(data)
        if not data:
            return b"".join(chunks)
        chunks.append(data)
        total += len(data)
        assert total <= limit, "response larger than expected"


def raw(port: int, data: bytes, timeout: float = 5.0, source_ip: str | None = None) -> bytes:
    """Sends @p data as is and returns everything the server sends until it closes."""
    with connect(port, source_ip=source_ip, timeout=timeout) as sock:
        deadline = time.monotonic() + timeout
        if data:
            sock.sendall(data)
        return read_to_eof(sock, deadline)


def request(
    port: int,
    target: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    version: str = "HTTP/1.0",
    timeout: float = 5.0,
    source_ip: str | None = None,
) -> Response:
    """Sends one request and returns the parsed response (checked for framing)."""
    lines = [f"{method} {target} {version}"]
    for name, value in (headers or {}).items():
        lines.append(f"{name}: {value}")
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    reply = parse_response(raw(port, data, timeout=timeout, source_ip=source_ip))
    if method != "HEAD" and reply.status != 304 and "content-length" in reply.headers:
        assert len(reply.body) == int(reply.headers["content-length"]), (
            f"body of {len(reply.body)} bytes but Content-Length "
            f"{reply.headers['content-length']} for {method} {target}"
        )
    return reply


def trickle(port: int, data: bytes, interval: float, give_up_after: float,
            source_ip: str | None = None) -> tuple[float, bytes]:
    """Sends @p data one byte every @p interval seconds until the server answers or closes.

    Returns how long the server let it go on, and everything it sent back (read to EOF). Gives
    up after @p give_up_after seconds, so a server that never cuts the client fails a bound
    on the elapsed time instead of hanging the test.
    """
    with connect(port, source_ip=source_ip, timeout=5) as sock:
        start = time.monotonic()
        got = b""
        for i in range(len(data)):
            if time.monotonic() - start > give_up_after:
                break
            try:
                sock.sendall(data[i : i + 1])
            except OSError:
                break
            sock.settimeout(interval)
            try:
                got = sock.recv(65536)
            except TimeoutError:
                continue
            break
        elapsed = time.monotonic() - start
        if got:
            got += read_to_eof(sock, time.monotonic() + 3)
    return elapsed, got


def nothing_received(sock: socket.socket) -> bool:
    """True if the server has sent nothing (and not closed) on @p sock so far."""
    timeout = sock.gettimeout()
    sock.setblocking(False)  # with a timeout set, Python would wait for data first
    try:
        sock.recv(1, socket.MSG_PEEK)
    except BlockingIOError:
        return True
    finally:
        sock.settimeout(timeout)
    return False


def wait_until(predicate, timeout: float, interval: float = 0.02, message: str = ""):
    """Polls @p predicate until it returns something truthy; fails after @p timeout seconds."""
    deadline = time.monotonic() + timeout
    last = None
    while True:
        last = predicate()
        if last:
            return last
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {message or predicate}"
                                 f" (last value {last!r})")
        time.sleep(interval)


class Holder:
    """Holds many idle client connections and closes them all on exit."""

    def __init__(self):
        self.socks: list[socket.socket] = []

    def open(self, port: int, count: int, source_ips=None, timeout: float = 5.0):
        """Opens @p count connections; @p source_ips cycles if given."""
        ips = list(source_ips) if source_ips else [None]
        opened = []
        for i in range(count):
            sock = connect(port, source_ip=ips[i % len(ips)], timeout=timeout)
            self.socks.append(sock)
            opened.append(sock)
        return opened

    def close_all(self):
        for sock in self.socks:
            try:
                sock.close()
            except OSError:
                pass
        self.socks.clear()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close_all()


def ip_range(prefix: str, first: int, count: int) -> list[str]:
    """``ip_range("127.0.1.", 1, 3)`` → ``["127.0.1.1", "127.0.1.2", "127.0.1.3"]``."""
    return [f"{prefix}{i}" for i in range(first, first + count)]
