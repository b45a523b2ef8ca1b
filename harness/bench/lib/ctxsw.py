"""Context switches and CPU time of a server under test, over all its processes and threads.

CPU time is simpler: ``/proc/PID/stat`` fields 14 and 15 (utime, stime) are the whole
process's, its live threads plus every thread that has exited (the kernel folds an exiting
thread's times into its process), in clock ticks; the bench sums them over the server's
processes. Like the switches, a whole process that exits during a run takes its times with it.

What the kernel offers, and what each source misses:

- ``/proc/PID/task/TID/status`` (``voluntary_ctxt_switches`` + ``nonvoluntary_ctxt_switches``)
  counts one thread. A thread that exits takes its counters with it: summing over the threads
  alive at the end of a run loses every thread that ended during the run. For a server with
  a thread per connection (stage 2, stage 3, Python's http.server) that is nearly all of them.
- ``/proc/PID/status`` shows the same two lines, but for the thread-group leader (the main
  thread) only, not the process: nothing is folded into it when other threads exit.
  ``/proc/PID/sched`` (``nr_switches``) is per thread as well, and ``/proc/PID/stat`` has no
  context-switch field at all.
- When a thread exits, the kernel adds its counts to its process's ``signal_struct``; that
  total (dead threads + live ones) is what ``getrusage(RUSAGE_SELF)`` returns, but only to the
  process itself. From outside, the one interface that returns it is **taskstats**: a netlink
  query (``TASKSTATS_CMD_ATTR_TGID``) answers ``nvcsw``/``nivcsw`` summed over the process's
  live threads plus every thread that has exited (``fill_stats_for_tgid``/``fill_tgid_exit`` in
  kernel/taskstats.c). It needs ``CONFIG_TASKSTATS`` and ``CAP_NET_ADMIN`` (root), and is not
  offered inside a network namespace other than the initial one.

So Counter uses taskstats when it can (method ``taskstats``), and otherwise falls back to the
per-thread sum (method ``proc-tasks``), which is then a lower bound for servers whose threads
come and go; both are recorded for every run, so the difference can be seen.

A server is every process in its session: the bench starts each one with
``start_new_session``, so nginx's workers and Apache's children share the server's session id.
A whole *process* that exits during a run is lost by both methods (its parent's reaped-child
totals are visible to that parent alone); Counter reports how many did, and the bench
configures nginx and Apache so that their processes live for the whole run.
"""

from __future__ import annotations

import glob
import os
import socket
import struct
from dataclasses import dataclass, field

# Generic netlink and taskstats constants (linux/netlink.h, linux/genetlink.h,
# linux/taskstats.h).
_NETLINK_GENERIC = 16
_NLMSG_ERROR = 2
_NLM_F_REQUEST = 1
_GENL_ID_CTRL = 0x10
_CTRL_CMD_GETFAMILY = 3
_CTRL_ATTR_FAMILY_ID = 1
_CTRL_ATTR_FAMILY_NAME = 2
_TASKSTATS_CMD_GET = 1
_TASKSTATS_CMD_ATTR_TGID = 2
_TASKSTATS_TYPE_STATS = 3
_TASKSTATS_TYPE_AGGR_TGID = 5
#: Byte offset of ``nvcsw`` (followed by ``nivcsw``) in struct taskstats; the struct only
#: grows at its end, so the offset holds for every version that has the fields (≥ 2).
_NVCSW_OFFSET = 272


@dataclass
class Snapshot:
    """Counts of one server at one moment, per process (pid → switches)."""

    pids: set[int] = field(default_factory=set)  #: the server's processes
    processes: dict[int, int] = field(default_factory=dict)  #: pid → taskstats total, if used
    threads: dict[int, int] = field(default_factory=dict)  #: tid → per-thread count
    cpu_ticks: dict[int, int] = field(default_factory=dict)  #: pid → utime + stime (ticks)


@dataclass
class Delta:
    """Context switches between two snapshots."""

    switches: int | None  #: by the counter's method; None when nothing could be read
    live_threads: int  #: per-thread /proc sum over threads alive at the end (a lower bound)
    processes_exited: int  #: processes that ended in between: their switches are missing
    cpu_seconds: float | None = None  #: user + system CPU time of the server's processes


def session_pids(sid: int) -> list[int]:
    """Every live process whose session id is @p sid (the server and anything it forked);
    zombies, which have exited and wait to be reaped, are left out."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                text = stat.read()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: fields start after the last ')'.
        fields = text[text.rfind(b")") + 2:].split()
        if len(fields) > 3 and int(fields[3]) == sid and fields[0] not in (b"Z", b"X"):
            pids.append(int(entry))
    return pids


#: Clock ticks per second of /proc/PID/stat's times.
_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pid: int) -> int | None:
    """utime + stime of process @p pid (all its threads, live and exited), in clock ticks;
    None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rfind(b")") + 2:].split()  # fields[0] is field 3, the state
    return int(fields[11]) + int(fields[12])


def _thread_counts(pid: int) -> dict[int, int]:
    """tid → voluntary + nonvoluntary switches for every live thread of @p pid."""
    counts = {}
    for path in glob.glob(f"/proc/{pid}/task/*/status"):
        total = 0
        try:
            with open(path, encoding="ascii", errors="replace") as status:
                for line in status:
                    if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                        total += int(line.split()[1])
        except (OSError, ValueError, IndexError):
            continue
        counts[int(path.split("/")[4])] = total
    return counts


def _attr(kind: int, payload: bytes) -> bytes:
    length = 4 + len(payload)
    return struct.pack("HH", length, kind) + payload + b"\0" * (-length % 4)


