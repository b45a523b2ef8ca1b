"""HTTP behaviour every stage shares: files and types, errors, limits of the request head,
conditional GET, HTTP/0.9 and 1.1, path traversal, the access log, options and signals.

Each test starts its own server on a free port with a fresh copy of the sample site.
"""

from __future__ import annotations

import calendar
import email.utils
import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import (
    REASONS,
    SAMPLE_TYPES,
    STAGE_IDS,
    STAGES,
    connect,
    parse_response,
    raw,
    read_to_eof,
    request,
    run_cli,
    stage_params,
)


@pytest.fixture(params=STAGES, ids=[STAGE_IDS[s] for s in STAGES])
def stage(request):
    return request.param


@pytest.fixture
def server(stage, site, servers):
    """The stage under test serving the per-test site."""
    return servers(stage, site.root)


def assert_status(reply, code: int):
    """The exact HTTP/1.0 status line for @p code."""
    assert reply.status_line == f"HTTP/1.0 {code} {REASONS[code]}", (
        f"expected {code}, got {reply.status_line!r}; body {reply.body[:200]!r}"
    )


def assert_common_headers(reply):
    """Headers every response carries (Content-Length is checked where it applies)."""
    assert reply.headers.get("connection", "").lower() == "close", reply.headers
    assert reply.headers.get("server"), "no Server header"
    date = email.utils.parsedate_to_datetime(reply.headers["date"])
    assert abs(date.timestamp() - time.time()) < 60, f"Date {reply.headers['date']!r} is off"
    assert reply.headers["date"].endswith(" GMT"), reply.headers["date"]


def assert_error_page(reply, code: int):
    """A complete error reply: status, HTML body, Content-Length matching, Connection: close."""
    assert_status(reply, code)
    assert_common_headers(reply)
    assert "content-length" in reply.headers
    assert len(reply.body) == int(reply.headers["content-length"])
    assert reply.headers.get("content-type", "").startswith("text/html"), reply.headers
    assert b"<html" in reply.body.lower() or b"<!doctype html" in reply.body.lower()


# --------------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", sorted(SAMPLE_TYPES), ids=sorted(SAMPLE_TYPES))
def test_sample_file_served_exactly(server, site, path):
    reply = request(server.port, "/" + path)
    assert_status(reply, 200)
    assert_common_headers(reply)
    expected = site.bytes_of(path)
    assert reply.body == expected
    assert reply.headers["content-length"] == str(len(expected))
    assert reply.headers["content-type"] == SAMPLE_TYPES[path]
    mtime = int((site.root / path).stat().st_mtime)
    assert reply.headers["last-modified"] == email.utils.formatdate(mtime, usegmt=True)


def test_unknown_extension_is_octet_stream(server, site):
    data = bytes(range(256)) * 3
    site.add_file("blob.weird", data)
    site.add_file("noext", b"no extension at all\n")
    reply = request(server.port, "/blob.weird")
    assert_status(reply, 200)
    assert reply.headers["content-type"] == "application/octet-stream"
    assert reply.body == data
    reply = request(server.port, "/noext")
    assert_status(reply, 200)
    assert reply.headers["content-type"] == "application/octet-stream"


def test_empty_file(server, site):
    site.add_file("empty.txt", b"")
    reply = request(server.port, "/empty.txt")
    assert_status(reply, 200)
    assert reply.headers["content-length"] == "0"
    assert reply.body == b""


def test_root_serves_index(server, site):
    reply = request(server.port, "/")
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("index.html")
    assert reply.headers["content-type"] == "text/html; charset=utf-8"


def test_query_string_is_ignored_for_the_file(server, site):
    reply = request(server.port, "/notes.txt?v=2&x=%zz")
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("notes.txt")


def test_directory_without_slash_redirects(server, site):
    reply = request(server.port, "/sub")
    assert_status(reply, 301)
    assert_common_headers(reply)
    assert reply.headers["location"] == "/sub/"
    assert len(reply.body) == int(reply.headers["content-length"])
    reply = request(server.port, "/sub/")
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("sub/index.html")


def test_directory_without_index_is_forbidden(server):
    reply = request(server.port, "/noindex/")
    assert_error_page(reply, 403)


