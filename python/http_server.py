#!/usr/bin/env python3
"""A small HTTP/1.0 static-file server: the sequential server of the earlier project, grown
a thread per connection (stage 2) and admission control (stage 3).

    python3 http_server.py -p 8080                            serves the working directory
    python3 http_server.py -p 8080 --sequential               stage 1: one client at a time
    python3 http_server.py -p 8080 -maxclient 12 -maxtotal 60 stage 3: with limits

GET and HEAD of the files under the document root (the working directory unless -r says
otherwise), with their Content-Type; 400 for a malformed request or a path that climbs above
the root, 403 for what may not be read, 404 for what is not there, 501 for other methods.
With -maxclient and -maxtotal, a connection over the per-client limit is told 429 Too Many
Requests and one over the total limit 503 Service Unavailable, at once, without a thread.
Standard library only (Python 3.8 or newer).
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import stat
import sys
import threading
from urllib.parse import unquote_to_bytes

#: Longest request head read (request line and headers), in bytes.
MAX_HEAD = 8192
#: Seconds a client may take to send its request head.
READ_TIMEOUT = 10.0
#: Seconds a client may stall while a reply is sent to it.
SEND_TIMEOUT = 30.0
#: Connections the kernel queues while the server is busy accepting.
BACKLOG = 128

REASONS = {200: "OK", 301: "Moved Permanently", 400: "Bad Request", 403: "Forbidden",
           404: "Not Found", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
           500: "Internal Server Error", 501: "Not Implemented", 503: "Service Unavailable"}
TYPES = {".html": "text/html", ".htm": "text/html", ".css": "text/css",
         ".js": "text/javascript", ".json": "application/json", ".txt": "text/plain",
         ".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
         ".svg": "image/svg+xml", ".ico": "image/x-icon", ".pdf": "application/pdf"}
#: Printed to stdout once the server listens (the kit's tools wait for it).
LISTENING = "listening on http://127.0.0.1:{port}/ serving {root}"


class BadRequest(Exception):
    """The request cannot be served; args[0] is the status to answer with."""


def content_type(path: str) -> str:
    """The Content-Type of a file, from its suffix."""
    kind = TYPES.get(os.path.splitext(path)[1].lower(), "application/octet-stream")
    return kind + "; charset=utf-8" if kind.startswith("text/") else kind


def read_head(conn: socket.socket) -> bytes:
    """Reads the request head (up to the empty line); b"" when the client sent nothing."""
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_HEAD:
            raise BadRequest(431)
        chunk = conn.recv(4096)
        if not chunk:
            if data:
                raise BadRequest(400)
            return b""
        data += chunk
    return data


def parse_request_line(head: bytes) -> tuple[str, str]:
    """The method and the target of a request head."""
    line = head.split(b"\n", 1)[0].rstrip(b"\r").decode("latin-1")
    parts = line.split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/") or not parts[1]:
        raise BadRequest(400)
    method, target, _ = parts
    if method not in ("GET", "HEAD"):
        raise BadRequest(501)
    return method, target


def resolve(root: str, target: str) -> str:
    """The file a target names under @p root. Percent-decodes once, then walks the segments:
    a path that would climb above the root is refused (400), never clamped."""
    if not target.startswith("/"):
        raise BadRequest(400)
    raw = unquote_to_bytes(target.split("?", 1)[0].split("#", 1)[0])
    if b"\0" in raw:
        raise BadRequest(400)
    try:
        path = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadRequest(400) from None
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if not segments:
                raise BadRequest(400)
            segments.pop()
        else:
            segments.append(segment)
    full = os.path.join(root, *segments)
    if path.endswith("/") and segments:
        full += "/"
    return full


def open_file(root: str, full: str) -> tuple[int, int, str]:
    """Opens the file to serve: (descriptor, size, its path). A directory serves its
    index.html; whatever resolves outside the root (a symbolic link) reads as missing."""
    if os.path.isdir(full):
        full = os.path.join(full, "index.html")
    real = os.path.realpath(full)
    if not (real + os.sep).startswith(os.path.realpath(root).rstrip(os.sep) + os.sep):
        raise BadRequest(404)
    try:
        # O_NOFOLLOW: a file swapped for a symbolic link since realpath() is not followed.
        fd = os.open(real, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOFOLLOW)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise BadRequest(404) from None
    except OSError as error:
        raise BadRequest(404 if error.errno == errno.ELOOP else 403
                         if error.errno == errno.EACCES else 500) from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise BadRequest(403)
    return fd, info.st_size, real


def head_bytes(status: int, kind: str, length: int, extra: str = "") -> bytes:
    return (f"HTTP/1.0 {status} {REASONS[status]}\r\nServer: lab-python\r\n"
            f"Content-Type: {kind}\r\nContent-Length: {length}\r\n{extra}"
            f"Connection: close\r\n\r\n").encode("latin-1")


def send_error(conn: socket.socket, status: int, head_only: bool = False,
               extra: str = "") -> None:
    """Sends a short HTML page that names the status."""
    body = f"<html><body><h1>{status} {REASONS[status]}</h1></body></html>\n".encode()
    conn.sendall(head_bytes(status, "text/html; charset=utf-8", len(body), extra)
                 + (b"" if head_only else body))


def serve(conn: socket.socket, root: str, quiet: bool) -> None:
    """Serves one connection: reads its request, answers it, closes it."""
    method, target, status, size = "-", "-", 0, 0
    try:
        conn.settimeout(READ_TIMEOUT)
        head = read_head(conn)
        if not head:
            return
        method, target = parse_request_line(head)
        fd, size, path = open_file(root, resolve(root, target))
        with os.fdopen(fd, "rb") as file:
            conn.settimeout(SEND_TIMEOUT)
            conn.sendall(head_bytes(200, content_type(path), size))
            status = 200
            if method == "GET" and size:
                conn.sendfile(file)
    except BadRequest as error:
        status = error.args[0]
        try:
            send_error(conn, status, head_only=method == "HEAD")
        except OSError:
            pass
    except OSError:  # the client went away or stalled: this connection only
        pass
    finally:
        close_gracefully(conn)
    if not quiet and status:
        print(f'{method} {target} {status} {size if status == 200 else 0}', flush=True)


def close_gracefully(conn: socket.socket) -> None:
    """Closes after saying so (FIN), so that a reply is not lost to a reset when the client
    sent more than was read."""
    try:
        conn.shutdown(socket.SHUT_WR)
        conn.settimeout(0.5)
        while conn.recv(4096):
            pass
    except OSError:
        pass
    conn.close()


# BEGIN SOLUTION stage3/py-todo-note
# STUB
# def todo(what: str) -> None:
#     """Says on stderr that a stub was reached, so that its wrong answer comes with the
#     reason. Delete it with the last stub."""
#     print(f"TODO(student): {what}", file=sys.stderr, flush=True)
#
#
# END SOLUTION
class Limiter:
    """Admission control: at most max_per_client connections per client address and
    max_total in all. try_acquire() either admits a client (a Slot, given back exactly once
    by Slot.release()) or says which limit is full."""

    def __init__(self, max_per_client: int, max_total: int):
        self.max_per_client = max_per_client
        self.max_total = max_total
        self._lock = threading.Lock()
        self._per_client: dict[str, int] = {}
        self._total = 0

    def try_acquire(self, client: str) -> tuple[int, Slot | None]:
        """(200, a slot) when @p client is admitted; (429, None) when it holds
        max_per_client connections already; (503, None) when the server holds max_total."""
        # BEGIN SOLUTION stage3/py-try-acquire
        with self._lock:
            held = self._per_client.get(client, 0)
            if held >= self.max_per_client:
                return 429, None
            if self._total >= self.max_total:
                return 503, None
            self._per_client[client] = held + 1
            self._total += 1
        return 200, Slot(self, client)
        # STUB
        # # TODO(student): under self._lock, look up how many connections `client` holds:
        # # refuse with 429 at max_per_client, else with 503 when the server holds max_total;
        # # otherwise count it (in _per_client and _total) and return (200, Slot(self, client)).
        # todo("Limiter.try_acquire() is not written yet: every client gets 503")
        # return 503, None
        # END SOLUTION

    def counts(self) -> tuple[int, dict[str, int]]:
        """The total and the per-client counts, for tests and logs."""
        with self._lock:
            return self._total, dict(self._per_client)

    def _release(self, client: str) -> None:
        """Gives back one slot of @p client (Slot.release() calls it, once per slot)."""
        # BEGIN SOLUTION stage3/py-release
        with self._lock:
            self._total -= 1
            left = self._per_client[client] - 1
            if left:
                self._per_client[client] = left
            else:
                del self._per_client[client]
        # STUB
        # # TODO(student): under self._lock, count one connection of `client` less in _total
        # # and in _per_client, and drop its entry when it reaches 0 (no client stays forever).
        # todo("Limiter._release() is not written yet: no slot comes back")
        # END SOLUTION


