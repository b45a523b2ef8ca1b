"""harness/bench timeline: the request timelines of question 5's test cases tell the stages apart.

Runs the script (CSV only: the PNG needs python3-matplotlib, which only the bench installs)
with test case 2's large files read at a client's pace, and checks what the figures in
docs/stage1.md, stage2.md and stage3.md are there to show: stage 1 starts each reply only
after the one before it has mostly gone (a staircase of first bytes), stage 2 starts them
all at once, and stage 3 with -maxclient 2 refuses the clients over its limit.
"""

from __future__ import annotations

import csv
import subprocess
import sys
from collections import defaultdict

from conftest import BIN_DIR, HARNESS_DIR


def test_timeline_shows_the_staircase_the_overlap_and_the_refusals(tmp_path):
    done = subprocess.run(
        [sys.executable, str(HARNESS_DIR / "bench"), "timeline", "--bin", str(BIN_DIR), "--out",
         str(tmp_path), "--no-png", "--small", "12", "--large-mib", "4"],
        capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    rows = defaultdict(list)
    with open(tmp_path / "timeline-testcase2.csv", newline="") as f:
        for row in csv.DictReader(f):
            rows[row["stage"].split(" (")[0]].append(row)
    for stage in ("stage 1", "stage 2", "stage 3"):
        for row in rows[stage]:
            assert float(row["connect_s"]) <= float(row["first_byte_s"]) <= float(row["last_byte_s"])

    def first_byte_spread(stage):
        firsts = [float(r["first_byte_s"]) for r in rows[stage] if r["status"] == "200"]
        assert len(firsts) >= 2, rows[stage]
        return max(firsts) - min(firsts)

    # 4 MiB at 40 Mbit/s is 0.8 s a client; the kernel's buffers absorb part of each reply.
    sequential, threaded = first_byte_spread("stage 1"), first_byte_spread("stage 2")
    assert sequential >= 0.3, f"stage 1's first bytes within {sequential:.2f} s: no staircase"
    assert threaded < sequential / 2, f"stage 2 {threaded:.2f} s vs stage 1 {sequential:.2f} s"
    assert all(r["status"] == "200" for s in ("stage 1", "stage 2") for r in rows[s])
    statuses = sorted(r["status"] for r in rows["stage 3"])
    assert statuses == ["200", "200", "429", "429"], statuses
