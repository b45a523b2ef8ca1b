"""Starting and stopping the servers under test: the stages, nginx, Apache httpd, Python's
http.server.

Every server listens on 127.0.0.1 only, writes its stdout and stderr to files in its own work
directory (never to a pipe nobody reads), and runs in its own session and process group (the
group id is the server's pid), which its workers (nginx) and children (Apache) inherit. stop()
sends SIGTERM to the server, waits up to STOP_DEADLINE, then sends SIGKILL to the whole
group — also when the server itself has already exited, so no orphaned worker is left behind.

Ports: the stages take ``-p 0`` and print the port they got, so there is no race. nginx, Apache
and http.server need a port in their configuration or command line; free_port() asks the
kernel for one and releases it, and start() retries with another if the server then fails to
bind.
"""

from __future__ import annotations

import os
import pwd
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

from .client import FetchError, fetch
from .ctxsw import session_pids

#: How long a server may take to start listening.
STARTUP_DEADLINE = 10.0
#: How long a server may take to exit after SIGTERM before its process group is killed.
STOP_DEADLINE = 5.0
#: Attempts at starting nginx / http.server on a port that free_port() found.
PORT_ATTEMPTS = 3

#: The line every stage prints first; the same pattern as harness/tests/conftest.py's LISTENING_RE.
LISTENING_RE = re.compile(
    r"^(?P<stage>\S+) listening on http://(?P<host>\[[^\]]+\]|[^:/]+):(?P<port>\d+)/ "
    r"\(root (?P<root>.*)\)$", re.M)

#: Python's stock server: Debian's interpreter, whatever ``python3`` is first on PATH.
SYSTEM_PYTHON = "/usr/bin/python3"


class ServerError(RuntimeError):
    """A server did not start, or does not serve the document root correctly."""


