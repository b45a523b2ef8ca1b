"""The sandbox a submission's code runs in: existing tools, layered, chosen at run time.

Every run of student code (its build, each start of its server) is wrapped by Sandbox.wrap():

- ``bwrap`` (Debian ``bubblewrap``): a PID namespace that ends with the run (``--unshare-pid
  --die-with-parent``: when its first process dies the kernel kills all the others, however
  they forked, ``setsid``-ed or renamed themselves) and a minimal view of the file system: the
  system read-only (/usr, /etc, /sys), a private /tmp, the submission's own copy and the
  check's document root. The kit, the rubric, the hidden checks, the output directory and
  every other submission are simply not there.
- ``unshare`` (util-linux ``unshare --pid --fork --kill-child``): the same PID namespace, but
  the file system is protected by permissions only.
- ``uid``: where namespaces are not allowed (a container without CAP_SYS_ADMIN), only the uid of
  the submission's own, whose processes reap() kills with ``kill(-1)`` *as that uid*, repeated
  until none is left.

Under every layer the code runs as a uid of its own (never root), with no capabilities, no new
privileges, and resource limits (prlimit): address space, processes, file size. Python 3.8+,
standard library only.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import pwd
import socket
import struct
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

#: The layers, strongest first; "auto" picks the first one this machine allows.
LAYERS = ("bwrap", "unshare", "uid")
#: Where a uid per job is looked for unless --uids says otherwise: no passwd entry is needed.
DEFAULT_UIDS = (61000, 61999)
#: Directory of the lock files that give a uid to one job at a time (the host's, root only).
UID_LOCK_DIR = Path("/run/lab-grader-uids")

#: Defaults of the caps (each a command-line option of the grade and batch commands).
DEFAULT_MEMORY_MIB = 2048  #: address space of each process (RLIMIT_AS)
DEFAULT_PROCS = 256  #: processes and threads of the submission's uid (RLIMIT_NPROC)
DEFAULT_FILE_MIB = 64  #: largest file it may write, logs included (RLIMIT_FSIZE)

#: What the submission's processes see of the environment (nothing of the grader's).
SANDBOX_PATH = "/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin"


@dataclass
class Caps:
    """The resource limits of a submission's processes."""

    memory_mib: int = DEFAULT_MEMORY_MIB
    procs: int = DEFAULT_PROCS
    file_mib: int = DEFAULT_FILE_MIB

    def tmp_bytes(self) -> int:
        """Size of the private /tmp (bwrap): room for four files of the largest size."""
        return 4 * (self.file_mib << 20)

    def words(self) -> str:
        return (f"{self.memory_mib} MiB of memory per process, {self.procs} processes and "
                f"threads, {self.file_mib} MiB per file")


@dataclass
class Sandbox:
    """How one submission's code is run: the layer, its uid, what it may see and write."""

    layer: str  #: "bwrap", "unshare", "uid", or "none" (as the invoking user)
    uid: Optional[int] = None
    gid: Optional[int] = None
    caps: Caps = field(default_factory=Caps)
    writable: List[Path] = field(default_factory=list)  #: the submission's own copy
    own_loopback: bool = False  #: its job has a loopback of its own (private_loopback())
    tmp: Optional[Path] = None  #: its TMPDIR where /tmp is the machine's (uid, unshare)

    @property
    def sealed(self) -> bool:
        """Whether the code runs as a uid of its own (every layer but "none")."""
        return self.layer != "none" and self.uid is not None

    def describe(self) -> str:
        """The layer in plain words, for the reports."""
        if not self.sealed:
            return "none: the code ran as the invoking user (--unsandboxed-as-me)"
        what = {"bwrap": "bubblewrap: PID namespace and a private view of the file system",
                "unshare": "unshare: PID namespace; files protected by permissions only",
                "uid": "uid only (no namespaces here): files protected by permissions, "
                       "processes killed as that uid"}[self.layer]
        net = ("a loopback network of its own" if self.own_loopback else
               "the machine's loopback network, shared with other jobs")
        return f"{what}; {net}; uid {self.uid}; {self.caps.words()}"

    def wrap(self, argv: Sequence[str], cwd: Path, readable: Sequence[Path] = ()) -> List[str]:
        """@p argv run inside the sandbox, in @p cwd, also seeing @p readable (read-only)."""
        argv = list(argv)
        if not self.sealed:
            return argv
        inner = ["prlimit", f"--as={self.caps.memory_mib << 20}", f"--nproc={self.caps.procs}",
                 f"--fsize={self.caps.file_mib << 20}", "--core=0", "--",
                 "setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                 "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--", *argv]
        if self.layer == "bwrap":
            return [*bwrap_prefix(self.writable, readable, self.caps.tmp_bytes(), cwd), *inner]
        if self.layer == "unshare":
            return ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--", *inner]
        return inner

    def env(self, home: Path, extra: Dict[str, str]) -> Dict[str, str]:
        """The environment of a sandboxed run: a plain PATH and @p extra, nothing else (and,
        where /tmp is the machine's, TMPDIR pointing at the submission's own)."""
        env = {"PATH": SANDBOX_PATH, "HOME": str(home), "LANG": "C.UTF-8", **extra}
        if self.layer != "bwrap" and self.tmp is not None:
            env["TMPDIR"] = str(self.tmp)
        return env

    def reap(self) -> None:
        """Kills every process of the submission's uid (the kernel's kill(-1) as that uid,
        again and again until none is left): whatever forked away from any pid list."""
        if self.sealed:
            reap_uid(self.uid, self.gid)


#: unshare(2)'s flag for a new network namespace, and the ioctls that read and set an
#: interface's flags (linux/sched.h, linux/sockios.h).
CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1


def private_loopback() -> bool:
    """Moves the calling thread into a network namespace of its own, with only its loopback
    up. Whatever the thread starts from then on (a submission's build, the grade command, the servers
    it starts) shares that loopback, and no other job's processes can reach it: a
    submission's server cannot connect to the server of the submission graded beside it, nor
    the other way round. The network namespace is the thread's own, so the grader's other
    threads keep the machine's. False where the kernel refuses (a container without
    CAP_SYS_ADMIN): then every job shares the machine's loopback."""
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | IFF_UP))
    return True


