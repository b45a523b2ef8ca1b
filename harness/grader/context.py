"""What a check gets to work with: a fresh document root, a fresh server, and clients.

Every socket a check opens through its context is tracked, so when the check runs out of
time the runner can close them all (waking any blocked ``recv``) and stop the server, and the
abandoned check thread can do no more harm.
"""

from __future__ import annotations

import select
import shutil
import socket
import tempfile
import threading
import time
import uuid
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from . import httpclient
from .httpclient import ProtocolError, Response
from .registry import Check, CheckFailed
from .sandbox import Sandbox
from .server import ServerProcess, tail_bytes

#: Files every document root must hold (the checks fetch them).
REQUIRED_FILES = ("index.html", "logo.png", "style.css", "guide.pdf")
#: What a handout's stubs print where a part is not written yet.
TODO_MARK = "TODO(student)"
#: Longest log line quoted in a hint.
TODO_LINE_CHARS = 200

#: Test files the grader adds to the document root, with their sizes.
TEST_FILES = {"grader-data/big.bin": 2 << 20, "grader-data/medium.bin": 300_000}

#: Statuses accepted as "connection refused by a limit".
REFUSAL_STATUSES = (429, 503)


def is_refusal(raw: bytes) -> bool:
    """Whether @p raw starts with a status line of REFUSAL_STATUSES."""
    return raw[9:12].decode("latin-1") in {str(status) for status in REFUSAL_STATUSES}


@dataclass
class Settings:
    """One grading run's parameters, shared by all its checks."""

    command: str
    profile: str
    maxclient: int
    maxtotal: int
    source_root: Path
    logs_dir: Path
    scale: float = 1.0
    startup_timeout: float = 10.0
    test_data: dict[str, bytes] = field(default_factory=dict)
    sandbox: Sandbox = field(default_factory=lambda: Sandbox("none"))  #: where servers run
    log_lines: int = 20  #: lines of each server log attached to a failing check
    log_bytes: int = 256 << 10  #: bytes of each server log kept in logs/ (its end)
    reply_bytes: int = 64 << 20  #: most bytes read of one reply