def test_missing_file_is_404_with_html(server):
    reply = request(server.port, "/missing.html")
    assert_error_page(reply, 404)
    reply = request(server.port, "/sub/missing/deeper.txt")
    assert_error_page(reply, 404)
    reply = request(server.port, "/notes.txt/below-a-file")
    assert_error_page(reply, 404)


def test_name_with_two_dots_is_served(server, site):
    reply = request(server.port, "/a..b.txt")
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("a..b.txt")


def test_percent_encoded_name_is_decoded(server, site):
    site.add_file("with space.txt", b"space in the name\n")
    reply = request(server.port, "/with%20space.txt")
    assert_status(reply, 200)
    assert reply.body == b"space in the name\n"
    reply = request(server.port, "/%6eotes.txt")  # %6e is 'n'
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("notes.txt")


def test_head_has_headers_and_no_body(server, site):
    get = request(server.port, "/logo.png")
    head = request(server.port, "/logo.png", method="HEAD")
    assert_status(head, 200)
    assert_common_headers(head)
    assert head.body == b""
    assert head.headers["content-length"] == str(len(site.bytes_of("logo.png")))
    for name in ("content-length", "content-type", "last-modified"):
        assert head.headers[name] == get.headers[name], name
    missing = request(server.port, "/missing", method="HEAD")
    assert_status(missing, 404)
    assert missing.body == b""