def free_port() -> int:
    """A port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def proc_status(pid: int) -> dict[str, int]:
    """Threads, VmRSS and VmHWM (kB) of @p pid from /proc/PID/status; {} once it is gone."""
    wanted = {"Threads", "VmRSS", "VmHWM"}
    values: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as status:
            for line in status:
                name, _, rest = line.partition(":")
                if name in wanted:
                    values[name] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return values


class Server:
    """One server process under test. Subclasses say how to launch it and find its port."""

    #: Short name used in tables, CSV files and plots.
    name = "server"

    def __init__(self, workdir: Path, root: Path):
        self.workdir = workdir
        self.root = root
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.stdout_path = workdir / f"{self.name}.stdout"
        self.stderr_path = workdir / f"{self.name}.stderr"
        self.command: list[str] = []

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def describe(self) -> str:
        """The command line, for summary.md."""
        return " ".join(self.command)

    # -- to override -----------------------------------------------------------------------

    def build_command(self, port: int) -> list[str]:
        raise NotImplementedError

    def wait_port(self, port: int, deadline: float) -> int:
        """Waits until the server accepts connections; returns its port."""
        while time.monotonic() < deadline:
            self._check_alive()
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return port
            except OSError:
                time.sleep(0.05)
        raise ServerError(f"{self.name} did not accept connections on port {port} within "
                          f"{STARTUP_DEADLINE} s; see {self.stderr_path}")

    def needs_port(self) -> bool:
        """True when the command line must carry a free port (not the stages' -p 0)."""
        return True

    def prepare(self, port: int) -> None:
        """Writes whatever files the server needs before it starts (nginx.conf)."""

    # -- common ----------------------------------------------------------------------------

    def start(self) -> "Server":
        """Starts the server and waits until it accepts connections."""
        attempts = PORT_ATTEMPTS if self.needs_port() else 1
        for attempt in range(attempts):
            port = free_port() if self.needs_port() else 0
            self.prepare(port)
            self.command = self.build_command(port)
            with open(self.stdout_path, "wb") as out, open(self.stderr_path, "wb") as err:
                self.proc = subprocess.Popen(self.command, stdin=subprocess.DEVNULL, stdout=out,
                                             stderr=err, cwd=self.workdir,
                                             start_new_session=True)
            try:
                self.port = self.wait_port(port, time.monotonic() + STARTUP_DEADLINE)
                return self
            except ServerError:
                self.stop()
                if attempt + 1 == attempts:
                    raise
        raise AssertionError("unreachable")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise ServerError(f"{self.name} exited with status {self.proc.returncode}: "
                              f"{self.stderr_text()[-2000:]!r}")

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_bytes().decode("utf-8", "replace")
        except OSError:
            return ""

    def verify(self, url_path: str, size: int) -> None:
        """Fetches @p url_path once and checks status 200 and the byte count."""
        try:
            fetch(self.port, url_path, expect_size=size, timeout=30.0)
        except FetchError as error:
            raise ServerError(f"{self.name} does not serve {url_path} correctly: {error}; "
                              f"see {self.stderr_path}") from error

    def status(self) -> dict[str, int]:
        """Threads, VmRSS, VmHWM of the server's main process (see proc_status)."""
        return proc_status(self.pid) if self.proc is not None else {}

    def stop(self) -> None:
        """SIGTERM, then SIGKILL to the whole process group after STOP_DEADLINE."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(timeout=STOP_DEADLINE)
            except subprocess.TimeoutExpired:
                pass
        # The group id is the server's own pid (start_new_session): this reaches the server
        # and any worker or child it forked (nginx, Apache), and nothing else. It runs even
        # when the server has exited (or crashed), as long as one of its session is left: a
        # process group outlives its leader. The session check keeps a reused pid safe.
        if session_pids(self.proc.pid):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass
        try:
            self.proc.wait(timeout=STOP_DEADLINE)
        except subprocess.TimeoutExpired:
            pass
        # SIGKILL is delivered asynchronously: wait until the group is really gone, so that
        # the next measurement does not share the machine with a dying server.
        deadline = time.monotonic() + STOP_DEADLINE
        while session_pids(self.proc.pid) and time.monotonic() < deadline:
            time.sleep(0.01)


class StageServer(Server):
    """A stage binary, started on ``-p 0`` with ``-q`` (no access log) and ``-t``."""

    def __init__(self, workdir: Path, root: Path, binary: Path, name: str,
                 timeout: int = 10, extra: tuple[str, ...] = ()):
        self.name = name
        super().__init__(workdir, root)
        self.binary = binary
        self.timeout = timeout
        self.extra = extra

    def needs_port(self) -> bool:
        return False

    def build_command(self, port: int) -> list[str]:
        return [str(self.binary), "-p", str(port), "-r", str(self.root), "-q",
                "-t", str(self.timeout), *self.extra]

    def wait_port(self, port: int, deadline: float) -> int:
        """Reads the port from the startup line the stage prints on stdout."""
        while time.monotonic() < deadline:
            self._check_alive()
            match = LISTENING_RE.search(self.stdout_path.read_bytes().decode("utf-8", "replace"))
            if match:
                return int(match["port"])
            time.sleep(0.02)
        raise ServerError(f"{self.name} printed no listening line within {STARTUP_DEADLINE} s")


#: nginx.conf written by NginxServer: a stock static-file setup, access log off.
NGINX_CONF = """\
# Written by harness/bench compare: nginx as the reference static-file server.
{user}worker_processes auto;
daemon off;
master_process on;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log warn;
worker_rlimit_nofile 8192;

events {{
    worker_connections 4096;
}}

http {{
    include /etc/nginx/mime.types;
    default_type application/octet-stream;
    access_log off;
    sendfile on;
    client_body_temp_path {prefix}/client_body;
    proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fastcgi;
    uwsgi_temp_path {prefix}/uwsgi;
    scgi_temp_path {prefix}/scgi;

    server {{
        listen 127.0.0.1:{port};
        root {root};
    }}
}}
"""


class NginxServer(Server):
    """nginx with its own prefix directory and nginx.conf (see NGINX_CONF).

    Run as root, nginx's master needs a ``user`` for its workers: www-data, Debian's web
    server account, which is why the document root is world-readable. Run as another user,
    the directive is left out and the workers keep that user.
    """

    name = "nginx"

    def __init__(self, workdir: Path, root: Path):
        super().__init__(workdir, root)
        self.prefix = workdir / "nginx"
        self.conf = self.prefix / "nginx.conf"

    def prepare(self, port: int) -> None:
        self.prefix.mkdir(exist_ok=True)
        user = ""
        if os.geteuid() == 0:
            try:
                pwd.getpwnam("www-data")
                user = "user www-data;\n"
            except KeyError:
                user = "user nobody;\n"
        mime = "/etc/nginx/mime.types"
        text = NGINX_CONF.format(user=user, prefix=self.prefix, port=port, root=self.root)
        if not os.path.exists(mime):
            text = text.replace(f"    include {mime};\n", "")
        self.conf.write_text(text)

    def build_command(self, port: int) -> list[str]:
        return ["nginx", "-p", str(self.prefix), "-c", str(self.conf)]


#: httpd.conf written by ApacheServer: Debian's Apache with the event MPM, a static-file setup
#: like nginx's (access log off, sendfile on). The MPM figures are Debian's mpm_event.conf
#: except MaxRequestWorkers/ServerLimit (room for ab's 200 concurrent connections without
#: queueing, as nginx has) and MaxSpareThreads (so that no child is stopped between runs:
#: a process that ends takes its context-switch counts with it, see ctxsw.py).
APACHE_CONF = """\
# Written by harness/bench compare: Apache httpd (event MPM) as a peer of nginx.
ServerRoot "{prefix}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile "{prefix}/httpd.pid"
DefaultRuntimeDir "{prefix}"
Mutex file:{prefix} default
ErrorLog "{prefix}/error.log"
LogLevel warn
{user}
LoadModule mpm_event_module {modules}/mod_mpm_event.so
LoadModule authz_core_module {modules}/mod_authz_core.so
LoadModule mime_module {modules}/mod_mime.so
LoadModule dir_module {modules}/mod_dir.so

<IfModule mpm_event_module>
    StartServers            2
    ServerLimit             16
    ThreadLimit             64
    ThreadsPerChild         25
    MaxRequestWorkers       400
    MinSpareThreads         25
    MaxSpareThreads         400
    MaxConnectionsPerChild  0
</IfModule>

{types}
EnableSendfile On
EnableMMAP On
HostnameLookups Off
KeepAlive On

DocumentRoot "{root}"
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
<Directory "{root}">
    Options FollowSymLinks
    AllowOverride None
    Require all granted
</Directory>
"""

#: Where Debian's apache2-bin puts the binary and its modules.
APACHE_BINARY = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"


class ApacheServer(Server):
    """Apache httpd (Debian's ``apache2``) with the event MPM and its own httpd.conf.

    ``-DFOREGROUND``: the parent stays in the foreground (no detaching, no new session) but
    forks its children and runs them as usual, so this is Apache's real process model — a
    few processes, each with a listener thread and a pool of worker threads. As root, the
    children run as www-data like nginx's workers. No access log (there is no CustomLog).
    """

    name = "apache"

    def __init__(self, workdir: Path, root: Path):
        super().__init__(workdir, root)
        self.prefix = workdir / "apache"
        self.conf = self.prefix / "httpd.conf"

    def prepare(self, port: int) -> None:
        if not os.access(APACHE_BINARY, os.X_OK):
            raise ServerError(f"{APACHE_BINARY} not found (Debian package apache2-bin)")
        self.prefix.mkdir(exist_ok=True)
        user = ""
        if os.geteuid() == 0:
            account = "www-data"
            try:
                pwd.getpwnam(account)
            except KeyError:
                account = "nobody"
            user = f"User {account}\nGroup {account}"
        types = ("TypesConfig /etc/mime.types" if os.path.exists("/etc/mime.types")
                 else "# /etc/mime.types is missing: no Content-Type for unknown suffixes")
        self.conf.write_text(APACHE_CONF.format(prefix=self.prefix, port=port, user=user,
                                                modules=APACHE_MODULES, types=types,
                                                root=self.root))

    def build_command(self, port: int) -> list[str]:
        return [APACHE_BINARY, "-d", str(self.prefix), "-f", str(self.conf), "-DFOREGROUND"]


class PythonServer(Server):
    """``python3 -m http.server``: a ThreadingHTTPServer that logs each request on stderr."""

    name = "python"

    def build_command(self, port: int) -> list[str]:
        return [SYSTEM_PYTHON, "-m", "http.server", str(port), "--bind", "127.0.0.1",
                "--directory", str(self.root)]
