"""A tiny client of Chromium's DevTools protocol over its WebSocket, standard library only.

Enough for the scoreboard test: start headless Chromium with ``--remote-debugging-port=0``,
attach to its page, send commands (Page.navigate, Runtime.evaluate, Page.captureScreenshot)
and collect the events it sends (Network.requestWillBeSent). Only what Chromium's local
endpoint needs: text frames, client masking, no extensions.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import struct
import subprocess
import time
import urllib.request
from pathlib import Path

#: Longest wait for Chromium to start, and for any one answer to a command.
CDP_TIMEOUT = 20.0


class WebSocket:
    """One client WebSocket (RFC 6455) to a local endpoint: text messages in and out."""

    def __init__(self, url: str, timeout: float = CDP_TIMEOUT):
        assert url.startswith("ws://"), url
        host_port, _, path = url[len("ws://"):].partition("/")
        host, _, port = host_port.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall((f"GET /{path} HTTP/1.1\r\nHost: {host_port}\r\nUpgrade: websocket\r\n"
                           f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                           "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(4096)
            assert chunk, "DevTools closed the connection during the handshake"
            head += chunk
        head, _, self.buffer = head.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head[:200]

    def _read(self, n: int) -> bytes:
        while len(self.buffer) < n:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("DevTools closed the connection")
            self.buffer += chunk
        data, self.buffer = self.buffer[:n], self.buffer[n:]
        return data

    def send(self, text: str) -> None:
        payload = text.encode()
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            header = struct.pack("!BB", 0x81, 0x80 | n)
        elif n < 1 << 16:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, n)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(header + mask + masked)

    def receive(self) -> str:
        """The next whole text message (fragments joined; pings and pongs skipped)."""
        parts = []
        while True:
            first, second = self._read(2)
            n = second & 0x7F
            if n == 126:
                n = struct.unpack("!H", self._read(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self._read(8))[0]
            mask = self._read(4) if second & 0x80 else b""
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            opcode = first & 0x0F
            if opcode == 0x8:
                raise ConnectionError("DevTools closed the WebSocket")
            if opcode in (0x9, 0xA):
                continue
            parts.append(data)
            if first & 0x80:
                return b"".join(parts).decode()

    def close(self) -> None:
        self.sock.close()


class Browser:
    """Headless Chromium with one page, driven over DevTools; kill() ends its process group."""

    def __init__(self, chromium: str, profile: Path, width: int = 1000, height: int = 700):
        profile.mkdir(parents=True, exist_ok=True)
        command = [
            chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
            "--no-first-run", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", f"--user-data-dir={profile}", "--hide-scrollbars",
            "--force-device-scale-factor=1", f"--window-size={width},{height}",
            "--remote-debugging-port=0", "--remote-allow-origins=*", "about:blank",
        ]
        self.proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, start_new_session=True)
        self.events: list[dict] = []
        self.next_id = 0
        try:
            self.ws = WebSocket(self._page_url(profile / "DevToolsActivePort"))
        except BaseException:
            self.kill()
            raise

    def _page_url(self, port_file: Path) -> str:
        deadline = time.monotonic() + CDP_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"chromium exited with {self.proc.returncode} at start")
            lines = port_file.read_text().split() if port_file.exists() else []
            if lines:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list",
                                                timeout=5) as reply:
                        pages = [t for t in json.load(reply) if t.get("type") == "page"]
                    if pages:
                        return pages[0]["webSocketDebuggerUrl"]
                except OSError:
                    pass
            time.sleep(0.1)
        raise TimeoutError(f"chromium's DevTools did not come up within {CDP_TIMEOUT} s")

    def call(self, method: str, **params) -> dict:
        """Sends one command and returns its result; events that arrive meanwhile are kept."""
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        self.ws.sock.settimeout(CDP_TIMEOUT)
        while True:
            message = json.loads(self.ws.receive())
            if message.get("id") == self.next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})
            if "method" in message:
                self.events.append(message)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (JSON-serialisable)."""
        result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def screenshot(self, path: Path) -> None:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for so far (Network.enable must have been called)."""
        return [e["params"]["request"]["url"] for e in self.events
                if e["method"] == "Network.requestWillBeSent"]

    def kill(self) -> None:
        try:
            self.ws.close()
        except AttributeError:
            pass
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.kill()
