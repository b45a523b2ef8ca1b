"""Tests of `./lab similarity` (harness/grader/similarity.py), with real runs of similarity-tester.

Five submissions: alice and bob (C++) are one server, bob's copy with renamed identifiers,
other comments and another layout; carol and erin (Python) and dave (C++) wrote theirs
independently. Every C++ submission also carries the C++ handout's common/ sources and both
Python ones the Python handout's http_server.py, unchanged, as real submissions do.

- alice ~ bob ranks first, well above every other pair, and its fragments name both sides'
  files and lines;
- handout code alone does not make a pair similar: carol ~ erin share little once the handout
  is left out, and a lot with --no-handout (so it is the exclusion that keeps them apart);
- bad input (no folder, fewer than two submissions) is a clear message and exit 2;
- `./lab similarity` runs it with the caller's relative paths.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import HARNESS_DIR

GRADER = HARNESS_DIR / "grader"
HANDOUT = HARNESS_DIR / "handout"

ALICE = r"""// Sequential HTTP/1.0 server: one client at a time.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <fstream>
#include <sstream>
#include <string>

static std::string content_type_for(const std::string& path) {
    if (path.size() >= 5 && path.compare(path.size() - 5, 5, ".html") == 0) return "text/html";
    if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".css") == 0) return "text/css";
    if (path.size() >= 4 && path.compare(path.size() - 4, 4, ".png") == 0) return "image/png";
    return "application/octet-stream";
}

static void send_all(int fd, const std::string& data) {
    size_t sent = 0;
    while (sent < data.size()) {
        ssize_t n = write(fd, data.data() + sent, data.size() - sent);
        if (n <= 0) return;
        sent += static_cast<size_t>(n);
    }
}

static void send_error(int fd, int code, const std::string& reason) {
    std::string body = "<h1>" + std::to_string(code) + " " + reason + "</h1>";
    send_all(fd, "HTTP/1.0 " + std::to_string(code) + " " + reason + "\r\nContent-Length: " +
                     std::to_string(body.size()) + "\r\nContent-Type: text/html\r\n\r\n" + body);
}

static void handle_client(int fd, const std::string& root) {
    char buffer[8192];
    ssize_t got = read(fd, buffer, sizeof buffer - 1);
    if (got <= 0) return;
    buffer[got] = '\0';
    std::istringstream request(buffer);
    std::string method, target, version;
    request >> method >> target >> version;
    if (method != "GET" && method != "HEAD") return send_error(fd, 501, "Not Implemented");
    if (target.find("..") != std::string::npos) return send_error(fd, 400, "Bad Request");
    if (target == "/") target = "/index.html";
    std::ifstream file(root + target, std::ios::binary);
    if (!file) return send_error(fd, 404, "Not Found");
    std::ostringstream contents;
    contents << file.rdbuf();
    std::string body = contents.str();
    std::string head = "HTTP/1.0 200 OK\r\nContent-Length: " + std::to_string(body.size()) +
                       "\r\nContent-Type: " + content_type_for(target) + "\r\n\r\n";
    send_all(fd, method == "HEAD" ? head : head + body);
}

