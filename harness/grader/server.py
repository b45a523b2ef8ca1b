"""Starting and stopping the server under test, whatever language it is written in.

The command is a template run by ``/bin/sh -c`` in a new session (its own process group), so
stopping it reaches every process it started: SIGTERM to the group, then SIGKILL. A process
that left the group (``setsid -f``, a daemon) is still found: every process the command starts
inherits a per-run token in its environment, and whoever listens on the graded port is looked
up too; both are killed after the group. Inside a sandbox (grader/sandbox.py) the command runs
as the submission's own uid, in a PID namespace where the machine allows one: stopping it ends
the namespace, and every process of that uid is killed after it.

Its output goes to files, never to a pipe nobody reads (a busy access log would fill the pipe
and block the server), and their tails go into the failure messages.
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import socket
import string
import subprocess
import threading
import time
import uuid
from pathlib import Path
from typing import List, Optional, Sequence, Set, Tuple

from .sandbox import Sandbox, processes_of, tasks_of

#: The placeholders a --server-cmd may use, with what they stand for.
PLACEHOLDERS = {
    "port": "the TCP port the grader picked; the server must listen on 127.0.0.1:{port}",
    "root": "absolute path of the document root the grader prepared (also the server's cwd)",
    "maxclient": "the --maxclient value: open connections allowed per client IP",
    "maxtotal": "the --maxtotal value: open connections allowed in all",
}

#: How long a stopped server may take to exit after SIGTERM before its group gets SIGKILL.
STOP_GRACE = 3.0
#: Attempts to start when the chosen port turns out to be taken (another program got it first).
PORT_ATTEMPTS = 3
#: Environment variable carrying the per-run token that marks the server's processes.
TOKEN_VARIABLE = "LAB_GRADER_SERVER"


class ServerStartError(Exception):
    """The server did not come up: exited, or never accepted a connection."""


def placeholder_names(template: str) -> list[str]:
    """The ``{names}`` used in @p template; raises ValueError on malformed braces."""
    names = []
    for _, field, spec, conversion in string.Formatter().parse(template):
        if field is None:
            continue
        if spec or conversion or not field.isidentifier():
            raise ValueError(f"bad placeholder {{{field}{'!' + conversion if conversion else ''}"
                             f"{':' + spec if spec else ''}}} (write {{{{ and }}}} for literal braces)")
        names.append(field)
    return names


def validate_template(template: str) -> None:
    """Raises ValueError when @p template uses an unknown placeholder or lacks ``{port}``."""
    names = placeholder_names(template)
    unknown = sorted(set(names) - set(PLACEHOLDERS))
    if unknown:
        raise ValueError(f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                         f"known: {', '.join('{' + n + '}' for n in PLACEHOLDERS)}")
    if "port" not in names:
        raise ValueError("the server command must contain {port}: the grader picks the port")


_PLAIN_WORD = re.compile(r"(?<![^\s])[\w.+/-]+(?![^\s])")


def absolutize(template: str, base: Path) -> tuple[str, list[tuple[str, str]]]:
    """Makes plain words of @p template that name an existing *file* relative to @p base
    absolute, since the server runs in the document root, not where the grader was started:
    ``python3 my_server.py -p {port}`` keeps working. Directories, options (``-x``), words
    with quotes, ``$`` or placeholders are left alone. Returns (template, [(old, new), ...]).
    """
    changes = []

    def fix(match: re.Match) -> str:
        word = match[0]
        if word.startswith("-") or word.startswith("/"):
            return word
        path = base / word
        if not path.is_file():
            return word
        new = shlex.quote(str(path.resolve()))
        changes.append((word, new))
        return new

    return _PLAIN_WORD.sub(fix, template), changes


def render(template: str, values: dict[str, object]) -> str:
    """@p template with each placeholder replaced by its shell-quoted value."""
    return template.format_map({k: shlex.quote(str(v)) for k, v in values.items()})


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def tail_bytes(path: Path, max_bytes: int) -> bytes:
    """The last @p max_bytes bytes of a file (b"" when it cannot be read)."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            f.seek(max(0, f.tell() - max_bytes))
            return f.read(max_bytes)
    except OSError:
        return b""