# --------------------------------------------------------------------------------------------
# Errors in the request
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "OPTIONS", "PATCH", "BREW"])
def test_other_methods_not_implemented(server, method):
    body = b"hello"
    data = (
        f"{method} /index.html HTTP/1.0\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    )
    reply = parse_response(raw(server.port, data))
    assert_error_page(reply, 501)


@pytest.mark.parametrize("line", ["CONNECT example.com:443 HTTP/1.0",
                                  "CONNECT 127.0.0.1:22 HTTP/1.1", "OPTIONS * HTTP/1.0"])
def test_connect_and_options_star_not_implemented(server, line):
    # Their own target forms (RFC 9112 3.2.3, 3.2.4) make them no less methods we lack.
    reply = parse_response(raw(server.port, f"{line}\r\nHost: example.com\r\n\r\n".encode()))
    assert_error_page(reply, 501)


@pytest.mark.parametrize("head", [b"GET / HTTP/1.0\r\n", b"GET /index.html HTTP/1.0\r\nHost: x",
                                  b"HEAD / HTTP/1.0\r\n\r", b"GET / HT"])
def test_head_cut_short_by_half_close_is_400(server, head):
    with connect(server.port, timeout=5) as sock:
        sock.sendall(head)
        sock.shutdown(socket.SHUT_WR)  # no more bytes: the head will never be complete
        data = read_to_eof(sock, time.monotonic() + 5)
    assert data, f"{head!r} then a half-close got a silent close, not a 400"
    reply = parse_response(data)
    assert_status(reply, 400)
    if head.startswith(b"HEAD"):
        assert reply.body == b""


def test_half_close_with_nothing_sent_is_closed_silently(server):
    with connect(server.port, timeout=5) as sock:
        sock.shutdown(socket.SHUT_WR)
        assert read_to_eof(sock, time.monotonic() + 5) == b""


BAD_REQUESTS = {
    "garbage": b"GARBAGE\r\n\r\n",
    "no-target": b"GET\r\n\r\n",
    "extra-field": b"GET /index.html HTTP/1.0 extra\r\n\r\n",
    "bad-version": b"GET /index.html FOO/1.0\r\n\r\n",
    "version-2": b"GET /index.html HTTP/2\r\n\r\n",
    "header-without-colon": b"GET /index.html HTTP/1.0\r\nNoColonHere\r\n\r\n",
    "space-before-colon": b"GET /index.html HTTP/1.0\r\nHost : x\r\n\r\n",
    "bad-method-token": b"G(T /index.html HTTP/1.0\r\n\r\n",
    "control-byte-in-target": b"GET /index\x01.html HTTP/1.0\r\n\r\n",
    "relative-target": b"GET index.html HTTP/1.0\r\n\r\n",
    "asterisk": b"GET * HTTP/1.0\r\n\r\n",
    "head-0.9": b"HEAD /index.html\r\n",
}


@pytest.mark.parametrize("data", BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_malformed_requests_are_400(server, data):
    reply = parse_response(raw(server.port, data))
    assert_error_page(reply, 400)


def test_request_line_too_long_is_414(server):
    long_path = "/" + "a" * 9000
    reply = request(server.port, long_path)
    assert_error_page(reply, 414)


def test_request_line_just_under_limit_is_not_414(server):
    # 8000 bytes is inside the 8192-byte limit: the name is too long for the file system,
    # which is a plain 404.
    reply = request(server.port, "/" + "a" * 8000)
    assert_error_page(reply, 404)


def test_endless_request_line_gets_414_without_newline(server):
    # The server must not wait for the end of a line that is already too long.
    with connect(server.port, timeout=5) as sock:
        deadline = time.monotonic() + 5
        sock.sendall(b"GET /" + b"a" * 9000)
        reply = parse_response(read_to_eof(sock, deadline))
    assert_error_page(reply, 414)


def test_too_many_headers_is_431(server):
    headers = "".join(f"X-H-{i}: v\r\n" for i in range(101))
    reply = parse_response(raw(server.port, f"GET / HTTP/1.0\r\n{headers}\r\n".encode()))
    assert_error_page(reply, 431)


def test_many_headers_within_limit_are_fine(server, site):
    headers = "".join(f"X-H-{i}: v\r\n" for i in range(90))
    reply = parse_response(raw(server.port, f"GET / HTTP/1.0\r\n{headers}\r\n".encode()))
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("index.html")


def test_header_line_too_long_is_431(server):
    data = b"GET / HTTP/1.0\r\nX-Big: " + b"b" * 9000 + b"\r\n\r\n"
    reply = parse_response(raw(server.port, data))
    assert_error_page(reply, 431)


def test_header_block_too_large_is_431(server):
    # 90 lines of ~800 bytes: each line and the count are fine, the block (~72 KiB) is not.
    headers = "".join(f"X-H-{i}: {'v' * 800}\r\n" for i in range(90))
    reply = parse_response(raw(server.port, f"GET / HTTP/1.0\r\n{headers}\r\n".encode()))
    assert_error_page(reply, 431)


# --------------------------------------------------------------------------------------------
# Conditional GET, HTTP/0.9, HTTP/1.1
# --------------------------------------------------------------------------------------------

FIXED_MTIME = calendar.timegm((2020, 1, 2, 3, 4, 5))
FIXED_HTTP_DATE = "Thu, 02 Jan 2020 03:04:05 GMT"


def test_last_modified_and_if_modified_since(server, site):
    os.utime(site.root / "notes.txt", (FIXED_MTIME, FIXED_MTIME))
    reply = request(server.port, "/notes.txt")
    assert_status(reply, 200)
    assert reply.headers["last-modified"] == FIXED_HTTP_DATE

    for since in (FIXED_HTTP_DATE, "Fri, 03 Jan 2020 00:00:00 GMT"):
        reply = request(server.port, "/notes.txt", headers={"If-Modified-Since": since})
        assert_status(reply, 304)
        assert_common_headers(reply)
        assert reply.body == b"", f"304 with a body for If-Modified-Since {since}"
        # A 304 has no body; if it names a length at all, it is the file's.
        assert reply.headers.get("content-length", str(len(site.bytes_of("notes.txt")))) == str(
            len(site.bytes_of("notes.txt"))
        )

    for since in ("Thu, 02 Jan 2020 03:04:04 GMT", "Sat, 01 Jan 2000 00:00:00 GMT", "garbage"):
        reply = request(server.port, "/notes.txt", headers={"If-Modified-Since": since})
        assert_status(reply, 200)
        assert reply.body == site.bytes_of("notes.txt"), since


def test_http09_simple_request_gets_body_only(server, site):
    data = raw(server.port, b"GET /notes.txt\r\n")
    assert data == site.bytes_of("notes.txt")
    data = raw(server.port, b"GET /\r\n")
    assert data == site.bytes_of("index.html")


def test_http11_request_answered_as_http10_by_curl(server, site):
    proc = subprocess.run(
        [
            "curl", "-sS", "-i", "--http1.1", "--noproxy", "*", "--max-time", "10",
            f"http://127.0.0.1:{server.port}/index.html",
        ],
        capture_output=True,
        timeout=20,
    )
    assert proc.returncode == 0, proc.stderr
    reply = parse_response(proc.stdout)
    assert_status(reply, 200)
    assert reply.headers["connection"].lower() == "close"
    assert reply.body == site.bytes_of("index.html")


def test_http11_raw_request_then_close(server, site):
    data = b"GET /data.json HTTP/1.1\r\nHost: localhost\r\nConnection: keep-alive\r\n\r\n"
    reply = parse_response(raw(server.port, data))  # raw() reads to EOF: the server closes
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("data.json")


def test_absolute_form_target(server, site):
    reply = parse_response(raw(server.port, b"GET http://example.test/notes.txt HTTP/1.0\r\n\r\n"))
    assert_status(reply, 200)
    assert reply.body == site.bytes_of("notes.txt")


# --------------------------------------------------------------------------------------------
# Traversal: nothing outside the root may ever be served
# --------------------------------------------------------------------------------------------

TRAVERSALS = [
    # (request line, expected status)
    ("GET /../secret.txt HTTP/1.0", 400),
    ("GET /%2e%2e/secret.txt HTTP/1.0", 400),
    ("GET /%2E%2E/secret.txt HTTP/1.0", 400),
    ("GET /..%2fsecret.txt HTTP/1.0", 400),
    ("GET /%2e%2e%2fsecret.txt HTTP/1.0", 400),
    ("GET /./../secret.txt HTTP/1.0", 400),
    ("GET /a/../../secret.txt HTTP/1.0", 400),
    ("GET /sub/../../secret.txt HTTP/1.0", 400),
    ("GET //../secret.txt HTTP/1.0", 400),
    ("GET /.. HTTP/1.0", 400),
    ("GET /../root2/secret.txt HTTP/1.0", 400),
    ("GET http://localhost/../../secret.txt HTTP/1.0", 400),
    ("GET ../secret.txt HTTP/1.0", 400),
    ("GET /%252e%252e/secret.txt HTTP/1.0", 404),  # decoded once: a name "%2e%2e"
    ("GET /%2e%2e%252fsecret.txt HTTP/1.0", 404),  # a name "..%2fsecret.txt", not a climb
    ("GET /secret.txt%00 HTTP/1.0", 400),
    ("GET /index.html%00.txt HTTP/1.0", 400),
    ("GET /%zz/secret.txt HTTP/1.0", 400),
    ("GET /secret.txt%2 HTTP/1.0", 400),
    # Outside the root is "not found", whether the target exists or not: no existence oracle.
    ("GET /escape HTTP/1.0", 404),  # symlink to ../root2/secret.txt
    ("GET /etc/passwd HTTP/1.0", 404),  # symlink to /etc
    ("GET /etc/ HTTP/1.0", 404),
]


@pytest.mark.parametrize("line,expected", TRAVERSALS, ids=[line for line, _ in TRAVERSALS])
def test_traversal_is_refused(server, site, line, expected):
    data = raw(server.port, line.encode() + b"\r\n\r\n")
    for marker in site.markers:
        assert marker.encode() not in data, f"{line!r} leaked a file outside the root"
    assert b"root:x:0:0" not in data, f"{line!r} leaked /etc/passwd"
    reply = parse_response(data)
    assert_error_page(reply, expected)


def test_backslash_is_not_a_separator(server, site):
    # On POSIX a backslash is an ordinary byte: "..\..\secret.txt" is one (missing) name.
    # The contract does not say whether such a name is refused (400) or looked up (404);
    # either is safe, what matters is that the secret never leaks.
    data = raw(server.port, b"GET /..%5c..%5csecret.txt HTTP/1.0\r\n\r\n")
    assert site.marker.encode() not in data
    reply = parse_response(data)
    assert reply.status in (400, 404), reply.status_line
    assert_error_page(reply, reply.status)


def test_traversal_in_http09_request_leaks_nothing(server, site):
    # HTTP/0.9 has no status line: the refusal is the error page alone.
    data = raw(server.port, b"GET /../secret.txt\r\n")
    assert site.marker.encode() not in data
    assert not data.startswith(b"HTTP/"), data[:200]
    assert b"400 Bad Request" in data, data[:200]


def test_secret_is_reachable_directly_when_inside_root(stage, site, servers):
    # Control experiment: serving the parent directory does expose secret.txt, so the
    # traversal tests above would see the marker if a climb succeeded.
    server = servers(stage, site.base)
    reply = request(server.port, "/secret.txt")
    assert_status(reply, 200)
    assert site.marker.encode() in reply.body


# --------------------------------------------------------------------------------------------
# Access log, options, signals
# --------------------------------------------------------------------------------------------

CLF_RE = re.compile(
    r'^(?P<host>\S+) - - \[(?P<time>\d{2}/[A-Z][a-z]{2}/\d{4}:\d{2}:\d{2}:\d{2} [+-]\d{4})\] '
    r'"(?P<request>[^"]*)" (?P<status>\d{3}) (?P<bytes>\d+|-)$'
)


def test_access_log_in_common_log_format(server, site):
    request(server.port, "/notes.txt")
    request(server.port, "/missing.html")
    request(server.port, "/logo.png", method="HEAD")
    assert server.stop() == 0  # stopping flushes everything the server had to say
    lines = server.log_lines()
    assert len(lines) == 3, lines
    parsed = [CLF_RE.match(line) for line in lines]
    assert all(parsed), lines
    first, second, third = parsed
    assert first["host"] == "127.0.0.1"
    assert first["request"] == "GET /notes.txt HTTP/1.0"
    assert first["status"] == "200"
    assert first["bytes"] == str(len(site.bytes_of("notes.txt")))
    assert second["request"] == "GET /missing.html HTTP/1.0"
    assert second["status"] == "404"
    assert third["request"] == "HEAD /logo.png HTTP/1.0"
    assert third["status"] == "200"
    assert third["bytes"] in ("0", "-")


def test_access_log_counts_what_an_interrupted_download_got(server, site):
    """A client that leaves mid-download: the line keeps the status and counts the body bytes
    that went out, neither 0 nor the whole file."""
    size = 32 << 20  # far more than the socket buffers of both ends hold
    site.add_file("big.bin", bytes(size))
    received = b""
    # A small receive window keeps the server from getting far ahead of what the client read.
    with connect(server.port, rcvbuf=64 << 10) as sock:
        sock.sendall(b"GET /big.bin HTTP/1.0\r\n\r\n")
        while len(received) < (1 << 20):
            chunk = sock.recv(65536)
            assert chunk, f"the server closed after {len(received)} bytes"
            received += chunk
        # Closing with unread bytes resets the connection: the server's next send fails.
    head_end = received.index(b"\r\n\r\n") + 4
    assert received[:head_end].startswith(b"HTTP/1.0 200 OK\r\n")
    body_received = len(received) - head_end
    assert server.stop() == 0
    lines = server.log_lines()
    assert len(lines) == 1, lines
    line = CLF_RE.match(lines[0])
    assert line, lines
    assert line["request"] == "GET /big.bin HTTP/1.0"
    assert line["status"] == "200"
    assert body_received <= int(line["bytes"]) < size, (body_received, lines)


def test_quiet_suppresses_access_log(stage, site, servers):
    server = servers(stage, site.root, "-q")
    assert_status(request(server.port, "/notes.txt"), 200)
    assert_status(request(server.port, "/missing"), 404)
    assert server.stop() == 0
    assert server.log_lines() == []
    assert server.stdout().count("\n") == 1


def test_startup_line_names_root(server, site):
    assert os.path.realpath(server.root_printed) == os.path.realpath(site.root)
    assert server.host == "127.0.0.1"


@stage_params()
@pytest.mark.parametrize(
    "args",
    [
        ["-p", "notaport"],
        ["-p", "70000"],
        ["-p", "-1"],
        ["-r", "/nonexistent/lab-kit-root"],
        ["-t", "zero"],
        ["--no-such-option"],
    ],
    ids=["port-text", "port-70000", "port-negative", "root-missing", "timeout-text", "unknown"],
)
def test_bad_command_line_exits_2(stage, tmp_path, args):
    full = args if "-r" in args else ["-r", str(tmp_path), *args]
    proc = run_cli(stage, *full)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.decode(errors="replace").strip("\n").split("\n")
    assert len(lines) == 1 and lines[0].strip(), f"expected one stderr line, got {lines!r}"
    assert b"listening" not in proc.stdout


@stage_params()
def test_port_in_use_exits_1(stage, tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        proc = run_cli(stage, "-p", str(port), "-r", str(tmp_path))
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert proc.stderr.strip(), "no error message on stderr"
    assert b"listening" not in proc.stdout


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_0(server, signum):
    assert_status(request(server.port, "/"), 200)
    assert server.stop(signum, timeout=5) == 0, server.stderr()
