#!/usr/bin/env python3
"""A classroom demo of the limits, to watch on the scoreboard: ./lab demo [--auto SECONDS].

Starts stage 3 (or --stage stage4_event) with --status on a free port, prints the scoreboard's
URL, then runs named phases. Each says what to look for and lasts until Enter (or, with
--auto SECONDS, that long): a dozen clients fetching; one address holding idle connections
until the per-client limit refuses it; a hundred addresses filling the total; the same with
--reclaim-idle; a slow reader; then stage 1 and stage 2 side by side under one silent client.
Everything is bounded, and every server and client it started ends with it, Ctrl-C included.
Standard library only; needs the built servers (./lab demo builds them).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

KIT_DIR = Path(__file__).resolve().parents[2]
#: The limits the course launches stage 3 with.
MAX_CLIENT, MAX_TOTAL = 12, 60
#: The servers' read deadline: long enough to watch idle connections, short enough to end.
DEADLINE_SECONDS = 20
#: Most requests one fetching client makes in a phase; most connections a phase opens.
MAX_FETCHES, MAX_CONNECTIONS = 2000, 200
#: The file the slow reader asks for, and how it reads it: a little, then a pause.
BIG_FILE_BYTES, SLOW_READ_BYTES, SLOW_READ_PAUSE = 16 << 20, 4096, 0.05
#: Longest wait for a server to say it listens, and to stop.
START_TIMEOUT, STOP_TIMEOUT = 10.0, 5.0


class Server:
    """One stage, started on a free port; stop() ends it.

    It stays in the demo's process group and session: whatever ends the demo's group (Ctrl-C
    in its terminal, or a test's kill) reaches the servers too, even if the demo itself
    cannot clean up."""

    def __init__(self, bin_dir: Path, stage: str, root: Path, *args: str, port: int = 0):
        self.stage = stage
        self.proc = subprocess.Popen(
            [str(bin_dir / stage), "-p", str(port), "-r", str(root), "-q", *args],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
            text=True)
        line = ""
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and "listening on" not in line:
            line = self.proc.stdout.readline()
            if not line and self.proc.poll() is not None:
                break
        match = re.search(r"listening on http://[^:]+:(\d+)/", line)
        if not match:
            self.stop()
            raise RuntimeError(f"{stage} did not start: {line!r}")
        self.port = int(match[1])
        print(f"  started {stage} (pid {self.proc.pid}) on port {self.port}", flush=True)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc.stdout.close()


class Clients:
    """Client sockets and threads of one phase; close() ends them all."""

    def __init__(self):
        self.socks: list[socket.socket] = []
        self.threads: list[threading.Thread] = []
        self.stop = threading.Event()
        self.codes: collections.Counter = collections.Counter()
        self.lock = threading.Lock()

    def connect(self, port: int, source: str = "127.0.0.1", rcvbuf: int | None = None):
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(5)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.bind((source, 0))
        sock.connect(("127.0.0.1", port))
        self.socks.append(sock)
        return sock

    def count(self, code: str) -> None:
        with self.lock:
            self.codes[code] += 1

    def refused(self, sock: socket.socket, wait: float = 0.3) -> str | None:
        """The status code the server sent at once on @p sock (a refusal), or None."""
        sock.settimeout(wait)
        try:
            head = sock.recv(64)
        except (TimeoutError, OSError):
            return None
        return head.split()[1].decode() if head.startswith(b"HTTP/") else "closed"

    def spawn(self, target, *args) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.threads.append(thread)

    def close(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=10)
        for sock in self.socks:
            sock.close()


def fetch(port: int, path: str, source: str = "127.0.0.1", timeout: float = 5) -> str:
    """GET @p path; the status code, or what went wrong."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout,
                                      source_address=(source, 0)) as sock:
            sock.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
            data = b""
            while chunk := sock.recv(65536):
                data += chunk
        return data.split()[1].decode() if data.startswith(b"HTTP/") else "closed"
    except (TimeoutError, socket.timeout):
        return "no answer"
    except OSError as error:
        return error.strerror or str(error)


