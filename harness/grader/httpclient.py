"""A small HTTP/1.x client over raw sockets: exact bytes out, exact bytes in.

The grader cannot use a full HTTP library for everything: it must choose each connection's
source address (to look like different clients), send incomplete requests, hold connections
silent, and see the raw reply of a misbehaving server.
"""

from __future__ import annotations

import re
import socket
import threading
import time
from dataclasses import dataclass

STATUS_LINE = re.compile(r"(HTTP/\d\.\d) (\d{3})(?: (.*))?")


class ProtocolError(Exception):
    """The server's bytes are not an HTTP response."""


@dataclass
class Response:
    """A parsed HTTP/1.x response; header names lower-cased (the last of a repeated one wins)."""

    raw: bytes
    status_line: str
    status: int
    reason: str
    headers: dict[str, str]
    body: bytes

    @property
    def media_type(self) -> str:
        """Content-Type without parameters, lower-cased: ``text/html; charset=utf-8`` → ``text/html``."""
        return self.headers.get("content-type", "").split(";", 1)[0].strip().lower()


def split_head(raw: bytes) -> tuple[bytes, bytes] | None:
    """(head, body) if @p raw holds a complete response head, else None."""
    for separator in (b"\r\n\r\n", b"\n\n"):
        head, found, body = raw.partition(separator)
        if found:
            return head, body
    return None


def parse_response(raw: bytes, how: str = "eof", waited: float | None = None) -> Response:
    """Parses a response; raises ProtocolError saying what is wrong with it. @p how and
    @p waited (seconds) say how the read ended, so that silence is not called a close."""
    if not raw:
        if how == "timeout":
            raise ProtocolError(f"no reply within {waited:g} s" if waited is not None
                                else "no reply before the deadline")
        if how == "reset":
            raise ProtocolError("the connection was reset without a reply")
        raise ProtocolError("the server closed the connection without sending anything")
    parts = split_head(raw)
    if parts is None:
        raise ProtocolError(f"no end of the response head (blank line) in {raw[:200]!r}")
    head, body = parts
    lines = head.decode("latin-1").replace("\r\n", "\n").split("\n")
    match = STATUS_LINE.fullmatch(lines[0])
    if not match:
        raise ProtocolError(f"bad status line {lines[0][:200]!r}")
    headers = {}
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon or not name.strip():
            raise ProtocolError(f"bad header line {line[:200]!r}")
        headers[name.strip().lower()] = value.strip()
    return Response(raw, lines[0], int(match[2]), match[3] or "", headers, body)


def expected_length(raw: bytes, method: str = "GET") -> int | None:
    """Total length of the response in @p raw once its head is complete: head plus
    Content-Length (no body for HEAD). None while the head is incomplete or when only EOF can
    end the response (no Content-Length)."""
    parts = split_head(raw)
    if parts is None:
        return None
    head, body = parts
    head_length = len(raw) - len(body)
    if method == "HEAD":
        return head_length
    match = re.search(rb"(?im)^content-length:[ \t]*(\d+)[ \t]*\r?$", head)
    return head_length + int(match[1]) if match else None


def connect(port: int, source_ip: str | None, timeout: float, host: str = "127.0.0.1",
            rcvbuf: int | None = None) -> socket.socket:
    """A TCP connection to @p host:@p port, from @p source_ip when given (any of 127.0.0.0/8
    is local on Linux, so each address looks like a different client). @p rcvbuf sets a small
    receive buffer before connecting (a client that stops reading then holds the sender up)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        if rcvbuf is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.settimeout(timeout)
        if source_ip is not None:
            sock.bind((source_ip, 0))
        sock.connect((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


#: Most bytes of replies held at once by all of a check's readers (concurrent_fetch reads two
#: dozen replies side by side): a hostile server cannot make the grader hold gigabytes.
TOTAL_REPLY_BYTES = 256 << 20
_held = 0
_held_lock = threading.Lock()


def _hold(count: int) -> bool:
    """Counts @p count more bytes as held; False (and nothing counted) past TOTAL_REPLY_BYTES."""
    global _held
    with _held_lock:
        if count > 0 and _held + count > TOTAL_REPLY_BYTES:
            return False
        _held += count
        return True


def read_reply(sock: socket.socket, deadline: float, method: str = "GET",
               limit: int = 64 << 20) -> tuple[bytes, str]:
    """Reads until EOF, a complete response (per Content-Length), or @p deadline (monotonic).

    Returns (bytes, how): how is ``"eof"``, ``"complete"``, ``"timeout"`` or ``"reset"``.
    Raises ProtocolError past @p limit bytes, or when all readers together would hold more
    than TOTAL_REPLY_BYTES.
    """
    buf = bytearray()
    try:
        return _read_reply(sock, deadline, method, limit, buf)
    finally:
        _hold(-len(buf))


def _read_reply(sock, deadline, method, limit, buf):
    wanted: int | None = None
    while True:
        if wanted is None and buf:
            wanted = expected_length(bytes(buf[:1 << 16]) if len(buf) > 1 << 16 else bytes(buf), method)
        if wanted is not None and len(buf) >= wanted:
            return bytes(buf), "complete"
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return bytes(buf), "timeout"
        sock.settimeout(remaining)
        try:
            chunk = sock.recv(1 << 16)
        except (socket.timeout, TimeoutError):
            return bytes(buf), "timeout"
        except (ConnectionResetError, BrokenPipeError):
            return bytes(buf), "reset"
        if not chunk:
            return bytes(buf), "eof"
        if len(buf) + len(chunk) > limit:
            raise ProtocolError(f"the reply was longer than the grader reads ({limit >> 20} MiB, "
                                f"its cap per reply); no reply of this lab needs that much.")
        if not _hold(len(chunk)):
            raise ProtocolError(f"the replies read at once exceeded the grader's cap of "
                                f"{TOTAL_REPLY_BYTES >> 20} MiB in all; no reply of this lab "
                                f"needs that much.")
        buf += chunk


def request_bytes(method: str, target: str, version: str = "HTTP/1.0",
                  headers: dict[str, str] | None = None) -> bytes:
    """The bytes of a request with @p headers (Host added when missing)."""
    lines = [f"{method} {target} {version}"]
    all_headers = {"Host": "127.0.0.1", "User-Agent": "lab-grader/1.0"}
    all_headers.update(headers or {})
    lines += [f"{name}: {value}" for name, value in all_headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def describe(raw: bytes, how: str) -> str:
    """One line saying what a connection gave back, for failure messages."""
    if not raw:
        return {"timeout": "no reply before the deadline",
                "reset": "the connection was reset without a reply",
                }.get(how, "the connection was closed without a reply")
    first = raw.split(b"\n", 1)[0].strip()
    return f"{first.decode('latin-1')[:120]!r} ({len(raw)} bytes)"
