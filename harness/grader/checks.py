"""The built-in checks. Points, visibility, profiles and timeouts here are defaults: the
rubric file (harness/grader/rubric.toml) is what a course edits.

Every check gets a fresh server on a fresh copy of the document root. Clients that must look
different to the server use different loopback source addresses (127.x.y.z); the grader's
readiness probe comes from 127.0.0.1, which the checks avoid.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from typing import List, Optional

from . import httpclient
from .context import REFUSAL_STATUSES, CheckContext, client_ips, is_refusal, readable
from .registry import CheckFailed, check
from .server import describe_status

THREADED = ("threaded", "limited")

#: The file types the checks expect, as media types (parameters such as charset ignored).
MEDIA_TYPES = {
    "index.html": "text/html",
    "logo.png": "image/png",
    "style.css": "text/css",
    "guide.pdf": "application/pdf",
}

#: Within this many seconds a server that has threads answers beside silent clients.
#: Deliberately capped below stage 1's own 10 s read deadline, whatever --timeout-scale says:
#: a sequential server frees itself after that deadline and would then look threaded.
NONBLOCKING_BOUND_CAP = 8.0

#: How long the sequential check watches for a (wrongly) early answer. Not scaled: a longer
#: wait would only be stricter, and could outlast a sequential server's read deadline.
BLOCKED_WINDOW = 1.0


def get_file(ctx: CheckContext, rel: str, method: str = "GET", source_ip: str | None = None,
             timeout: float = 10.0):
    """Fetches /@p rel and checks status 200, media type, and (for GET) the exact bytes."""
    reply = ctx.request("/" + rel, method=method, source_ip=source_ip, timeout=timeout)
    ctx.expect(reply.status == 200, f"{method} /{rel}: expected 200, got {reply.status_line!r}")
    expected_type = MEDIA_TYPES.get(rel)
    if expected_type:
        ctx.expect(reply.media_type == expected_type,
                   f"{method} /{rel}: Content-Type {reply.headers.get('content-type')!r}, "
                   f"expected {expected_type}")
    if method == "GET":
        expected = ctx.file_bytes(rel)
        ctx.expect(reply.body == expected,
                   f"GET /{rel}: body of {len(reply.body)} bytes differs from the file "
                   f"({len(expected)} bytes)")
    return reply


# --------------------------------------------------------------------------------------------
# Files, types, errors (every profile)
# --------------------------------------------------------------------------------------------


@check("index_html", "GET /index.html: exact bytes, Content-Type text/html", points=10, timeout=20)
def index_html(ctx: CheckContext):
    reply = get_file(ctx, "index.html")
    ctx.note(f"200, {len(reply.body)} bytes, Content-Type {reply.headers.get('content-type')}")


#: The files of content_types; each earns its share of the points.
TYPED_FILES = ("logo.png", "style.css", "guide.pdf")


@check("content_types", "logo.png, style.css, guide.pdf: exact bytes and Content-Types "
       "(a share of the points per file)", points=10, timeout=20)
def content_types(ctx: CheckContext):
    problems = []
    # Each file gets a share of the check's time, so every file gets its verdict.
    per_file = ctx.check.timeout / (len(TYPED_FILES) + 1)
    for rel in TYPED_FILES:
        try:
            reply = get_file(ctx, rel, timeout=per_file)
            ctx.note(f"/{rel}: {reply.headers.get('content-type')}: right")
        except CheckFailed as error:
            problems.append(str(error))
            ctx.note(f"/{rel}: wrong: {error}")  # kept even if a later file times out
        ctx.partial(len(TYPED_FILES) - len(problems), len(TYPED_FILES))
    if problems:
        ctx.fail(f"{len(problems)} of {len(TYPED_FILES)} files wrong: " + "; ".join(problems))


@check("not_found", "GET of a missing file: 404", points=5, timeout=20)
def not_found(ctx: CheckContext):
    target = f"/no-such-file-{os.getpid()}.html"
    reply = ctx.request(target)
    ctx.expect(reply.status == 404, f"GET {target}: expected 404, got {reply.status_line!r}")


@check("head", "HEAD /logo.png: headers of GET, no body", points=5, timeout=20)
def head(ctx: CheckContext):
    sock = ctx.connect()
    try:
        sock.sendall(httpclient.request_bytes("HEAD", "/logo.png"))
        raw, how = ctx.read_reply(sock, 10, method="HEAD")
        if how == "complete":  # a head is there: see whether a body follows it
            more, how = ctx.read_reply(sock, 1.0, method="GET")
            raw += more
    finally:
        ctx.close(sock)
    reply = ctx.parse(raw, "eof" if how == "timeout" and raw else how, "HEAD /logo.png", 10)
    ctx.expect(reply.status == 200, f"HEAD /logo.png: expected 200, got {reply.status_line!r}")
    ctx.expect(reply.media_type == "image/png",
               f"HEAD /logo.png: Content-Type {reply.headers.get('content-type')!r}, expected image/png")
    size = len(ctx.file_bytes("logo.png"))
    if "content-length" in reply.headers:
        ctx.expect(reply.headers["content-length"] == str(size),
                   f"HEAD /logo.png: Content-Length {reply.headers['content-length']}, file has {size} bytes")
    ctx.expect(not reply.body, f"HEAD /logo.png: {len(reply.body)} body bytes after the head; "
                               f"a HEAD reply has none")
    ctx.note(f"200, Content-Type {reply.headers.get('content-type')}, "
             f"Content-Length {reply.headers.get('content-length', '(none)')}, no body")


#: Requests that try to climb out of the document root to secret.txt beside it.
TRAVERSALS = [
    "/../secret.txt",
    "/%2e%2e/secret.txt",
    "/%2E%2E/secret.txt",
    "/..%2fsecret.txt",
    "/%2e%2e%2fsecret.txt",
    "/./../secret.txt",
    "/a/../../secret.txt",
    "/grader-data/../../secret.txt",
    "//../secret.txt",
    "/..%5csecret.txt",
    "/%252e%252e/secret.txt",
    "../secret.txt",
    "http://127.0.0.1/../secret.txt",
]


@check("traversal", "Path traversal (../, %2e%2e, ...) does not leak a file beside the root",
       points=10, timeout=30)
def traversal(ctx: CheckContext):
    leaks = []
    for target in TRAVERSALS:
        raw, how = ctx.exchange(f"GET {target} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n".encode(), timeout=5)
        if ctx.secret_marker.encode() in raw:
            leaks.append(f"GET {target} → {httpclient.describe(raw, how)}")
        else:
            status = raw.split(b"\n", 1)[0].decode("latin-1").strip() or f"({how}, no reply)"
            ctx.note(f"GET {target} → {status}")
    ctx.expect(not leaks, "the secret file beside the document root was served: " + "; ".join(leaks))


#: The files the load checks fetch, from 2 MiB down to a few hundred bytes.
MIXED_FILES = ["grader-data/big.bin", "grader-data/medium.bin", "logo.png", "index.html",
               "guide.pdf", "style.css"]

#: Requests of the survival check: enough that a server which breaks after a handful, leaks a
#: descriptor or a thread per request on a small limit, or crashes now and then, is caught.
SURVIVAL_REQUESTS = 300


@check("many_requests", f"{SURVIVAL_REQUESTS} requests one after another, mixed files: all "
       "byte-exact, and the server still runs", points=10, timeout=90)
def many_requests(ctx: CheckContext):
    expected = {rel: ctx.file_bytes(rel) for rel in MIXED_FILES}
    ips = client_ips(25, 6)
    start = time.monotonic()
    for i in range(SURVIVAL_REQUESTS):
        rel = MIXED_FILES[i % len(MIXED_FILES)]
        server = ctx.server
        if server is not None and not server.alive():
            ctx.fail(f"the server exited (status {describe_status(server.exit_status())}) after "
                     f"{i} of {SURVIVAL_REQUESTS} requests")
        try:
            reply = ctx.request("/" + rel, source_ip=ips[i % len(ips)])
        except CheckFailed as error:
            ctx.fail(f"request {i + 1} of {SURVIVAL_REQUESTS}: {error}")
        ctx.expect(reply.status == 200 and reply.body == expected[rel],
                   f"request {i + 1} of {SURVIVAL_REQUESTS}, GET /{rel}: {reply.status_line!r} "
                   f"with {len(reply.body)} bytes (the file has {len(expected[rel])})")
    ctx.note(f"{SURVIVAL_REQUESTS} requests, all byte-exact, in {time.monotonic() - start:.1f} s")


#: How many bytes a stalled client lets in before it stops reading: its receive buffer.
STALLED_RCVBUF = 4096
#: What the stalled client asks for: more than a server's socket buffers take (Linux lets a
#: TCP send buffer grow to 4 MiB), so a server that writes it with blocking calls is stuck.
STALLED_FILE = ("grader-data/stalled.bin", 16 << 20)


@check("concurrent_fetch", "while one client stalls mid-download, 23 others fetch mixed files "
       "at once, byte-exact", points=10, profiles=THREADED, timeout=90)
def concurrent_fetch(ctx: CheckContext):
    expected = {rel: ctx.file_bytes(rel) for rel in MIXED_FILES}
    count = 24
    per_ip = 4
    if ctx.profile == "limited":  # stay inside the limits under test
        count = max(2, min(count, ctx.maxtotal - 1))
        per_ip = max(1, min(per_ip, ctx.maxclient))
    ips = client_ips(20, (count + per_ip - 1) // per_ip)
    bound = min(ctx.seconds(5), NONBLOCKING_BOUND_CAP)
    stalled_rel, stalled_size = STALLED_FILE
    stalled_bytes = os.urandom(stalled_size)
    ctx.add_file(stalled_rel, stalled_bytes)

    # The stalled client asks first and then reads nothing, so a server that serves one
    # connection at a time is stuck sending to it.
    stalled = ctx.connect(ips[0], rcvbuf=STALLED_RCVBUF)
    stalled.sendall(httpclient.request_bytes("GET", "/" + stalled_rel))
    stalled.settimeout(ctx.seconds(10))
    try:
        stalled.recv(1, socket.MSG_PEEK)  # the server has started sending to it
    except OSError as error:
        ctx.fail(f"GET /{stalled_rel}: no reply within {ctx.seconds(10):g} s ({error})")
    barrier = threading.Barrier(count - 1, timeout=ctx.seconds(20))

    def client(i: int):
        rel = MIXED_FILES[i % len(MIXED_FILES)]
        try:
            sock = ctx.connect(ips[i // per_ip], timeout=20)
        except CheckFailed:
            barrier.abort()  # the others need not wait for a client that will never come
            raise
        try:
            barrier.wait()
            sock.sendall(httpclient.request_bytes("GET", "/" + rel))
            raw, how = ctx.read_reply(sock, bound / ctx.scale)
        finally:
            ctx.close(sock)
        try:
            reply = httpclient.parse_response(raw, how, bound)
        except httpclient.ProtocolError as error:
            return f"client {i} GET /{rel}: {error}"
        if reply.status != 200:
            return f"client {i} GET /{rel}: {reply.status_line!r}"
        if reply.body != expected[rel]:
            return (f"client {i} GET /{rel}: {len(reply.body)} bytes that differ from the file's "
                    f"{len(expected[rel])} ({how})")
        return None

    outcomes: list[str | None] = [f"client {i} did not finish" for i in range(count)]
    outcomes[0] = None

    def run(i: int):
        try:
            outcomes[i] = client(i)
        except threading.BrokenBarrierError:
            outcomes[i] = f"client {i} could not start with the others (another failed to connect?)"
        except CheckFailed as error:
            outcomes[i] = f"client {i}: {error}"
        except OSError as error:
            outcomes[i] = f"client {i}: {type(error).__name__}: {error}"

    # Daemon threads, not a pool: if the check times out, nothing waits for them at exit.
    start = time.monotonic()
    threads = [threading.Thread(target=run, args=(i,), daemon=True) for i in range(1, count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - start
    errors = [outcome for outcome in outcomes if outcome]
    if errors:
        ctx.fail(f"{len(errors)} of {count - 1} fetches failed while one client stalled in the "
                 f"middle of GET /{stalled_rel} (each had {bound:g} s; a server that serves one "
                 f"connection at a time waits for the stalled one): " + "; ".join(errors[:5]))
    ctx.note(f"{count - 1} clients from {len(ips)} addresses, all byte-exact, in {elapsed:.2f} s, "
             f"while one client stalled")
    # Now the stalled client reads: its file must arrive whole.
    raw, how = ctx.read_reply(stalled, 60)
    ctx.close(stalled)
    reply = ctx.parse(raw, how, f"GET /{stalled_rel} by the stalled client, once it read", 60)
    ctx.expect(reply.status == 200 and reply.body == stalled_bytes,
               f"the stalled client's GET /{stalled_rel}: {reply.status_line!r} with "
               f"{len(reply.body)} bytes that differ from the file's {stalled_size}")
    ctx.note("the stalled client then received its file whole")


# --------------------------------------------------------------------------------------------
# Blocking behaviour
# --------------------------------------------------------------------------------------------


@check("silent_client_blocks", "Sequential: a silent client holds up the next request",
       points=20, profiles=("sequential",), timeout=30)
def silent_client_blocks(ctx: CheckContext):
    silent = ctx.connect(client_ips(30, 1)[0])
    second = ctx.connect(client_ips(31, 1)[0])
    second.sendall(httpclient.request_bytes("GET", "/index.html"))
    time.sleep(BLOCKED_WINDOW)
    if readable([second]):
        raw, how = ctx.read_reply(second, 2)
        ctx.fail(f"a second client was answered ({httpclient.describe(raw, how)}) while a first "
                 f"client was connected and silent: this server is not sequential (expected "
                 f"stage-1 behaviour: one connection at a time)")
    ctx.note(f"no answer for {BLOCKED_WINDOW:g} s while the first client stayed silent")
    ctx.close(silent)
    start = time.monotonic()
    raw, how = ctx.read_reply(second, 10)
    reply = ctx.parse(raw, how, "GET /index.html after the silent client closed", 10)
    ctx.expect(reply.status == 200 and reply.body == ctx.file_bytes("index.html"),
               f"after the silent client closed, GET /index.html got {reply.status_line!r} "
               f"with {len(reply.body)} bytes")
    ctx.note(f"served {time.monotonic() - start:.2f} s after the silent client closed")


@check("silent_client_does_not_block", "Threaded: silent clients do not hold up others",
       points=10, profiles=THREADED, timeout=30)
def silent_client_does_not_block(ctx: CheckContext):
    ips = client_ips(32, 4)
    silent = [ctx.connect(ip) for ip in ips[:3]]
    silent[0].sendall(b"GET /ind")  # one stalls mid-request line, one mid-head, one before a byte
    silent[1].sendall(b"GET /index.html HTTP/1.0\r\nHost: x\r\n")
    bound = min(ctx.seconds(3), NONBLOCKING_BOUND_CAP)
    start = time.monotonic()
    raw, how = ctx.exchange(httpclient.request_bytes("GET", "/index.html"), ips[3], bound / ctx.scale)
    elapsed = time.monotonic() - start
    if not raw and how == "timeout":
        ctx.fail(f"GET /index.html got no reply within {bound:g} s while 3 other clients were "
                 f"connected and silent: the server seems to serve one connection at a time")
    reply = ctx.parse(raw, how, "GET /index.html beside 3 silent clients", bound / ctx.scale)
    ctx.expect(reply.status == 200 and reply.body == ctx.file_bytes("index.html"),
               f"GET /index.html beside 3 silent clients got {reply.status_line!r}")
    ctx.note(f"served in {elapsed:.2f} s beside 3 silent clients")
    for sock in silent:
        ctx.close(sock)


# --------------------------------------------------------------------------------------------
# Limits (profile "limited")
# --------------------------------------------------------------------------------------------


def expect_refused(ctx: CheckContext, source_ip: str, situation: str, hint: str = "") -> httpclient.Response:
    """Opens one more connection from @p source_ip and expects 429 or 503.

    The refusal may come at once (before any request) or after the request; either is fine.
    """
    sock = ctx.connect(source_ip)
    try:
        raw, how = ctx.read_reply(sock, 2)
        sent = False
        if not raw and how == "timeout":  # nothing yet: ask, and see what the answer is
            sent = True
            try:
                sock.sendall(httpclient.request_bytes("GET", "/index.html"))
            except (BrokenPipeError, ConnectionResetError):
                pass
            raw, how = ctx.read_reply(sock, 10)
    finally:
        ctx.close(sock)
    try:
        reply = httpclient.parse_response(raw, how, ctx.seconds(10 if sent else 2))
    except httpclient.ProtocolError as error:
        ctx.fail(f"{situation}, a further connection from {source_ip} should have been refused "
                 f"with 429 or 503, but: {error}")
    if reply.status not in REFUSAL_STATUSES:
        when = ("it got no reply within 2 s without a request, and GET /index.html on it was "
                "answered " if sent else "it was answered ")
        ctx.fail(f"{situation}, a further connection from {source_ip} was not refused: {when}"
                 f"{reply.status_line!r}. Expected 429 Too Many Requests (or 503).{hint}")
    ctx.note(f"{situation}: a further connection from {source_ip} got {reply.status_line!r}"
             f"{' after sending its request' if sent else ' at once'}")
    return reply


def refusal_point(ctx: CheckContext, sources: List[str]) -> Optional[int]:
    """Opens one more idle connection per entry of @p sources, on top of those already held,
    and returns the 1-based position of the first that the server refused at once (429 or
    503), or None when none was. Closes them all again. For diagnosing a limit that did not
    trigger where it should: where does it trigger, if anywhere?"""
    socks = []
    try:
        for ip in sources:
            socks.append(ctx.connect(ip, timeout=2))
    except CheckFailed:
        pass  # the backlog is full: what was opened still tells
    time.sleep(0.5)  # a server that refuses answers at once
    answered = set(readable(socks))
    found = None
    for position, sock in enumerate(socks, 1):
        if sock in answered:
            raw, how = ctx.read_reply(sock, 1.0)
            if is_refusal(raw):
                found = position
                break
    for sock in socks:
        ctx.close(sock)
    return found


def per_client_diagnosis(ctx: CheckContext, client: str) -> str:
    """Why the per-client limit did not trigger, found by opening more connections from
    @p client (it holds maxclient already) up to one more than maxtotal."""
    extra = ctx.maxtotal + 1 - ctx.maxclient
    if extra < 1:
        return ""
    position = refusal_point(ctx, [client] * extra)
    if position is None:
        return (f"No limit at all: {ctx.maxtotal + 1} connections from this one address were "
                f"all admitted, more than -maxtotal {ctx.maxtotal} allows in all.")
    nth = ctx.maxclient + position
    if nth == ctx.maxtotal + 1:
        return (f"The total limit refused connection {nth}, but the per-client limit never "
                f"triggered: it counts a client's connections by something other than its IP "
                f"address. Keyed by IP:port (each connection has its own source port) or by "
                f"socket, it never triggers.")
    return (f"Connection {nth} from this address was refused: the per-client limit seems to be "
            f"{nth - 1}, not the -maxclient {ctx.maxclient} the server was given. Does it ignore "
            f"the option (a constant instead)?")


def total_diagnosis(ctx: CheckContext, held: int) -> str:
    """Why the total limit did not trigger with @p held connections open, found by opening up
    to maxtotal more from fresh addresses (few per address)."""
    extra = min(ctx.maxtotal, 200)
    per_ip = max(1, min(ctx.maxclient // 2, 8))
    ips = client_ips(52, (extra + per_ip - 1) // per_ip)
    position = refusal_point(ctx, [ips[i // per_ip] for i in range(extra)])
    if position is None:
        return (f"No total limit: {held + extra} connections in all were admitted, from "
                f"addresses each below -maxclient {ctx.maxclient}.")
    return (f"Connection {held + position} in all was refused: the total limit seems to be "
            f"{held + position - 1}, not the -maxtotal {ctx.maxtotal} the server was given. Does "
            f"it ignore the option (a constant instead)?")


@check("per_client_limit", "Limited: the (maxclient+1)-th connection from one IP is refused "
       "(429/503), other IPs are served", points=10, profiles=("limited",), timeout=45)
def per_client_limit(ctx: CheckContext):
    client, other = client_ips(40, 2)
    held = ctx.hold([client] * ctx.maxclient)
    ctx.note(f"{ctx.maxclient} idle connections from {client} stayed open")
    try:
        expect_refused(ctx, client, f"with {ctx.maxclient} idle connections from {client} open")
    except CheckFailed as error:
        ctx.fail(f"{error} {per_client_diagnosis(ctx, client)}")
    reply = ctx.request("/index.html", source_ip=other)
    ctx.expect(reply.status == 200, f"meanwhile GET /index.html from another address ({other}) "
                                    f"got {reply.status_line!r}, expected 200")
    ctx.note(f"another address ({other}) was served meanwhile")
    # A held connection that finally asks is served: holding a slot is not being refused.
    held[0].sendall(httpclient.request_bytes("GET", "/index.html"))
    raw, how = ctx.read_reply(held[0], 10)
    reply = ctx.parse(raw, how, f"GET /index.html on one of the {ctx.maxclient} held connections", 10)
    ctx.expect(reply.status == 200, f"a held (admitted) connection that then sent GET /index.html "
                                    f"got {reply.status_line!r}, expected 200")


@check("per_client_release", "Limited: closing connections gives the client's slots back",
       points=5, profiles=("limited",), timeout=45)
def per_client_release(ctx: CheckContext):
    client = client_ips(41, 1)[0]
    held = ctx.hold([client] * ctx.maxclient)
    expect_refused(ctx, client, f"with {ctx.maxclient} idle connections from {client} open",
                   " (Cannot check that slots come back: the limit itself did not trigger; "
                   "see per_client_limit.)")
    ctx.close(held.pop())
    reply, tries = ctx.wait_for_service(client, 5)
    ctx.note(f"after closing one, {client} was served again (try {tries})")
    for sock in held:
        ctx.close(sock)
    ctx.hold([client] * ctx.maxclient)
    ctx.note(f"after closing all, {ctx.maxclient} connections from {client} were admitted again")


def total_layout(ctx: CheckContext, block: int) -> tuple[list[str], str]:
    """Source addresses for maxtotal connections, no address near its per-client limit."""
    per_ip = max(1, min(ctx.maxclient // 2, 8))
    ips = client_ips(block, (ctx.maxtotal + per_ip - 1) // per_ip + 1)
    return [ips[i // per_ip] for i in range(ctx.maxtotal)], ips[-1]


@check("total_limit", "Limited: the (maxtotal+1)-th connection overall is refused (503/429)",
       points=10, profiles=("limited",), timeout=60)
def total_limit(ctx: CheckContext):
    sources, fresh = total_layout(ctx, 50)
    ctx.hold(sources)
    ctx.note(f"{ctx.maxtotal} idle connections from {len(set(sources))} addresses stayed open")
    try:
        expect_refused(ctx, fresh, f"with {ctx.maxtotal} idle connections open in all",
                       " A total limit counts every open connection, from any client.")
    except CheckFailed as error:
        ctx.fail(f"{error} {total_diagnosis(ctx, ctx.maxtotal)}")


@check("total_release", "Limited: closing connections gives total slots back",
       points=5, profiles=("limited",), timeout=60)
def total_release(ctx: CheckContext):
    sources, fresh = total_layout(ctx, 51)
    held = ctx.hold(sources)
    expect_refused(ctx, fresh, f"with {ctx.maxtotal} idle connections open in all",
                   " (Cannot check that slots come back: the limit itself did not trigger; "
                   "see total_limit.)")
    ctx.close(held.pop())
    reply, tries = ctx.wait_for_service(fresh, 5)
    ctx.note(f"after closing one, a new client was served (try {tries})")
    for sock in held:
        ctx.close(sock)
    ctx.hold(sources)
    ctx.note(f"after closing all, {ctx.maxtotal} connections were admitted again")
