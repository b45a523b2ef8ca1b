"""./lab demo (harness/demo): every phase runs to its end, and nothing it started is left.

The test runs the script that `./lab demo` executes, with this build's servers (--bin), in a
session of its own: afterwards no process of that session may be alive, and neither may any
server it said it started. A second run is interrupted (SIGINT, as Ctrl-C sends) in the
middle and must clean up the same way.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import BIN_DIR, HARNESS_DIR, wait_until

DEMO = HARNESS_DIR / "demo"
PHASES = [
    "Phase 1: a dozen clients fetching",
    "Phase 2: one address holding idle connections",
    "Phase 3: a hundred addresses filling the total",
    "Phase 4: the same hundred, with --reclaim-idle",
    "Phase 5: a slow reader",
    "Phase 6: stage 1 and stage 2 side by side under one silent client",
]
#: Bound on a whole --auto 1 run (about 15 s on a quiet machine).
DEMO_TIMEOUT = 120


def session_members(sid: int) -> list[int]:
    """Processes alive in session @p sid (zombies aside)."""
    members = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            members.append(int(entry.name))
    return members


def alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def start_demo(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(DEMO), "--bin", str(BIN_DIR), *args],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)


def assert_nothing_left(proc: subprocess.Popen, output: str) -> None:
    servers = [int(pid) for pid in re.findall(r"started \w+ \(pid (\d+)\)", output)]
    assert servers, output
    # Each server it said it started must be gone, by its pid, and the session empty.
    left = wait_until(lambda: not [p for p in servers if alive(p)] or None, timeout=5,
                      message=f"servers {servers} to be gone")
    assert left
    assert session_members(proc.pid) == [], "the demo left processes behind"


def test_demo_runs_every_phase_and_leaves_nothing():
    proc = start_demo("--auto", "1")
    try:
        output, _ = proc.communicate(timeout=DEMO_TIMEOUT)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, output
    positions = [output.find(phase) for phase in PHASES]
    assert -1 not in positions and positions == sorted(positions), output
    assert "/server-status?view=html" in output
    # What each phase is there to show did happen.
    assert re.search(r"connection 13 refused: 429", output), output
    assert re.search(r"Phase 3.*?replies: 503 x40\n", output, re.S), output
    assert re.search(r"Phase 4.*?replies: 408 x40\n", output, re.S), output
    assert "stage1_sequential: a visitor's GET /index.html -> no answer" in output, output
    assert re.search(r"stage2_threaded: a visitor's GET /index.html -> 200", output), output
    assert "Demo over" in output
    assert_nothing_left(proc, output)


def test_demo_cleans_up_on_ctrl_c():
    proc = start_demo("--auto", "4")
    try:
        lines = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append(line)
            if not line or "Phase 2:" in line:
                break
        assert any("Phase 2:" in line for line in lines), "".join(lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = "".join(lines) + rest
    assert proc.returncode == 130, output
    assert "Interrupted" in output
    assert_nothing_left(proc, output)