def tail(path: Path, lines: int = 20, max_bytes: int = 4000) -> str:
    """The last @p lines lines (at most @p max_bytes bytes) of a file, decoded leniently."""
    try:
        with open(path, "rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - max_bytes))
            data = f.read()
    except OSError:
        return ""
    text = data.decode("utf-8", "replace")
    if size > max_bytes:
        text = text.split("\n", 1)[-1]
    return "\n".join(text.rstrip("\n").split("\n")[-lines:])


class ServerProcess:
    """One run of the server command, logging to ``<log_prefix>.stdout`` / ``.stderr``."""

    def __init__(self, template: str, values: dict[str, object], cwd: Path, log_prefix: Path,
                 sandbox: Optional[Sandbox] = None, readable: Sequence[Path] = ()):
        self.sandbox = sandbox or Sandbox("none")  #: where the command runs
        self.readable = list(readable)  #: what the sandbox shows besides the submission
        self.token = uuid.uuid4().hex
        self.escaped: List[str] = []  #: processes found outside the group when stopping
        self.most_tasks = 0  #: processes and threads of the sandbox's uid seen at once
        self.template = template
        self.values = dict(values)
        self.cwd = cwd
        self.stdout_path = log_prefix.with_name(log_prefix.name + ".stdout")
        self.stderr_path = log_prefix.with_name(log_prefix.name + ".stderr")
        self.proc: subprocess.Popen | None = None
        self.port = 0
        self.command = ""
        self._lock = threading.Lock()
        self._stopped = False

    def start(self, startup_timeout: float) -> None:
        """Starts the server on a free port and waits until it accepts a TCP connection.

        Raises ServerStartError (after stopping what it started) when it exits first or does
        not accept within @p startup_timeout seconds.
        """
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            self.values["port"] = self.port
            self.command = render(self.template, self.values)
            with self._lock:
                if self._stopped:
                    raise ServerStartError("the check was stopped before the server started")
                with open(self.stdout_path, "ab") as out, open(self.stderr_path, "ab") as err:
                    self.proc = subprocess.Popen(
                        self._argv(),
                        cwd=self.cwd,
                        stdin=subprocess.DEVNULL,
                        stdout=out,
                        stderr=err,
                        start_new_session=True,
                        env=self._env(),
                    )
            try:
                self._wait_ready(startup_timeout)
                return
            except ServerStartError as error:
                status = self.proc.poll()
                self._kill(self.proc)
                in_use = "in use" in (tail(self.stderr_path) + tail(self.stdout_path)).lower()
                if status is not None and in_use and attempt + 1 < PORT_ATTEMPTS:
                    continue  # someone else took the port between free_port() and bind()
                raise error

    def _argv(self) -> List[str]:
        """The shell running the command, inside the sandbox when there is one."""
        return self.sandbox.wrap(["/bin/sh", "-c", self.command], self.cwd, self.readable)

    def _env(self) -> dict:
        """The server's environment: in a sandbox only PATH and the like (nothing of the
        grader's); on a student's own machine, theirs."""
        extra = {"PYTHONUNBUFFERED": "1", TOKEN_VARIABLE: self.token}
        if self.sandbox.sealed:
            return self.sandbox.env(self.cwd, extra)
        return {**os.environ, **extra}

    def _wait_ready(self, startup_timeout: float) -> None:
        deadline = time.monotonic() + startup_timeout
        while True:
            status = self.proc.poll()
            if status is not None:
                raise ServerStartError(
                    f"the server exited with status {describe_status(status)} before accepting "
                    f"connections (command: {self.command})")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return  # accepted: ready. Closing at once lets a sequential server move on.
            except OSError:
                pass
            if time.monotonic() >= deadline:
                raise ServerStartError(
                    f"the server did not accept connections on 127.0.0.1:{self.port} within "
                    f"{startup_timeout:g} s (command: {self.command}); it must listen on the "
                    f"port given by {{port}}")
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_exit(self, seconds: float) -> None:
        """Waits up to @p seconds for the server to exit by itself."""
        try:
            if self.proc is not None:
                self.proc.wait(timeout=seconds)
        except subprocess.TimeoutExpired:
            pass

    def exit_status(self) -> int | None:
        return None if self.proc is None else self.proc.poll()

    def stop(self) -> int | None:
        """Stops the server's whole process group: SIGTERM, then SIGKILL after STOP_GRACE.
        Safe to call more than once and from another thread. Returns the leader's status."""
        with self._lock:
            self._stopped = True  # a start() still under way in another thread gives up
            proc = self.proc
        if proc is None:
            return None
        return self._kill(proc)

    def _kill(self, proc: subprocess.Popen) -> int | None:
        with signals_deferred():  # a Ctrl-C or SIGTERM now must not leave half a cleanup
            if self.sandbox.sealed:
                # Whatever left the group (setsid, a daemon) outlives the run unless killed:
                # those are what the student is told about, not zombies or the group itself.
                outside = processes_of(self.sandbox.uid, outside_group=proc.pid)
                self.most_tasks = max(self.most_tasks, tasks_of(self.sandbox.uid))
                status = stop_session(proc, STOP_GRACE)
                self.sandbox.reap()
                killed = [(pid, command) for pid, command, _ in outside]
            else:
                status = stop_session(proc, STOP_GRACE)
                # Then whatever left the group: daemons, `setsid -f`, whoever holds the port.
                killed = kill_all(leftover_processes(self.token, self.port, None))
        self.escaped += [f"pid {pid}: {command[:120]}" for pid, command in killed]
        return status

    def log_tails(self, lines: int = 20) -> str:
        """The tails of the server's stdout and stderr, labelled, or '' when both are empty."""
        parts = []
        if lines <= 0:
            return ""
        for label, path in (("stdout", self.stdout_path), ("stderr", self.stderr_path)):
            text = tail(path, lines, max_bytes=min(4000, 200 * lines))
            if text.strip():
                parts.append(f"--- server {label} (last {lines} lines, {path.name}) ---\n{text}")
        return "\n".join(parts)


#: The signals that stop the grader; held back while a server is being stopped.
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP}