int main(int argc, char** argv) {
    int port = 8080;
    std::string root = ".";
    for (int i = 1; i + 1 < argc; i += 2) {
        std::string flag = argv[i];
        if (flag == "-p") port = std::stoi(argv[i + 1]);
        else if (flag == "-r") root = argv[i + 1];
    }
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    int yes = 1;
    setsockopt(listener, SOL_SOCKET, SO_REUSEADDR, &yes, sizeof yes);
    sockaddr_in address{};
    address.sin_family = AF_INET;
    address.sin_port = htons(static_cast<uint16_t>(port));
    address.sin_addr.s_addr = htonl(INADDR_ANY);
    if (bind(listener, reinterpret_cast<sockaddr*>(&address), sizeof address) != 0) return 1;
    listen(listener, 64);
    while (true) {
        int client = accept(listener, nullptr, nullptr);
        if (client < 0) continue;
        handle_client(client, root);
        close(client);
    }
}
"""

#: bob's disguise: every identifier of alice's renamed.
RENAMES = {"content_type_for": "mimeOf", "send_all": "writeFully", "send_error": "replyError",
           "handle_client": "serveOne", "buffer": "buf", "got": "nread", "request": "in",
           "method": "verb", "target": "uri", "version": "proto", "file": "input",
           "contents": "ss", "body": "payload", "head": "header", "listener": "srv",
           "client": "conn", "address": "addr", "root": "docroot", "port": "portNumber",
           "sent": "done"}


def disguise(source: str) -> str:
    """alice's code as bob hands it in: renamed, other comments, 2-space indents, braces moved."""
    for old, new in RENAMES.items():
        source = re.sub(rf"\b{old}\b", new, source)
    lines = []
    for line in source.splitlines():
        if line.startswith("//"):
            line = "/* my web server, assignment 2 */"
        stripped = line.lstrip(" ")
        indent = (len(line) - len(stripped)) // 2
        if stripped.endswith("{") and stripped != "{" and not stripped.startswith("}"):
            lines += [" " * indent + stripped[:-1].rstrip(), " " * indent + "{"]
        else:
            lines.append(" " * indent + stripped)
    return "\n".join(lines) + "\n"


DAVE = r"""#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>
#include <cstdio>
#include <map>
#include <string_view>
#include <vector>

namespace web {

class Server {
public:
    explicit Server(unsigned short port) : port_(port) {}

    bool open_socket() {
        sock_ = ::socket(AF_INET6, SOCK_STREAM, 0);
        sockaddr_in6 sa{};
        sa.sin6_family = AF_INET6;
        sa.sin6_port = htons(port_);
        sa.sin6_addr = in6addr_any;
        return sock_ >= 0 && ::bind(sock_, (sockaddr*)&sa, sizeof(sa)) == 0 && ::listen(sock_, 16) == 0;
    }

    void loop() {
        for (;;) {
            int peer = ::accept(sock_, nullptr, nullptr);
            if (peer == -1) { std::perror("accept"); continue; }
            std::vector<char> raw(4096);
            auto len = ::recv(peer, raw.data(), raw.size(), 0);
            std::string_view line(raw.data(), len > 0 ? std::size_t(len) : 0);
            line = line.substr(0, line.find('\n'));
            reply(peer, route(line));
            ::close(peer);
        }
    }

private:
    static std::string_view route(std::string_view first_line) {
        static const std::map<std::string_view, std::string_view> pages{
            {"/", "home"}, {"/index.html", "home"}, {"/about.html", "about us"}};
        auto sp1 = first_line.find(' ');
        auto sp2 = first_line.find(' ', sp1 + 1);
        if (sp1 == std::string_view::npos || sp2 == std::string_view::npos) return {};
        auto it = pages.find(first_line.substr(sp1 + 1, sp2 - sp1 - 1));
        return it == pages.end() ? std::string_view{} : it->second;
    }

    static void reply(int peer, std::string_view page) {
        char head[256];
        int n = page.empty()
                    ? std::snprintf(head, sizeof head, "HTTP/1.0 404 Not Found\r\n\r\n")
                    : std::snprintf(head, sizeof head, "HTTP/1.0 200 OK\r\nContent-Length: %zu\r\n\r\n",
                                    page.size());
        ::send(peer, head, std::size_t(n), MSG_NOSIGNAL);
        ::send(peer, page.data(), page.size(), MSG_NOSIGNAL);
    }

    unsigned short port_;
    int sock_ = -1;
};

}  // namespace web

int main(int argc, char* argv[]) {
    web::Server server(argc > 2 ? (unsigned short)std::atoi(argv[2]) : 8000);
    if (!server.open_socket()) return 2;
    server.loop();
}
"""