def bwrap_prefix(writable: Sequence[Path], readable: Sequence[Path], tmp_bytes: int,
                 cwd: Path) -> List[str]:
    """bubblewrap's command line for a minimal view: the system read-only, a fresh /tmp of
    @p tmp_bytes for each run (never a directory the code could have written to before: no
    link it left there can steer where bwrap, as root, makes the mount points below)."""
    argv = ["bwrap", "--unshare-pid", "--die-with-parent", "--unshare-ipc", "--unshare-uts",
            "--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc", "--ro-bind", "/sys", "/sys",
            "--proc", "/proc", "--dev", "/dev"]
    for name in ("bin", "sbin", "lib", "lib32", "lib64", "libx32"):
        top = Path("/") / name
        if top.is_symlink():
            argv += ["--symlink", os.readlink(top), str(top)]
        elif top.is_dir():
            argv += ["--ro-bind", str(top), str(top)]
    argv += ["--perms", "1777", "--size", str(tmp_bytes), "--tmpfs", "/tmp"]
    made = {Path("/"), Path("/tmp")}
    for flag, paths in (("--bind", writable), ("--ro-bind", readable)):
        for path in paths:
            # Their parents, which bwrap would make 0700 root: passable, nothing to list.
            for parent in reversed(path.parents):
                if parent not in made:
                    argv += ["--perms", "0711", "--dir", str(parent)]
                    made.add(parent)
            argv += [flag, str(path), str(path)]
            made.add(path)
    return [*argv, "--chdir", str(cwd), "--"]


def reap_uid(uid: int, gid: int, rounds: int = 2000, settle: float = 5.0) -> None:
    """kill(-1, SIGKILL) as @p uid until it finds nothing (bash's builtin kill, so the shell
    that signals is never among the signalled); then waits up to @p settle seconds for the
    killed to be reaped, since until then they still count against the uid's process cap."""
    script = (f'i=0; while [ "$i" -lt {rounds} ] && kill -9 -1 2>/dev/null; '
              f'do i=$((i+1)); done')
    subprocess.run(["setpriv", f"--reuid={uid}", f"--regid={gid}", "--clear-groups", "--",
                    "/bin/bash", "-c", script], stdin=subprocess.DEVNULL,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60, env={})
    deadline = time.monotonic() + settle
    while uid in uids_running() and time.monotonic() < deadline:
        time.sleep(0.02)


#: The uid a probe switches to when no job's uid is at hand: never one of the range, whose
#: owner may be killing every process of it at that very moment.
PROBE_UID = 65534