def _attrs(buffer: bytes) -> dict[int, bytes]:
    out, i = {}, 0
    while i + 4 <= len(buffer):
        length, kind = struct.unpack_from("HH", buffer, i)
        if length < 4:
            break
        out[kind & 0x3FFF] = buffer[i + 4:i + length]
        i += (length + 3) & ~3
    return out


class Taskstats:
    """A generic-netlink socket that asks the kernel for one process's taskstats."""

    def __init__(self) -> None:
        self._sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, _NETLINK_GENERIC)
        self._sock.settimeout(2.0)
        self._sock.bind((0, 0))
        self._seq = 0
        reply = self._request(_GENL_ID_CTRL, _CTRL_CMD_GETFAMILY,
                              _attr(_CTRL_ATTR_FAMILY_NAME, b"TASKSTATS\0"))
        self._family = struct.unpack("H", _attrs(reply)[_CTRL_ATTR_FAMILY_ID][:2])[0]

    def close(self) -> None:
        self._sock.close()

    def _request(self, kind: int, command: int, payload: bytes) -> bytes:
        self._seq += 1
        body = struct.pack("BBH", command, 1, 0) + payload
        self._sock.send(struct.pack("IHHII", 16 + len(body), kind, _NLM_F_REQUEST, self._seq, 0)
                        + body)
        data = self._sock.recv(65536)
        length, reply_kind = struct.unpack_from("IH", data)
        if reply_kind == _NLMSG_ERROR:
            code = -struct.unpack_from("i", data, 16)[0]
            raise OSError(code, os.strerror(code))
        return data[20:length]  # after nlmsghdr (16) and genlmsghdr (4)

    def switches(self, pid: int) -> int:
        """nvcsw + nivcsw of process @p pid: its live threads plus all that have exited."""
        reply = _attrs(self._request(self._family, _TASKSTATS_CMD_GET,
                                     _attr(_TASKSTATS_CMD_ATTR_TGID, struct.pack("I", pid))))
        stats = _attrs(reply[_TASKSTATS_TYPE_AGGR_TGID])[_TASKSTATS_TYPE_STATS]
        voluntary, involuntary = struct.unpack_from("QQ", stats, _NVCSW_OFFSET)
        return voluntary + involuntary


class Counter:
    """Reads a server's context switches before and after a run (see the module docstring)."""

    def __init__(self) -> None:
        self.method = "proc-tasks"
        self.why_not_taskstats = ""
        self._taskstats: Taskstats | None = None
        try:
            self._taskstats = Taskstats()
            self._taskstats.switches(os.getpid())  # proves the query works, not just the socket
            self.method = "taskstats"
        except (OSError, KeyError, struct.error) as error:
            if self._taskstats is not None:
                self._taskstats.close()
                self._taskstats = None
            self.why_not_taskstats = str(error) or type(error).__name__

    def close(self) -> None:
        if self._taskstats is not None:
            self._taskstats.close()

    def snapshot(self, sid: int) -> Snapshot:
        """Counts of every process in session @p sid (the server's pid)."""
        snap = Snapshot()
        for pid in session_pids(sid):
            snap.pids.add(pid)
            snap.threads.update(_thread_counts(pid))
            ticks = cpu_ticks(pid)
            if ticks is not None:
                snap.cpu_ticks[pid] = ticks
            if self._taskstats is not None:
                try:
                    snap.processes[pid] = self._taskstats.switches(pid)
                except (OSError, KeyError, struct.error):
                    pass  # exited between listing and asking
        return snap

    def delta(self, before: Snapshot, after: Snapshot) -> Delta:
        """Switches from @p before to @p after. A process or thread that appeared in between
        counts from zero; one that disappeared is lost (and counted in processes_exited)."""
        live = sum(n - before.threads.get(tid, 0) for tid, n in after.threads.items())
        gone = len(before.pids - after.pids)
        cpu = (sum(n - before.cpu_ticks.get(pid, 0) for pid, n in after.cpu_ticks.items())
               / _TICKS if after.cpu_ticks else None)
        if not after.threads:
            return Delta(None, 0, gone, cpu)
        if self._taskstats is None:
            return Delta(live, live, gone, cpu)
        switches = sum(n - before.processes.get(pid, 0) for pid, n in after.processes.items())
        return Delta(switches, live, gone, cpu)

    def describe(self) -> str:
        """One sentence for summary.md: what was counted, and what it misses."""
        if self.method == "taskstats":
            return ("Context switches: voluntary + involuntary, from the kernel's taskstats "
                    "interface (netlink, per process: every live thread plus every thread that "
                    "exited), summed over the server's processes, read before and after each ab "
                    "run, divided by the requests ab completed. Threads that ended during the "
                    "run are included; a whole process that ended is not (none should: see "
                    "the CSV's ctx_processes_exited). The CSV's ctx_live_threads column is the "
                    "sum over /proc/PID/task/*/status of the threads alive at the end: the "
                    "same for servers with a fixed set of threads, far lower for those with a "
                    "thread per connection, whose ended threads it cannot see.")
        return ("Context switches: voluntary + involuntary summed over /proc/PID/task/*/status "
                "of the server's processes, before and after each ab run, divided by the "
                "requests ab completed. taskstats, which also counts threads that exited, was "
                f"not available ({self.why_not_taskstats}; it needs CAP_NET_ADMIN, i.e. root, "
                "and a kernel with CONFIG_TASKSTATS): threads that ended during the run are "
                "lost, so for servers with a thread per connection (stage2, stage3, python) "
                "the figure is a lower bound, far too low.")