CAROL = '''"""Threaded file server for the lab."""
import os
import socket
import sys
import threading

TYPES = {".html": "text/html", ".txt": "text/plain", ".jpg": "image/jpeg"}


class Worker(threading.Thread):
    def __init__(self, conn, folder):
        super().__init__(daemon=True)
        self.conn = conn
        self.folder = folder

    def run(self):
        with self.conn:
            first = self.conn.makefile("rb").readline().decode("latin-1").split()
            if len(first) != 3:
                self.conn.sendall(b"HTTP/1.0 400 Bad Request\\r\\n\\r\\n")
                return
            name = os.path.normpath(first[1]).lstrip("/") or "index.html"
            full = os.path.join(self.folder, name)
            if not os.path.isfile(full):
                self.conn.sendall(b"HTTP/1.0 404 Not Found\\r\\n\\r\\n")
                return
            kind = TYPES.get(os.path.splitext(full)[1], "application/octet-stream")
            with open(full, "rb") as handle:
                payload = handle.read()
            self.conn.sendall(("HTTP/1.0 200 OK\\r\\nContent-Type: %s\\r\\nContent-Length: %d\\r\\n\\r\\n"
                               % (kind, len(payload))).encode() + payload)


def main():
    port = int(sys.argv[sys.argv.index("-p") + 1]) if "-p" in sys.argv else 8080
    listener = socket.create_server(("", port), reuse_port=False)
    while True:
        conn, _ = listener.accept()
        Worker(conn, os.getcwd()).start()


if __name__ == "__main__":
    main()
'''

ERIN = '''import selectors, socket, sys
from pathlib import Path

sel = selectors.DefaultSelector()
pending = {}


def on_accept(srv):
    c, _ = srv.accept()
    c.setblocking(False)
    pending[c] = b""
    sel.register(c, selectors.EVENT_READ, on_read)


def on_read(c):
    chunk = c.recv(65536)
    pending[c] += chunk
    if chunk and b"\\r\\n\\r\\n" not in pending[c]:
        return
    sel.unregister(c)
    words = pending.pop(c).split(b" ")
    c.setblocking(True)
    try:
        p = Path(".") / words[1].decode().strip("/") if len(words) > 2 else None
        if p is None or ".." in p.parts or not p.is_file():
            c.sendall(b"HTTP/1.0 404 Not Found\\r\\nContent-Length: 0\\r\\n\\r\\n")
        else:
            data = p.read_bytes()
            c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: " + str(len(data)).encode()
                      + b"\\r\\n\\r\\n" + data)
    finally:
        c.close()


if __name__ == "__main__":
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[-1])))
    s.listen()
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, on_accept)
    while True:
        for key, _ in sel.select():
            key.data(key.fileobj)
'''


@pytest.fixture(scope="module")
def handouts(tmp_path_factory) -> dict[str, Path]:
    """Both tracks' student handouts, cut from the kit as an instructor would."""
    root = tmp_path_factory.mktemp("handouts")
    trees = {}
    for lang in ("cpp", "python"):
        trees[lang] = root / lang
        subprocess.run([sys.executable, str(HANDOUT), "--no-git", "--lang", lang, str(trees[lang])],
                       check=True, capture_output=True, timeout=300)
    return trees


@pytest.fixture(scope="module")
def submissions(tmp_path_factory, handouts) -> Path:
    """Five student folders; every one carries its track's handout code, unchanged."""
    root = tmp_path_factory.mktemp("submissions")
    cpp = {"alice": ALICE, "bob": disguise(ALICE), "dave": DAVE}
    for name, main in cpp.items():
        shutil.copytree(handouts["cpp"] / "common", root / name / "common")
        (root / name / "stage1_sequential").mkdir()
        (root / name / "stage1_sequential" / "main.cpp").write_text(main)
    for name, module in {"carol": CAROL, "erin": ERIN}.items():
        (root / name).mkdir()
        shutil.copy(handouts["python"] / "http_server.py", root / name / "http_server.py")
        (root / name / "server_threaded.py").write_text(module)
    return root


