#!/usr/bin/env python3
"""A threaded HTTP/1.0 static-file server with limits, and switches that break it on purpose,
one way each: the grader's tests use it to see that each fault is reported for what it is.

Without switches it is correct: per-client (by IP) and total limits, refused at once with 429
and 503. The switches:

  --limit-constant K   the per-client limit is K, whatever -maxclient says
  --no-limits          admit everyone
  --wrong-type EXT     serve files ending in EXT as text/plain
  --hang-on EXT        never answer requests for files ending in EXT
  --crash-after N      abort() (SIGABRT) when request N+1 arrives
  --segfault           die of SIGSEGV at start, before listening
  --leave-behind TOKEN start a process outside the group (`setsid -f`) that sleeps 600 s,
                       with TOKEN on its command line
  --print-uid          print the uid it runs as
  --stub-503           what the handout's stage 2 stub does: log a TODO(student) line and
                       answer every client 503, no thread started

Usage: quirky_server.py -p PORT [-r ROOT] [-maxclient N] [-maxtotal N] [switches]
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
from urllib.parse import unquote

TYPES = {".html": "text/html", ".css": "text/css", ".png": "image/png", ".pdf": "application/pdf"}
lock = threading.Lock()
per_client: dict = {}
total = 0
served = 0


def reply(conn, status, body, ctype="text/html", head_only=False):
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    conn.sendall(head if head_only else head + body)


def serve(conn, args):
    global served
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    with lock:
        served += 1
        if args.crash_after is not None and served > args.crash_after:
            os.abort()
    parts = data.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD") or not parts[1].startswith("/"):
        return reply(conn, "400 Bad Request", b"bad request")
    segments = [s for s in unquote(parts[1]).split("/") if s not in ("", ".")]
    if ".." in segments:
        return reply(conn, "400 Bad Request", b"bad request")
    full = os.path.join(os.getcwd(), *segments)
    if os.path.isdir(full):
        full = os.path.join(full, "index.html")
    extension = os.path.splitext(full)[1]
    if args.hang_on and extension == args.hang_on:
        threading.Event().wait()
    try:
        with open(full, "rb") as f:
            body = f.read()
    except OSError:
        return reply(conn, "404 Not Found", b"not found")
    ctype = TYPES.get(extension, "application/octet-stream")
    if args.wrong_type and extension == args.wrong_type:
        ctype = "text/plain"
    reply(conn, "200 OK", body, ctype, head_only=parts[0] == "HEAD")


def session(conn, key, args):
    global total
    try:
        conn.settimeout(30)
        serve(conn, args)
    except OSError:
        pass
    finally:
        conn.close()
        with lock:
            total -= 1
            per_client[key] -= 1


def main():
    global total
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", type=int, required=True)
    parser.add_argument("-r", help="document root (default: the working directory)")
    parser.add_argument("-maxclient", type=int, default=12)
    parser.add_argument("-maxtotal", type=int, default=60)
    parser.add_argument("--limit-constant", type=int)
    parser.add_argument("--no-limits", action="store_true")
    parser.add_argument("--wrong-type")
    parser.add_argument("--hang-on")
    parser.add_argument("--crash-after", type=int)
    parser.add_argument("--segfault", action="store_true")
    parser.add_argument("--leave-behind")
    parser.add_argument("--print-uid", action="store_true")
    parser.add_argument("--stub-503", action="store_true")
    args = parser.parse_args()
    if args.r:
        os.chdir(args.r)
    if args.segfault:
        os.kill(os.getpid(), signal.SIGSEGV)
    if args.print_uid:
        print(f"running as uid {os.getuid()}", flush=True)
    if args.leave_behind:
        subprocess.run(["setsid", "-f", sys.executable, "-c", "import time; time.sleep(600)",
                        args.leave_behind], check=True)
    per_ip = args.limit_constant or args.maxclient
    listener = socket.create_server(("127.0.0.1", args.p), backlog=256)
    while True:
        conn, (ip, _) = listener.accept()
        if args.stub_503:
            print("TODO(student): ThreadSet::spawn() is not written yet: 503, no thread",
                  file=sys.stderr, flush=True)
            try:
                reply(conn, "503 Service Unavailable", b"503 Service Unavailable")
            except OSError:
                pass
            conn.close()
            continue
        with lock:
            refusal = None
            if not args.no_limits:
                refusal = ("503 Service Unavailable" if total >= args.maxtotal else
                           "429 Too Many Requests" if per_client.get(ip, 0) >= per_ip else None)
            if refusal is None:
                total += 1
                per_client[ip] = per_client.get(ip, 0) + 1
        if refusal:
            try:
                reply(conn, refusal, refusal.encode())
            except OSError:
                pass
            conn.close()
            continue
        threading.Thread(target=session, args=(conn, ip, args), daemon=True).start()


if __name__ == "__main__":
    main()
