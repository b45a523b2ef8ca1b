#!/usr/bin/env python3
"""A deliberately flawed threaded HTTP/1.0 static-file server, to show what the grader catches.

The flaw: the per-client limit is keyed by the peer's (IP, port) pair instead of its IP. Each
TCP connection has its own source port, so every connection looks like a new client and the
per-client limit never triggers. Everything else works (files, types, 404, HEAD, traversal,
the total limit), so the grader must single out exactly this bug.

Usage: flawed_server.py -p PORT [-maxclient N] [-maxtotal N]   (serves its working directory)
"""
import argparse
import os
import socket
import threading
from urllib.parse import unquote

TYPES = {".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
         ".js": "text/javascript; charset=utf-8", ".png": "image/png",
         ".pdf": "application/pdf", ".json": "application/json", ".txt": "text/plain; charset=utf-8"}
lock = threading.Lock()
per_client: dict = {}
total = 0


def reply(conn, status, body, ctype="text/html; charset=utf-8", head_only=False):
    head = (f"HTTP/1.0 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
            f"Connection: close\r\n\r\n").encode()
    conn.sendall(head if head_only else head + body)


def serve(conn):
    data = b""
    while b"\r\n\r\n" not in data and len(data) < 65536:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    parts = data.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or parts[0] not in ("GET", "HEAD") or not parts[1].startswith("/"):
        return reply(conn, "400 Bad Request", b"<h1>400 Bad Request</h1>")
    path = unquote(parts[1].split("?", 1)[0])
    segments = [s for s in path.split("/") if s not in ("", ".")]
    if ".." in segments or "\0" in path or "\\" in path:
        return reply(conn, "400 Bad Request", b"<h1>400 Bad Request</h1>")
    full = os.path.join(os.getcwd(), *segments)
    if os.path.isdir(full):
        full = os.path.join(full, "index.html")
    try:
        with open(full, "rb") as f:
            body = f.read()
    except OSError:
        return reply(conn, "404 Not Found", b"<h1>404 Not Found</h1>")
    ctype = TYPES.get(os.path.splitext(full)[1], "application/octet-stream")
    reply(conn, "200 OK", body, ctype, head_only=parts[0] == "HEAD")
    print(f'"{parts[0]} {parts[1]}" 200 {len(body)}', flush=True)


def session(conn, key):
    global total
    try:
        conn.settimeout(10)
        serve(conn)
    except OSError:
        pass
    finally:
        conn.close()
        with lock:
            total -= 1
            per_client[key] -= 1
            if per_client[key] == 0:
                del per_client[key]


def main():
    global total
    parser = argparse.ArgumentParser()
    parser.add_argument("-p", type=int, required=True)
    parser.add_argument("-maxclient", type=int, default=12)
    parser.add_argument("-maxtotal", type=int, default=60)
    args = parser.parse_args()
    listener = socket.create_server(("127.0.0.1", args.p), backlog=128)
    print(f"flawed_server listening on http://127.0.0.1:{args.p}/", flush=True)
    while True:
        conn, addr = listener.accept()
        key = addr  # THE BUG: (ip, port) is one connection, not one client; use addr[0]
        with lock:
            refusal = ("503 Service Unavailable" if total >= args.maxtotal else
                       "429 Too Many Requests" if per_client.get(key, 0) >= args.maxclient else None)
            if refusal is None:
                total += 1
                per_client[key] = per_client.get(key, 0) + 1
        if refusal:
            try:
                reply(conn, refusal, f"<h1>{refusal}</h1>".encode())
            except OSError:
                pass
            conn.close()
            continue
        threading.Thread(target=session, args=(conn, key), daemon=True).start()


if __name__ == "__main__":
    main()
