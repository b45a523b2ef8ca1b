#!/usr/bin/env python3
"""Opens connections to a server and keeps them open, so you can watch what the server does.

Used by the lab guide (docs/stage*.md). Plain Python 3, no packages needed. Examples:

    python3 docs/tools/hold.py 8080 3                      # 3 silent connections for 30 s
    python3 docs/tools/hold.py 8080 2 --from 127.0.0.2     # from another loopback address
    python3 docs/tools/hold.py 8080 200 --spread 20        # 10 each from 127.0.0.1 ... 127.0.0.20
    python3 docs/tools/hold.py 8080 1 --trickle            # send a request, one byte a second
    python3 docs/tools/hold.py 8080 3 --background         # return once all 3 are connected

With up to 20 connections, each prints a line when it opens and another when the server
answers or closes it. With more, only a summary is printed. Ctrl-C (or --seconds) ends it.

--background is for the guide's pasted blocks: the command returns only when every
connection has been opened (the TCP handshake is complete, so the server's kernel has queued
it), prints "holding N connections" and its process id, and keeps holding them in the
background. A command run after it therefore always comes after these connections: no
`&` and `sleep` to guess how long Python takes to start. `kill PID` ends it early.
"""

from __future__ import annotations

import argparse
import collections
import os
import selectors
import socket
import sys
import time

TRICKLE = b"GET /index.html HTTP/1.0\r\nX-Slow: " + b"s" * 1000
VERBOSE_UP_TO = 20


def line(text: str) -> None:
    """Prints @p text and its newline with one write: the background holder and its parent
    share stdout, and under PYTHONUNBUFFERED print() would write the two apart, so another
    process's line could land between them."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("port", type=int, help="server port on --host")
    parser.add_argument("count", type=int, nargs="?", default=1, help="connections (default 1)")
    parser.add_argument("--host", default="127.0.0.1", help="server address (default 127.0.0.1)")
    parser.add_argument("--from", dest="source", default=None,
                        help="local address to connect from, e.g. 127.0.0.2 "
                             "(every 127.x.y.z address is local on Linux)")
    parser.add_argument("--spread", type=int, default=1, metavar="N",
                        help="take turns over N source addresses counting up from --from "
                             "(default 127.0.0.1), to look like N clients")
    parser.add_argument("--seconds", type=float, default=30.0, help="how long to hold (default 30)")
    parser.add_argument("--trickle", action="store_true",
                        help="send a request one byte per second instead of staying silent")
    parser.add_argument("--background", action="store_true",
                        help="return once every connection is open, printing 'holding N "
                             "connections', and go on holding them in the background")
    args = parser.parse_args()
    # In the background, a child process holds the connections; the parent waits until the
    # child has opened them all, says so and returns. The child reports through a pipe.
    ready_pipe = None
    if args.background:
        read_end, write_end = os.pipe()
        child = os.fork()
        if child:
            os.close(write_end)
            with os.fdopen(read_end, "rb") as ready:
                report = ready.read()  # the child writes its count, or dies: EOF either way
            if not report:
                line("hold.py: the background holder ended before it was ready")
                return 1
            count = int(report)
            plural = "" if count == 1 else "s"
            line(f"holding {count} connection{plural} for {args.seconds:g} s "
                 f"in the background (pid {child})")
            return 0
        os.close(read_end)
        ready_pipe = os.fdopen(write_end, "wb")
    verbose = args.count <= VERBOSE_UP_TO

    def say(text: str) -> None:
        if verbose:
            line(text)

    if args.spread > 1:
        base = [int(part) for part in (args.source or "127.0.0.1").split(".")]
        first = base[2] * 256 + base[3]
        sources = [(f"{base[0]}.{base[1]}.{(first + k) // 256}.{(first + k) % 256}", 0)
                   for k in range(args.spread)]
    else:
        sources = [(args.source, 0) if args.source else None]
    start = time.monotonic()
    selector = selectors.DefaultSelector()  # epoll on Linux: no 1024-descriptor limit
    opened_at: dict[socket.socket, tuple[int, float]] = {}
    outcomes: collections.Counter[str] = collections.Counter()
    for i in range(1, args.count + 1):
        try:
            sock = socket.create_connection((args.host, args.port), timeout=5,
                                            source_address=sources[(i - 1) % len(sources)])
        except OSError as error:
            say(f"#{i}: cannot connect: {error}")
            outcomes[f"cannot connect: {error}"] += 1
            continue
        sock.setblocking(False)
        selector.register(sock, selectors.EVENT_READ)
        opened_at[sock] = (i, time.monotonic())
        say(f"#{i}: connected from {sock.getsockname()[0]}:{sock.getsockname()[1]}")
    if not verbose:
        line(f"{len(opened_at)} of {args.count} connections open")
    if ready_pipe is not None:
        ready_pipe.write(str(len(opened_at)).encode())
        ready_pipe.close()

    sent = 0
    next_byte = time.monotonic()
    try:
        while opened_at and time.monotonic() - start < args.seconds:
            if args.trickle and time.monotonic() >= next_byte and sent < len(TRICKLE):
                for sock in opened_at:
                    try:
                        sock.send(TRICKLE[sent : sent + 1])
                    except OSError:
                        pass
                sent += 1
                next_byte += 1.0
            for key, _ in selector.select(timeout=0.2):
                sock = key.fileobj
                i, opened = opened_at.pop(sock)
                selector.unregister(sock)
                try:
                    data = sock.recv(65536)
                except OSError as error:
                    data, outcome = b"", f"error: {error}"
                else:
                    outcome = "closed by the server"
                if data:
                    outcome = "server said: " + data.split(b"\r\n", 1)[0].decode("latin-1")
                sock.close()
                outcomes[outcome] += 1
                say(f"#{i}: after {time.monotonic() - opened:.1f} s, {outcome}")
    except KeyboardInterrupt:
        pass
    for sock in opened_at:
        sock.close()
    if not verbose:
        for outcome, times in outcomes.most_common():
            line(f"{times} x {outcome}")
    line(f"done after {time.monotonic() - start:.1f} s; {len(opened_at)} still open at the end")
    return 0


if __name__ == "__main__":
    sys.exit(main())