def available(layer: str, uid: int = PROBE_UID) -> bool:
    """Whether @p layer works here: a trivial run through it (as @p uid), asked of the kernel."""
    probes = {
        "bwrap": ["bwrap", "--unshare-pid", "--die-with-parent", "--ro-bind", "/", "/",
                  "--proc", "/proc", "--dev", "/dev", "true"],
        "unshare": ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "true"],
        "uid": ["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups", "true"],
    }
    if os.geteuid() != 0:
        return False  # switching to another uid needs root
    try:
        return subprocess.run(probes[layer], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def choose_layer(requested: str, uid: int = PROBE_UID) -> str:
    """The layer to use for @p requested ("auto" or one of LAYERS), probed as @p uid; raises
    ValueError when it cannot run here."""
    if os.geteuid() != 0:
        raise ValueError("grading student code needs root, to run it as a uid of its own "
                         "(or --unsandboxed-as-me, to run it as you: your own code only).")
    candidates = LAYERS if requested == "auto" else (requested,)
    for layer in candidates:
        if available(layer, uid):
            return layer
    if requested == "auto":
        raise ValueError("no sandbox layer works here: even switching to another uid failed.")
    raise ValueError(f"--sandbox {requested} does not work on this machine "
                     f"({'install bubblewrap, or ' if requested == 'bwrap' else ''}use --sandbox auto).")


def parse_uid_range(text: str) -> Tuple[int, int]:
    """``61000-61999`` or ``61234`` → (first, last); raises ValueError."""
    first, _, last = text.partition("-")
    try:
        low, high = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"not a uid range: {text!r} (FIRST-LAST, e.g. 61000-61999)") from None
    if not 0 < low <= high < 2 ** 31:
        raise ValueError(f"not a uid range: {text!r} (FIRST-LAST, above 0)")
    return low, high


class UidClaim:
    """A uid held by one job for its whole run: a lock file under UID_LOCK_DIR, so that two
    jobs, or two batches on one machine, never share a uid (each reap() would kill the other's
    processes)."""

    def __init__(self, uid: int, fd: int):
        self.uid = uid
        self.gid = uid
        self._fd = fd

    def release(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1


def claim_uid(first: int, last: int) -> UidClaim:
    """The first free uid of [@p first, @p last]: no passwd entry, no process, no other job's
    lock. Raises ValueError when none is free."""
    UID_LOCK_DIR.mkdir(mode=0o700, exist_ok=True)
    running = uids_running()
    for uid in range(first, last + 1):
        if uid in running:
            continue
        try:
            pwd.getpwuid(uid)
            continue  # a real account: never borrowed
        except KeyError:
            pass
        fd = os.open(UID_LOCK_DIR / f"{uid}.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue
        if uid in uids_running():  # started between the scan and the lock
            os.close(fd)
            continue
        return UidClaim(uid, fd)
    raise ValueError(f"no free uid in {first}-{last} (each job needs one; --uids FIRST-LAST).")


def uids_running() -> set:
    """The real uids of the processes running now."""
    found = set()
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                found.add(entry.stat().st_uid)
            except OSError:
                continue
    return found


def processes_of(uid: int, outside_group: Optional[int] = None) -> List[Tuple[int, str, int]]:
    """(pid, command, threads) of the live (not zombie) processes of @p uid; only those not in
    process group @p outside_group when it is given."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if entry.stat().st_uid != uid:
                continue
            stat = (entry / "stat").read_text()
            fields = stat[stat.rindex(")") + 2:].split()
            state, pgrp, threads = fields[0], int(fields[2]), int(fields[17])
            if state in ("Z", "X") or (outside_group is not None and pgrp == outside_group):
                continue
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            found.append((int(entry.name), command.strip() or f"[{entry.name}]", threads))
        except (OSError, ValueError, IndexError):
            continue
    return found


def tasks_of(uid: int) -> int:
    """Processes and threads of @p uid now (what RLIMIT_NPROC counts)."""
    return sum(threads for _, _, threads in processes_of(uid))


def secure_tree(path: Path, uid: int, gid: int) -> None:
    """Gives @p path (the submission's copy) to @p uid, readable by nobody else."""
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            target = os.path.join(root, name)
            os.lchown(target, uid, gid)
            if not os.path.islink(target):
                mode = os.lstat(target).st_mode
                os.chmod(target, mode & 0o700 | 0o600)
    os.chown(path, uid, gid)
    os.chmod(path, 0o700)


def near_cap(seen: int, cap: int) -> bool:
    """Whether @p seen processes mean the cap of @p cap was (or nearly was) reached: they are
    counted now and then, and a PID namespace takes them all away the moment its command ends,
    so the last ones are often missed."""
    return seen >= cap * 3 // 4