class Slot:
    """One admitted connection's place in a Limiter; release() gives it back, once."""

    def __init__(self, limiter: Limiter, client: str):
        self._limiter: Limiter | None = limiter
        self.client = client

    def release(self) -> None:
        limiter, self._limiter = self._limiter, None
        if limiter is not None:
            limiter._release(self.client)


def refuse(conn: socket.socket, status: int) -> None:
    """Tells a refused client 429 or 503 at once, from the accepting thread, and closes."""
    try:
        conn.setblocking(False)
        send_error(conn, status, extra="Retry-After: 1\r\n")
    except OSError:
        pass
    try:
        conn.shutdown(socket.SHUT_WR)
    except OSError:
        pass
    conn.close()


def hand_off(conn: socket.socket, root: str, quiet: bool, slot: Slot | None) -> None:
    """Stage 2: serves the connection on a thread of its own, so that the accepting loop
    never waits on a client. The slot, if any, is given back when the connection ends."""
    # BEGIN SOLUTION stage2/py-hand-off
    def run() -> None:
        try:
            serve(conn, root, quiet)
        finally:
            if slot is not None:
                slot.release()

    try:
        threading.Thread(target=run, daemon=True).start()
    except RuntimeError:  # no thread to be had: give the slot back first, then say 503
        if slot is not None:
            slot.release()
        refuse(conn, 503)
    # STUB
    # # TODO(student): start a threading.Thread whose target serves the connection
    # # (serve(conn, root, quiet)) and then, whatever happened, gives the slot back
    # # (slot.release(), when slot is not None). If no thread can be started (RuntimeError),
    # # give the slot back first, then refuse(conn, 503).
    # todo("hand_off() is not written yet: 503, no thread")
    # if slot is not None:
    #     slot.release()
    # refuse(conn, 503)
    # END SOLUTION


