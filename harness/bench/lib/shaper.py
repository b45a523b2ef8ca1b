"""A latency-and-bandwidth proxy: the network that loopback leaves out.

On loopback a request and its reply take microseconds, so a benchmark there mostly measures
the client. Between real machines every connection costs round trips and every byte takes
its time on the wire, and that is what a concurrent server hides. The proxy puts such a
network between a client and a server, in the spirit of toxiproxy's latency and bandwidth
toxics (`tc netem` does it in the kernel, but needs root and the sch_netem module, which not
every machine has):

- it listens on 127.0.0.1 and, for each client, connects to the server only after one
  round-trip time, the TCP handshake a network would have cost;
- it copies bytes both ways, each chunk delayed by half the round-trip time;
- each direction of each connection is a link of its own of ``rate`` bytes per second (as
  for clients on different networks), with a buffer of a few round trips' worth of bytes,
  so a server that sends faster than the link is held back as it would be by TCP.

So one HTTP/1.0 request over the proxy costs two round trips plus its bytes at ``rate``.

    proxy = ShapedProxy(upstream_port=8080, rtt=0.020, rate=100e6 / 8).start()
    ... connect to proxy.port ...
    proxy.stop()

As a program: ``/usr/bin/python3 harness/bench shaper 8080 --rtt-ms 20 --mbit 100``
listens on a free port (printed) in front of a server on port 8080, until Ctrl-C.
"""

from __future__ import annotations

import argparse
import collections
import socket
import threading
import time

#: Bytes read from a socket at a time.
CHUNK = 64 * 1024
#: How long the proxy waits for the server to accept its connection.
CONNECT_TIMEOUT = 10.0


def _sleep_until(when: float) -> None:
    delay = when - time.monotonic()
    if delay > 0:
        time.sleep(delay)


class _Link:
    """One direction of one connection: a reader thread queues what @p src sends, a writer
    thread passes it on to @p dst half a round trip later, at most @p rate bytes per
    second. The queue holds at most @p limit bytes; past that the reader stops reading,
    and the sender's socket buffers fill up as they would on a slow network."""

    def __init__(self, src: socket.socket, dst: socket.socket, delay: float, rate: float,
                 limit: int):
        self.src, self.dst, self.delay, self.rate, self.limit = src, dst, delay, rate, limit
        self.queue: collections.deque[tuple[float, bytes]] = collections.deque()
        self.queued = 0
        self.ended = False  # the source has nothing more to send
        self.broken = False  # an error on either side: no orderly end to pass on
        self.cond = threading.Condition()

    def read(self) -> None:
        try:
            while True:
                data = self.src.recv(CHUNK)
                arrived = time.monotonic()
                with self.cond:
                    if not data or self.broken:
                        break
                    self.queue.append((arrived, data))
                    self.queued += len(data)
                    self.cond.notify_all()
                    while self.queued >= self.limit and not self.broken:
                        self.cond.wait()
        except OSError:
            with self.cond:
                self.broken = True
        with self.cond:
            self.ended = True
            self.cond.notify_all()

    def write(self) -> None:
        link_free = 0.0  # when the link has sent the previous chunk
        try:
            while True:
                with self.cond:
                    while not self.queue and not self.ended:
                        self.cond.wait()
                    if not self.queue:
                        break
                    arrived, data = self.queue.popleft()
                    self.queued -= len(data)
                    self.cond.notify_all()
                start = max(arrived + self.delay, link_free)
                _sleep_until(start)
                self.dst.sendall(data)
                link_free = start + len(data) / self.rate
            if not self.broken:
                self.dst.shutdown(socket.SHUT_WR)  # pass the orderly end on
        except OSError:
            with self.cond:
                self.broken = True
                self.cond.notify_all()
            for sock in (self.src, self.dst):  # wake the other threads of this connection
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


class ShapedProxy:
    """Forwards connections from 127.0.0.1:<port> to 127.0.0.1:@p upstream_port through a
    network of round-trip time @p rtt seconds and @p rate bytes per second per connection
    and direction."""

    def __init__(self, upstream_port: int, rtt: float = 0.020, rate: float = 100e6 / 8,
                 port: int = 0):
        self.upstream_port, self.rtt, self.rate = upstream_port, rtt, rate
        # A few round trips' worth of bytes in flight, and never less than a few chunks.
        self.limit = max(4 * CHUNK, int(2 * rate * rtt))
        self.listener = socket.create_server(("127.0.0.1", port), backlog=1024)
        self.port = self.listener.getsockname()[1]
        self._stopped = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    def describe(self) -> str:
        return f"{self.rtt * 1000:g} ms RTT, {self.rate * 8 / 1e6:g} Mbit/s per connection"

    def start(self) -> "ShapedProxy":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopped = True
        try:
            self.listener.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.listener.close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "ShapedProxy":
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.stop()

    def _accept_loop(self) -> None:
        while not self._stopped:
            try:
                client, _ = self.listener.accept()
            except OSError:
                if self._stopped:
                    return
                time.sleep(0.01)
                continue
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        accepted = time.monotonic()
        try:
            _sleep_until(accepted + self.rtt)  # the handshake's round trip
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port),
                                                timeout=CONNECT_TIMEOUT)
        except OSError:
            client.close()
            return
        upstream.settimeout(None)
        for sock in (client, upstream):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        links = [_Link(client, upstream, self.rtt / 2, self.rate, self.limit),
                 _Link(upstream, client, self.rtt / 2, self.rate, self.limit)]
        threads = [threading.Thread(target=step, daemon=True)
                   for link in links for step in (link.read, link.write)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        client.close()
        upstream.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="harness/bench shaper", description=__doc__.split("\n\n")[0])
    parser.add_argument("upstream_port", type=int, help="the server's port on 127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (default: free)")
    parser.add_argument("--rtt-ms", type=float, default=20.0, help="round-trip time (default 20)")
    parser.add_argument("--mbit", type=float, default=100.0,
                        help="Mbit/s per connection and direction (default 100)")
    args = parser.parse_args(argv)
    proxy = ShapedProxy(args.upstream_port, args.rtt_ms / 1000, args.mbit * 1e6 / 8, args.port)
    proxy.start()
    print(f"shaper: 127.0.0.1:{proxy.port} -> 127.0.0.1:{args.upstream_port}, "
          f"{proxy.describe()}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.stop()
    return 0