class signals_deferred:
    """Holds back STOP_SIGNALS in the main thread for the duration (they are delivered, and
    their handlers run, right after); elsewhere it does nothing."""

    def __enter__(self):
        self.active = threading.current_thread() is threading.main_thread()
        if self.active:
            self.previous = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
        return self

    def __exit__(self, *exc):
        if self.active:
            signal.pthread_sigmask(signal.SIG_SETMASK, self.previous)
        return False


def as_user(user: Optional[Tuple[int, int]], argv: List[str]) -> List[str]:
    """@p argv run as @p user (uid, gid) with no supplementary groups, through ``setpriv``;
    @p argv itself when @p user is None."""
    if user is None:
        return argv
    uid, gid = user
    return ["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", *argv]


def stop_session(proc: subprocess.Popen, grace: float) -> int | None:
    """Stops @p proc, started in a session of its own, and its whole process group: SIGTERM,
    then SIGKILL after @p grace seconds (also to children that outlived the leader or ignored
    SIGTERM). Returns the leader's status (None if it still has not exited)."""
    if proc.poll() is None:
        signal_group(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
    signal_group(proc.pid, signal.SIGKILL)
    try:
        proc.wait(timeout=max(grace, 1.0))
    except subprocess.TimeoutExpired:
        pass
    return proc.poll()


def kill_all(processes: List[Tuple[int, str]]) -> List[Tuple[int, str]]:
    """SIGKILLs each (pid, command) of @p processes; returns those that were signalled."""
    killed = []
    for pid, command in processes:
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            continue
        killed.append((pid, command))
    return killed


def signal_group(pgid: int, signum: int) -> None:
    """Sends @p signum to process group @p pgid (the server's session) if it still exists."""
    try:
        os.killpg(pgid, signum)
    except (ProcessLookupError, PermissionError):
        pass


def signal_words(number: int) -> Optional[str]:
    """``SIGSEGV, segmentation fault`` for 11; None when @p number is no signal."""
    try:
        name = signal.Signals(number).name
    except ValueError:
        return None
    text = signal.strsignal(number) or ""
    return f"{name}, {text[:1].lower() + text[1:]}" if text else name


def describe_status(status: int) -> str:
    """An exit status in words: ``3``; ``-9 (killed by SIGKILL, killed)``; and, since the
    command runs under ``sh -c``, the shell's 128+N for a child killed by signal N:
    ``139 (killed by SIGSEGV, segmentation fault: the shell reports 128+11)``."""
    if status < 0:
        words = signal_words(-status)
        return f"{status} (killed by {words})" if words else str(status)
    if 128 < status < 128 + 65:
        words = signal_words(status - 128)
        if words:
            return f"{status} (killed by {words}: the shell reports 128+{status - 128})"
    if status == 127:
        return "127 (command not found: the shell could not find or run the program)"
    if status == 126:
        return "126 (the program is not executable: permission denied)"
    return str(status)


def leftover_processes(token: str, port: int, uid: Optional[int]) -> List[Tuple[int, str]]:
    """(pid, command line) of the processes that belong to a stopped server: those whose
    environment carries @p token, those of @p uid (the throwaway user a server runs as), and
    those listening on 127.0.0.1:@p port that the grader may signal. Never this process."""
    return find_processes(f"{TOKEN_VARIABLE}={token}", uid, port)


def find_processes(env_mark: str, uid: Optional[int] = None, port: int = 0) -> List[Tuple[int, str]]:
    """(pid, command line) of the processes whose environment holds @p env_mark (``NAME=value``),
    those of @p uid, and those listening on TCP @p port, among the processes this one may
    signal (all for root, its own uid's otherwise). Never this process."""
    listeners = listening_inodes(port) if port else set()
    me = os.getpid()
    mine = os.getuid()
    found = []
    needle = env_mark.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == me:
            continue
        try:
            owner = entry.stat().st_uid
            ours = uid is not None and owner == uid
            if not ours and (mine == 0 or owner == mine):
                try:
                    ours = needle in (entry / "environ").read_bytes().split(b"\0")
                except PermissionError:
                    pass
                if not ours and listeners:
                    ours = holds_socket(entry, listeners)
            if ours:
                command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                found.append((int(entry.name), command.strip() or f"[{entry.name}]"))
        except (FileNotFoundError, ProcessLookupError, PermissionError, NotADirectoryError):
            continue  # gone meanwhile, or not ours to read
    return found


def listening_inodes(port: int) -> Set[str]:
    """Socket inodes of TCP listeners on @p port (IPv4 and IPv6)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(fields[9])
    return inodes


def holds_socket(proc_dir: Path, inodes: Set[str]) -> bool:
    """Whether the process of @p proc_dir has one of the socket @p inodes open."""
    try:
        for fd in (proc_dir / "fd").iterdir():
            try:
                link = os.readlink(fd)
            except OSError:
                continue
            if link.startswith("socket:[") and link[8:-1] in inodes:
                return True
    except OSError:
        pass
    return False
