"""A description of the machine the figures come from (for machine.txt and summary.md)."""

from __future__ import annotations

import datetime
import os
import platform
import re
import shutil
import subprocess


def _mtime(path) -> str:
    try:
        stamp = os.path.getmtime(path)
    except OSError:
        return "?"
    return datetime.datetime.fromtimestamp(stamp).astimezone().isoformat(timespec="seconds")


def _first_line(command: list[str]) -> str:
    if shutil.which(command[0]) is None:  # which() also accepts an absolute path
        return "not installed"
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    text = (result.stdout or result.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _memory() -> str:
    try:
        with open("/proc/meminfo", encoding="ascii") as meminfo:
            match = re.search(r"MemTotal:\s+(\d+) kB", meminfo.read())
            if match:
                return f"{int(match[1]) / 1024 / 1024:.1f} GiB"
    except OSError:
        pass
    return "unknown"


def _distribution() -> str:
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            match = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', release.read(), re.M)
            if match:
                return match[1]
    except OSError:
        pass
    return "unknown"


def _compiler(build_dir) -> str:
    """The C++ compiler CMake configured in @p build_dir (else the default c++), with version."""
    compiler = "c++"
    try:
        with open(os.path.join(build_dir, "CMakeCache.txt"), encoding="utf-8") as cache:
            match = re.search(r"^CMAKE_CXX_COMPILER:\w+=(.+)$", cache.read(), re.M)
            if match:
                compiler = match[1].strip()
    except OSError:
        pass
    return _first_line([compiler, "--version"])


def _source(repo) -> str:
    """The commit the binaries were presumably built from, and whether the tree differs."""
    try:
        head = subprocess.run(["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain",
                                "--untracked-files=no"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    if not head:
        return "unknown"
    return head + (" with uncommitted changes" if dirty else "")


def describe(build_dir, repo, binaries) -> dict[str, str]:
    """Ordered facts: date, CPU, cores, memory, kernel, compiler and tool versions, load."""
    load = os.getloadavg()
    return {
        "date": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "nproc": str(os.cpu_count()),
        "memory": _memory(),
        "os": _distribution(),
        "kernel": f"{platform.system()} {platform.release()}",
        "compiler": _compiler(build_dir),
        "nginx": _first_line(["nginx", "-v"]),
        "apache": _first_line(["/usr/sbin/apache2", "-v"]).removeprefix("Server version: "),
        "ab": _first_line(["ab", "-V"]),
        "python (clients and http.server)": _first_line(["/usr/bin/python3", "--version"]),
        "source": _source(repo),
        "binaries": ", ".join(
            f"{os.path.basename(b)} built {_mtime(b)}" for b in binaries),
        "load average at start (1/5/15 min)": " ".join(f"{x:.2f}" for x in load),
    }