class Demo:
    """The phases, run in order, and everything they started."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.bin_dir = Path(args.bin).resolve()
        self.servers: list[Server] = []
        self.port = 0
        self.clients: Clients | None = None
        self.root = Path(tempfile.mkdtemp(prefix="lab-demo-"))
        shutil.copytree(KIT_DIR / "www", self.root, dirs_exist_ok=True)
        with open(self.root / "big.bin", "wb") as big:
            big.truncate(BIG_FILE_BYTES)

    def start(self, stage: str, *extra: str, port: int = 0) -> Server:
        server = Server(self.bin_dir, stage, self.root, *extra, port=port)
        self.servers.append(server)
        return server

    def stop_servers(self) -> None:
        while self.servers:
            self.servers.pop().stop()

    def limited(self, *extra: str) -> Server:
        """The stage under study with the course's limits and the scoreboard."""
        self.stop_servers()
        # Restarted on the same port, so that the scoreboard's tab goes on showing it.
        server = self.start(self.args.stage, "-maxclient", str(MAX_CLIENT), "-maxtotal",
                            str(MAX_TOTAL), "-t", str(DEADLINE_SECONDS), "--status", *extra,
                            port=self.port)
        if not self.port:
            self.port = server.port
            print(f"  scoreboard: http://127.0.0.1:{server.port}/server-status?view=html "
                  "(open it in a browser; it stays at this address)", flush=True)
        return server

    def phase(self, number: int, title: str, look_for: str) -> Clients:
        print(f"\n== Phase {number}: {title}\n   Look for: {look_for}", flush=True)
        self.clients = Clients()
        return self.clients

    def pause(self) -> None:
        if self.args.auto is not None:
            time.sleep(self.args.auto)
        else:
            input("   (Enter for the next phase) ")
        clients, self.clients = self.clients, None
        if clients is not None:
            clients.close()
            if clients.codes:
                print("   replies: " + ", ".join(f"{code} x{n}" for code, n in
                                                  sorted(clients.codes.items())), flush=True)

    def run(self) -> None:
        server = self.limited()
        self.dozen_fetching(server)
        self.one_address_holding(server)
        self.hundred_addresses(server)
        self.hundred_addresses(self.limited("--reclaim-idle"), reclaim=True)
        self.slow_reader(self.limited())
        self.sequential_beside_threaded()
        print("\nDemo over: every server and client it started is stopped.", flush=True)

    def dozen_fetching(self, server: Server) -> None:
        clients = self.phase(1, "a dozen clients fetching",
                             "cells flicker S and free; 'served' climbs; nothing is refused")

        def fetcher(i: int) -> None:
            for _ in range(MAX_FETCHES):
                if clients.stop.wait(0.05):
                    return
                clients.count(fetch(server.port, "/index.html", f"127.0.1.{i + 1}"))

        for i in range(12):
            clients.spawn(fetcher, i)
        self.pause()

    def one_address_holding(self, server: Server) -> None:
        clients = self.phase(2, "one address holding idle connections",
                             f"127.0.2.1 fills {MAX_CLIENT} R cells, its count turns red at "
                             f"{MAX_CLIENT} / {MAX_CLIENT}, and the next one is refused (429)")
        for _ in range(MAX_CLIENT + 1):
            sock = clients.connect(server.port, "127.0.2.1")
            if code := clients.refused(sock, wait=0.1):
                clients.count(code)
                print(f"   connection {len(clients.socks)} refused: {code}", flush=True)
                break
        self.pause()

    def hundred_addresses(self, server: Server, reclaim: bool = False) -> None:
        if reclaim:
            clients = self.phase(4, "the same hundred, with --reclaim-idle",
                                 "no 503: each newcomer takes the slot of the oldest idle "
                                 "connection, which is told 408 ('reclaimed' climbs)")
        else:
            clients = self.phase(3, "a hundred addresses filling the total",
                                 f"all {MAX_TOTAL} cells busy, one per address; the other 40 "
                                 "addresses are refused in all (503)")
        admitted = []
        for i in range(100):
            sock = clients.connect(server.port, f"127.0.3.{i + 1}")
            if code := clients.refused(sock, wait=0.02):
                clients.count(code)
            else:
                admitted.append(sock)
        # Those reclaimed later were told 408 after they were admitted: count those too.
        for sock in admitted:
            if code := clients.refused(sock, wait=0.001):
                clients.count(code)
        self.pause()

    def slow_reader(self, server: Server) -> None:
        clients = self.phase(5, "a slow reader",
                             f"one S cell that stays: a {BIG_FILE_BYTES >> 20} MB reply taken "
                             "4 KB at a time; the send deadline cuts it only if it stops reading")
        sock = clients.connect(server.port, "127.0.5.1", rcvbuf=SLOW_READ_BYTES)
        sock.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")

        def read_slowly() -> None:
            sock.settimeout(1)
            while not clients.stop.wait(SLOW_READ_PAUSE):
                try:
                    if not sock.recv(SLOW_READ_BYTES):
                        return
                except (TimeoutError, OSError):
                    return

        clients.spawn(read_slowly)
        self.pause()

    def sequential_beside_threaded(self) -> None:
        self.stop_servers()
        clients = self.phase(6, "stage 1 and stage 2 side by side under one silent client",
                             "the same silent connection stops stage 1 (no answer for a "
                             "visitor) while stage 2 answers at once")
        for stage in ("stage1_sequential", "stage2_threaded"):
            server = self.start(stage, "-t", str(DEADLINE_SECONDS))
            clients.connect(server.port, "127.0.6.1")  # connects and says nothing
            time.sleep(0.1)  # lets stage 1 take it from the queue and start waiting on it
            started = time.monotonic()
            code = fetch(server.port, "/index.html", "127.0.6.2", timeout=2)
            print(f"   {stage}: a visitor's GET /index.html -> {code} "
                  f"after {time.monotonic() - started:.2f} s", flush=True)
        self.pause()

    def close(self) -> None:
        if self.clients is not None:
            self.clients.close()
        self.stop_servers()
        shutil.rmtree(self.root, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(prog="harness/demo", description=__doc__.split("\n\n")[0])
    parser.add_argument("--auto", type=float, metavar="SECONDS",
                        help="go on by itself after SECONDS per phase instead of waiting for Enter")
    parser.add_argument("--stage", default="stage3_limited",
                        choices=["stage3_limited", "stage4_event"], help="the limited stage shown")
    parser.add_argument("--bin", default=str(KIT_DIR / "build" / "bin"),
                        help="where the built servers are (default build/bin)")
    args = parser.parse_args()
    if args.auto is not None and not 0 <= args.auto <= 600:
        parser.error("--auto takes 0 to 600 seconds")
    # SIGTERM ends the demo like Ctrl-C: through the cleanup below.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    demo = None
    try:
        demo = Demo(args)
        demo.run()
        return 0
    except KeyboardInterrupt:
        print("\nInterrupted: stopping everything the demo started.", file=sys.stderr)
        return 130
    except (OSError, RuntimeError) as error:
        print(f"demo: {error}", file=sys.stderr)
        return 1
    finally:
        if demo is not None:
            demo.close()


if __name__ == "__main__":
    sys.exit(main())