def admit(limiter: Limiter | None, conn: socket.socket, client: str) -> tuple[bool, Slot | None]:
    """Stage 3: asks the limiter for a slot; refuses the connection (429 or 503) when a limit
    is full. Returns whether it was admitted, and its slot."""
    if limiter is None:
        return True, None
    # BEGIN SOLUTION stage3/py-admit
    status, slot = limiter.try_acquire(client)
    if slot is None:
        refuse(conn, status)
        return False, None
    return True, slot
    # STUB
    # # TODO(student): ask limiter.try_acquire(client); when it refuses, refuse(conn, status)
    # # and return (False, None); otherwise return (True, slot).
    # todo("admit() is not written yet: every client is admitted, without a slot")
    # return True, None
    # END SOLUTION


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="HTTP/1.0 static-file server (GET, HEAD).")
    parser.add_argument("-p", dest="port", type=int, required=True,
                        help="TCP port to listen on (0: any free one)")
    parser.add_argument("-r", dest="root", default=".",
                        help="document root (default: the working directory)")
    parser.add_argument("-b", dest="bind", default="127.0.0.1",
                        help="address to listen on (default 127.0.0.1; 0.0.0.0: every one)")
    parser.add_argument("-maxclient", type=int, default=None,
                        help="stage 3: connections at most per client address (429 beyond)")
    parser.add_argument("-maxtotal", type=int, default=None,
                        help="stage 3: connections at most in all (503 beyond)")
    parser.add_argument("--sequential", action="store_true",
                        help="stage 1: serve one client at a time, on the accepting thread")
    parser.add_argument("-q", dest="quiet", action="store_true", help="no access log")
    args = parser.parse_args(argv)
    if not 0 <= args.port <= 65535:
        parser.error(f"-p {args.port}: a port is 0 to 65535")
    if (args.maxclient is None) != (args.maxtotal is None):
        parser.error("-maxclient and -maxtotal go together")
    if args.maxclient is not None and (args.maxclient < 1 or args.maxtotal < args.maxclient):
        parser.error("limits: 1 <= -maxclient <= -maxtotal")
    if args.sequential and args.maxclient is not None:
        parser.error("--sequential serves one client at a time: it takes no limits")
    if not os.path.isdir(args.root):
        parser.error(f"-r {args.root}: not a directory")
    return args


def main(argv: list[str]) -> int:
    args = parse_args(argv)
    root = os.path.realpath(args.root)
    limiter = None if args.maxclient is None else Limiter(args.maxclient, args.maxtotal)
    try:
        listener = socket.create_server((args.bind, args.port), backlog=BACKLOG)
    except OSError as error:
        print(f"http_server: cannot listen on port {args.port}: {error}", file=sys.stderr)
        return 1
    print(LISTENING.format(port=listener.getsockname()[1], root=root), flush=True)
    with listener:
        while True:
            try:
                conn, peer = listener.accept()
            except KeyboardInterrupt:
                return 0
            except OSError:  # out of descriptors, an aborted connection: go on
                continue
            if args.sequential:  # stage 1: accept, serve, close
                serve(conn, root, args.quiet)
                continue
            admitted, slot = admit(limiter, conn, peer[0])
            if admitted:
                hand_off(conn, root, args.quiet, slot)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