class CheckContext:
    """The environment of one check run."""

    def __init__(self, check: Check, settings: Settings):
        self.check = check
        self.settings = settings
        self.profile = settings.profile
        self.maxclient = settings.maxclient
        self.maxtotal = settings.maxtotal
        self.scale = settings.scale
        # Neutral, random names only: the server sees its cwd, argv, environment and fds, and
        # must learn nothing of which check is running (a hidden check's id least of all).
        self.base = Path(tempfile.mkdtemp(prefix="run-"))
        self.root = self.base / "root"
        self.scratch = Path(tempfile.mkdtemp(prefix="run-"))  #: logs while the server runs
        self.secret_marker = f"SECRET-{uuid.uuid4().hex}"
        self.secret = self.base / "secret.txt"
        self.server: ServerProcess | None = None
        self.notes: list[str] = []
        self.credit: Optional[float] = None  #: fraction of the points earned when it fails
        self.cancelled = threading.Event()
        self.thread: Optional[threading.Thread] = None  #: the thread running the check
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    # -- set-up and tear-down (called by the runner) ----------------------------------------

    def prepare_root(self) -> None:
        """Copies the source root, adds the test files, and plants a secret beside the root."""
        shutil.copytree(self.settings.source_root, self.root, symlinks=False)
        for rel, data in self.settings.test_data.items():
            self.add_file(rel, data)
        self.secret.write_text(f"{self.secret_marker}\nthis file is outside the document root\n")
        if self.settings.sandbox.sealed:
            # The server's user must reach the root, and the secret (or a traversal bug would
            # hide behind "permission denied"); it need not list the directory above.
            os.chmod(self.base, 0o711)
            for path in [self.root, *self.root.rglob("*")]:
                os.chmod(path, 0o755 if path.is_dir() else 0o644)
            os.chmod(self.secret, 0o644)

    def start_server(self) -> None:
        """Starts a fresh server on this check's root (raises ServerStartError if it fails)."""
        values = {"root": self.root, "maxclient": self.maxclient, "maxtotal": self.maxtotal}
        with self._lock:
            if self.cancelled.is_set():
                raise CheckFailed("the check was stopped before the server started")
            self.server = ServerProcess(self.settings.command, values, self.root,
                                        self.scratch / uuid.uuid4().hex[:12],
                                        self.settings.sandbox, readable=[self.base])
        self.server.start(self.settings.startup_timeout * self.scale)

    def abort(self) -> None:
        """Stops everything this check started: its sockets (waking blocked reads) and server."""
        self.cancelled.set()
        with self._lock:
            socks = list(self._socks)
            self._socks.clear()
            server = self.server
        for sock in socks:
            close_quietly(sock)
        if server is not None:
            server.stop()

    def keep_logs(self) -> None:
        """Copies the end of the server's logs (at most log_bytes each) to logs/<check id>.*,
        where the server never was: the out directory is the grader's."""
        if self.server is None:
            return
        for path, suffix in ((self.server.stdout_path, "stdout"), (self.server.stderr_path, "stderr")):
            data = tail_bytes(path, self.settings.log_bytes)
            if data:
                target = self.settings.logs_dir / f"{self.check.id}.{suffix}"
                with open(target, "ab") as sink:
                    sink.write(data)

    def todo_line(self) -> str:
        """The last ``TODO(student)`` line of the server's logs (a handout stub saying what it
        does instead of its part: 503 to everyone, say), at most TODO_LINE_CHARS; "" if none."""
        if self.server is None:
            return ""
        found = ""
        for path in (self.server.stdout_path, self.server.stderr_path):
            text = tail_bytes(path, 64 << 10).decode("utf-8", "replace")
            lines = [line.strip() for line in text.splitlines() if TODO_MARK in line]
            if lines:
                found = lines[-1][:TODO_LINE_CHARS]
        return found

    def log_sizes(self) -> int:
        """The largest size of the server's two logs, in bytes."""
        if self.server is None:
            return 0
        sizes = []
        for path in (self.server.stdout_path, self.server.stderr_path):
            try:
                sizes.append(path.stat().st_size)
            except OSError:
                sizes.append(0)
        return max(sizes)

    def cleanup(self) -> None:
        try:
            self.keep_logs()
        except OSError:
            pass
        shutil.rmtree(self.base, ignore_errors=True)
        shutil.rmtree(self.scratch, ignore_errors=True)

    # -- helpers for checks -------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self.server is None:
            raise CheckFailed("no server is running for this check")
        return self.server.port

    def seconds(self, value: float) -> float:
        """@p value seconds times --timeout-scale: use it for "must happen within" bounds."""
        return value * self.scale

    def fail(self, message: str):
        raise CheckFailed(message)

    def expect(self, condition, message: str) -> None:
        if not condition:
            raise CheckFailed(message)

    def note(self, message: str) -> None:
        """Adds a line to the check's output (shown whether it passes or fails, and kept when
        the check times out: note each finding as it comes)."""
        self.notes.append(message)

    def partial(self, earned: int, out_of: int) -> None:
        """Gives @p earned / @p out_of of the points if the check fails (all of them if it
        passes): for checks made of independent parts, such as one file type each."""
        self.credit = max(0.0, min(1.0, earned / out_of)) if out_of > 0 else 0.0

    def file_bytes(self, rel: str) -> bytes:
        return (self.root / rel).read_bytes()

    def add_file(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return path

    def connect(self, source_ip: str | None = None, timeout: float = 10.0,
                rcvbuf: int | None = None) -> socket.socket:
        """A tracked connection to the server from @p source_ip (127.x.y.z), or fails the check."""
        if self.cancelled.is_set():
            raise CheckFailed("the check was stopped")
        try:
            sock = httpclient.connect(self.port, source_ip, self.seconds(timeout), rcvbuf=rcvbuf)
        except OSError as error:
            raise CheckFailed(f"could not connect to 127.0.0.1:{self.port}"
                              f"{' from ' + source_ip if source_ip else ''}: {error}") from error
        with self._lock:
            if self.cancelled.is_set():
                close_quietly(sock)
                raise CheckFailed("the check was stopped")
            self._socks.add(sock)
        return sock

    def close(self, sock: socket.socket) -> None:
        with self._lock:
            self._socks.discard(sock)
        close_quietly(sock)

    def read_reply(self, sock: socket.socket, timeout: float, method: str = "GET"):
        """(bytes, how) from httpclient.read_reply with a scaled deadline."""
        return httpclient.read_reply(sock, time.monotonic() + self.seconds(timeout), method,
                                     limit=self.settings.reply_bytes)

    def exchange(self, data: bytes, source_ip: str | None = None, timeout: float = 10.0,
                 method: str = "GET") -> tuple[bytes, str]:
        """Sends @p data on a new connection; returns what came back and how it ended."""
        sock = self.connect(source_ip, timeout)
        try:
            try:
                sock.sendall(data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the reply, if any, may already be waiting
            return self.read_reply(sock, timeout, method)
        finally:
            self.close(sock)

    def request(self, target: str, method: str = "GET", headers: dict[str, str] | None = None,
                source_ip: str | None = None, timeout: float = 10.0) -> Response:
        """One HTTP/1.0 request; fails the check when no well-formed response comes back."""
        raw, how = self.exchange(httpclient.request_bytes(method, target, headers=headers),
                                 source_ip, timeout, method)
        return self.parse(raw, how, f"{method} {target}", timeout)

    def parse(self, raw: bytes, how: str, what: str, timeout: float) -> Response:
        if how == "timeout" and not raw:
            self.fail(f"{what}: no reply within {self.seconds(timeout):g} s")
        try:
            reply = httpclient.parse_response(raw, how, self.seconds(timeout))
        except ProtocolError as error:
            self.fail(f"{what}: {error}" + (" (then the read timed out)" if how == "timeout" and raw else ""))
        if how == "timeout" and "content-length" not in reply.headers:
            self.fail(f"{what}: the reply had no Content-Length and the connection was not "
                      f"closed within {self.seconds(timeout):g} s")
        if how == "timeout":
            self.fail(f"{what}: the body was cut short: {len(reply.body)} of "
                      f"{reply.headers['content-length']} bytes within {self.seconds(timeout):g} s")
        return reply

    def hold(self, source_ips: list[str], settle: float = 0.5, attempts: int = 3) -> list[socket.socket]:
        """Opens one idle connection per entry of @p source_ips and checks the server kept them
        all open (admitted, not refused or closed). Returns the sockets.

        A slot given back just before (the readiness probe's) may be counted a moment longer,
        so when some are refused the whole set is closed and tried again, up to @p attempts.
        """
        problem = ""
        for attempt in range(attempts):
            socks = [self.connect(ip) for ip in source_ips]
            time.sleep(settle)  # a server that refuses answers at once; give it that moment
            closed = readable(socks)
            if not closed:
                return socks
            index = socks.index(closed[0])
            raw, how = self.read_reply(closed[0], 1.0)
            problem = (f"{len(closed)} of {len(socks)} idle connections (within the limits) were "
                       f"answered or closed at once; connection #{index + 1} from "
                       f"{source_ips[index]} got: {httpclient.describe(raw, how)}")
            todo = self.todo_line() if is_refusal(raw) else ""
            if todo:
                problem += (f". The server's log says {todo!r}: the refusal comes from code "
                            f"not written yet, not from the limits; finish that part first")
            elif is_refusal(raw):
                same = source_ips[:index + 1].count(source_ips[index])
                problem += (f". It was refused as connection {same} from that address and "
                            f"{index + 1} in all, within -maxclient {self.maxclient} and "
                            f"-maxtotal {self.maxtotal}: does the server ignore the limits given "
                            f"on its command line (a constant instead?), or count connections "
                            f"that have already closed?")
            for sock in socks:
                self.close(sock)
            time.sleep(0.5 * (attempt + 1))
        self.fail(problem)

    def wait_for_service(self, source_ip: str, timeout: float, target: str = "/index.html") -> tuple[Response, int]:
        """Retries GET @p target from @p source_ip until it is served 200 (slots come back
        asynchronously after a close). Returns the reply and the number of tries."""
        deadline = time.monotonic() + self.seconds(timeout)
        tries = 0
        last = ""
        while True:
            tries += 1
            raw, how = self.exchange(httpclient.request_bytes("GET", target), source_ip, 5.0)
            try:
                reply = httpclient.parse_response(raw, how, self.seconds(5.0))
                if reply.status == 200:
                    return reply, tries
                last = reply.status_line
            except ProtocolError as error:
                last = str(error)
            if time.monotonic() >= deadline:
                self.fail(f"GET {target} from {source_ip} was still not served {self.seconds(timeout):g} s "
                          f"later ({tries} tries); last answer: {last}")
            time.sleep(0.1)


def readable(socks: list[socket.socket]) -> list[socket.socket]:
    """Those of @p socks with data or EOF waiting (poll, so any number of descriptors works)."""
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock, select.POLLIN | select.POLLHUP | select.POLLERR)
        by_fd[sock.fileno()] = sock
    return [by_fd[fd] for fd, _ in poller.poll(0)]


def close_quietly(sock: socket.socket) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


def client_ips(block: int, count: int) -> list[str]:
    """@p count distinct loopback addresses ``127.<block>.x.y`` (never 127.0.0.1, which the
    readiness probe uses)."""
    if not 1 <= block <= 254:
        raise ValueError("block must be 1..254")
    return [f"127.{block}.{i // 250}.{i % 250 + 2}" for i in range(count)]