def similarity(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(GRADER), "similarity", *map(str, args)], capture_output=True,
                          text=True, timeout=600)


def table(stdout: str) -> list[tuple[str, float, float]]:
    """The ranked table's rows: (pair, A in B %, B in A %), in rank order."""
    rows = re.findall(r"^\s*\d+\s+(\S+ ~ \S+)\s+(\d+)%\s+(\d+)%\s+\d+/\d+$", stdout, re.M)
    return [(pair, float(a), float(b)) for pair, a, b in rows]


def test_the_copied_pair_ranks_first(submissions):
    proc = similarity(submissions, "--top", "10")
    assert proc.returncode == 0, proc.stderr
    rows = table(proc.stdout)
    assert len(rows) >= 1, proc.stdout
    pair, a_in_b, b_in_a = rows[0]
    assert pair == "alice ~ bob", proc.stdout
    assert min(a_in_b, b_in_a) >= 60, proc.stdout
    for other, x, y in rows[1:]:
        assert max(x, y) <= 25, f"{other} should not look copied:\n{proc.stdout}"
    # The top pair's fragments: both students' own file and lines.
    fragments = proc.stdout.split("#1 alice ~ bob", 1)[1].split("\n#2", 1)[0]
    assert re.search(r"alice/stage1_sequential/main\.cpp:\d+-\d+\s+~\s+"
                     r"bob/stage1_sequential/main\.cpp:\d+-\d+\s+\[\d+ tokens\]", fragments), proc.stdout
    # Nothing of the handout is reported as shared, even for the copied pair.
    assert "common/" not in fragments, proc.stdout


def test_handout_code_alone_does_not_make_a_pair_similar(submissions, handouts):
    excluded = similarity(submissions, "--top", "10", "--handout", handouts["cpp"],
                          "--handout", handouts["python"])
    assert excluded.returncode == 0, excluded.stderr
    shares = {pair: max(a, b) for pair, a, b in table(excluded.stdout)}
    assert shares.get("carol ~ erin", 0) <= 25, excluded.stdout
    assert shares.get("alice ~ dave", 0) <= 25, excluded.stdout
    assert next(iter(shares)) == "alice ~ bob", excluded.stdout
    # The same submissions with the handout counted: carol and erin now look alike.
    counted = similarity(submissions, "--top", "10", "--no-handout")
    assert counted.returncode == 0, counted.stderr
    shares = {pair: max(a, b) for pair, a, b in table(counted.stdout)}
    assert shares.get("carol ~ erin", 0) >= 50, counted.stdout
    assert shares.get("alice ~ dave", 0) >= 50, counted.stdout


@pytest.mark.parametrize("layout, says", [
    ("missing", "not a folder of submissions"),
    ("one", "1 submission(s) with C++ or Python sources; need at least two"),
    ("no-sources", "0 submission(s)"),
])
def test_bad_input_is_a_clear_error(tmp_path, layout, says):
    folder = tmp_path / "subs"
    if layout != "missing":
        folder.mkdir()
        (folder / "alice").mkdir()
        (folder / "bob").mkdir()
        (folder / "bob" / "notes.txt").write_text("no code here\n")
        if layout == "one":
            (folder / "alice" / "main.cpp").write_text(ALICE)
    proc = similarity(folder, "--no-handout")
    assert proc.returncode == 2, proc
    assert says in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_lab_command_runs_it_from_the_callers_directory(tmp_path, submissions):
    """`./lab similarity` is wired in: relative paths mean the caller's, bad input exits 2."""
    lab = HARNESS_DIR.parent / "lab"
    proc = subprocess.run([str(lab), "similarity", "no-such-folder"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc
    assert "no-such-folder: not a folder of submissions" in proc.stderr, proc.stderr
    (tmp_path / "subs").symlink_to(submissions)
    proc = subprocess.run([str(lab), "similarity", "subs/", "--no-handout", "--show", "0"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert table(proc.stdout)[0][0] == "alice ~ bob", proc.stdout
