"""Shared pieces of the student-side tests (test_student_cpp.py, test_student_python.py): they
generate a handout with ./lab handout and run in it what its own pages say, as a student
would, with the handout's own ./lab and scripts, never the kit's."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from conftest import HARNESS_DIR
from handout import leaks

GENERATOR = HARNESS_DIR / "handout"
PYTHON = "/usr/bin/python3"
#: A stubbed handout may score at most this on a profile: stubs must not pass.
HANDOUT_MAX_SCORE = 40


def student_env() -> dict[str, str]:
    """The environment a student's shell would have: none of the kit's test settings."""
    return {k: v for k, v in os.environ.items() if not k.startswith(("LAB_", "PYTEST"))}


def generate(dest: Path, *args: str) -> Path:
    """Cuts a handout into @p dest with the kit's generator (the instructor's step)."""
    proc = subprocess.run([PYTHON, str(GENERATOR), *args, str(dest)], capture_output=True,
                          text=True, timeout=120, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, f"./lab handout {' '.join(args)} failed:\n{proc.stderr}"
    assert "note:" not in proc.stderr, proc.stderr
    return dest


def sh(command: str, cwd: Path, timeout: float = 600, **env: str) -> subprocess.CompletedProcess:
    """Runs @p command with bash in @p cwd, as a student types it."""
    return subprocess.run(["bash", "-c", command], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL,
                          env={**student_env(), **env}, start_new_session=True)


def shell_blocks(markdown: str) -> list[str]:
    """The commands of the ```sh blocks of @p markdown: continuation lines joined, trailing
    comments dropped."""
    commands, block = [], None
    for line in markdown.split("\n"):
        if block is None:
            if re.match(r"^\s*```(sh|bash|shell)\s*$", line):
                block = []
            continue
        if re.match(r"^\s*```\s*$", line):
            text = "\n".join(block).replace("\\\n", " ")
            for command in text.split("\n"):
                command = re.sub(r"\s{2,}#.*$", "", command).strip()
                if command and not command.startswith("#"):
                    commands.append(re.sub(r"\s+", " ", command))
            block = None
            continue
        block.append(line)
    return commands


def markdown_files(tree: Path) -> list[Path]:
    return sorted(p for p in tree.rglob("*.md") if ".git" not in p.relative_to(tree).parts)


def dead_links(tree: Path) -> list[str]:
    """Relative links of the tree's Markdown (outside code) whose target it does not hold, or
    whose #fragment names no heading of the page it leads to (the generator's own check,
    handout.leaks.dead_links(), over the tree as written)."""
    files = {p.relative_to(tree).as_posix(): (p.read_text(errors="replace")
                                              if p.suffix == ".md" else None)
             for p in tree.rglob("*") if p.is_file() and ".git" not in p.relative_to(tree).parts}
    return leaks.dead_links(files)


#: File names the pages use in examples for a file of the reader's own, not one of the tree.
EXAMPLE_NAMES = {"my_server.py"}


def named_files(tree: Path) -> tuple[set[str], list[str]]:
    """The .py and .sh files the tree's pages name, in prose and in code
    (harness/bench/shaped.py, ../harness/bench/shaped.py from docs/, or a bare hold.py that a
    file of the tree answers to): (the tree's files they name, "page:line: name" of each name
    no file of the tree answers to)."""
    files = [p.relative_to(tree).as_posix() for p in tree.rglob("*")
             if p.is_file() and ".git" not in p.relative_to(tree).parts]
    root = tree.resolve()
    found: set[str] = set()
    missing = []
    for page in markdown_files(tree):
        for number, line in enumerate(page.read_text().split("\n"), 1):
            for name in re.findall(r"(?<![\w./*-])((?:\.\.?/)*[\w-][\w.-]*(?:/[\w.-]+)*\.(?:py|sh))\b",
                                   line):
                local = (page.parent / name).resolve()
                if local.is_file() and root in local.parents:
                    found.add(local.relative_to(root).as_posix())
                    continue
                bare = None if name.startswith("../") else re.sub(r"^(\./)+", "", name)
                matches = [f for f in files if bare and (f == bare or f.endswith("/" + bare))]
                if matches:
                    found.update(matches)
                elif Path(name).name not in EXAMPLE_NAMES:
                    missing.append(f"{page.relative_to(tree)}:{number}: {name}")
    return found, missing


def named_tools(tree: Path) -> set[str]:
    """The tools of harness/ the tree's pages name, as they are run: ``harness/bench`` (a
    folder with a __main__.py), with the command after it when the tool lists it in its
    COMMANDS (``harness/bench shaped``)."""
    named = set()
    for page in markdown_files(tree):
        for rel, word in re.findall(r"(?<![\w/.])(harness/[\w-]+)/?(?: ([a-z][\w-]*))?",
                                    page.read_text()):
            main = tree / rel / "__main__.py"
            if main.is_file():
                commands = re.findall(r'^    "([a-z][\w-]*)": \(', main.read_text(), re.M)
                named.add(f"{rel} {word}" if word and word in commands else rel)
    return named


def named_scripts(tree: Path) -> list[str]:
    """Every program the tree's pages name: the tools of harness/ (named_tools()), and every
    script of named_files(): a .sh file, or a Python file with a #! line or a __main__ guard
    (a test module or a check file is no script)."""
    scripts = set(named_tools(tree))
    for rel in sorted(named_files(tree)[0]):
        text = (tree / rel).read_text()
        if rel.endswith(".sh") or text.startswith("#!") or \
                re.search(r"^if __name__ == .__main__.:", text, re.M):
            scripts.add(rel)
    return sorted(scripts)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def get(port: int, path: str = "/index.html", timeout: float = 10) -> str:
    """The status line of GET @p path on 127.0.0.1:@p port."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(f"GET {path} HTTP/1.0\r\n\r\n".encode())
        data = b""
        while b"\r\n" not in data:
            chunk = conn.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0].decode("latin-1")


def serve_and_get(command: str, cwd: Path, startup: float = 300) -> tuple[str, str]:
    """Starts a serving command (./lab run ...) on a free port, GETs /index.html once it
    listens, stops it (its whole session). Returns (status line, its stderr)."""
    port = free_port()
    errors = tempfile.TemporaryFile()
    proc = subprocess.Popen(["bash", "-c", command], cwd=cwd, env={**student_env(), "PORT": str(port)},
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=errors,
                            start_new_session=True)

    def stderr() -> str:
        errors.seek(0)
        return errors.read().decode("utf-8", "replace")

    try:
        deadline = time.monotonic() + startup
        while True:
            assert proc.poll() is None, f"{command} exited {proc.returncode}: {stderr()[-2000:]}"
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                assert time.monotonic() < deadline, f"{command} never listened on {port}"
                time.sleep(0.2)
        status = get(port)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return status, stderr()


def grade(command: str, tree: Path, out: Path) -> dict:
    """Runs one of the README's ./lab grade commands, its reports sent to @p out."""
    proc = sh(f"{command} --out {out}", tree, timeout=900)
    assert proc.returncode == 0, f"{command}\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return json.loads((out / "results.json").read_text()) | {"summary": proc.stdout}


def readme_grades(trees: dict[str, Path], tmp_path_factory) -> dict[str, dict[str, dict]]:
    """Each of the README's two ./lab grade commands run in each tree: tree → profile →
    results.json (for a module-scoped fixture: grading takes minutes)."""
    graded: dict[str, dict[str, dict]] = {}
    for name, tree in trees.items():
        commands = [c for c in shell_blocks((tree / "README.md").read_text())
                    if c.startswith("./lab grade ")]
        assert len(commands) == 2, commands
        for command in commands:
            profile = re.search(r"--profile (\w+)", command)[1]
            out = tmp_path_factory.mktemp(f"grade-{name}-{profile}")
            graded.setdefault(name, {})[profile] = grade(command, tree, out)
    return graded


def check_readme_commands(trees: dict[str, Path], known: re.Pattern) -> None:
    """Every command of each tree's README is one @p known matches (one a test runs)."""
    for tree in trees.values():
        unknown = [c for c in shell_blocks((tree / "README.md").read_text()) if not known.match(c)]
        assert not unknown, f"README commands no student-side test runs: {unknown}"


def check_grade_scores(graded: dict[str, dict[str, dict]]) -> None:
    """The README's grade commands (readme_grades()): the stubs at most HANDOUT_MAX_SCORE, the
    solution full marks, on both profiles."""
    for profile, full in (("threaded", 70), ("limited", 100)):
        stubs, solution = graded["stubs"][profile], graded["solution"][profile]
        assert stubs["max_score"] == solution["max_score"] == full
        assert stubs["score"] <= HANDOUT_MAX_SCORE, stubs["summary"]
        assert solution["score"] == full, solution["summary"]


def check_classroom_workflow(trees: dict[str, Path], graded: dict[str, dict[str, dict]],
                             yaml) -> None:
    """The workflow's steps run as GitHub would run them: the solution green with every point;
    the stubs red, earning the points of exactly the checks they pass whole (in @p graded)."""
    earned, available, red = run_workflow(trees["solution"], yaml)
    assert available == 170 and earned == 170 and not red, red
    earned, available, red = run_workflow(trees["stubs"], yaml)
    expected = sum(passed_points(r) for r in graded["stubs"].values())
    assert red and earned == expected <= 2 * HANDOUT_MAX_SCORE, (earned, expected, red)


def check_short_speedup(tree: Path, servers: tuple[str, ...]) -> str:
    """Question 5's command in @p tree, shortened (3 rounds, 5 ms round trip, 1 Gbit/s), so
    short that its runs are flagged as noise: each of @p servers has both test cases, no
    errors. Returns the table."""
    proc = sh("./lab speedup --reps 3 --rtt-ms 5 --mbit 1000 --out build/q5", tree, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    table = (tree / "build/q5/shaped.md").read_text()
    assert "⚠" in table and "lasted less than 0.5 s" in table, table
    for server in servers:
        rows = re.findall(rf"^\| {server} \| (.*) \| (\d+) \|$", table, re.M)
        assert len(rows) == 2 and all(errors == "0" for _, errors in rows), (server, table)
    return table


#: The pages ./lab doctest runs by default (harness/guidetest's DEFAULT_PAGES).
DOCTEST_PAGES = ("README.md", "docs/*.md", "ANSWERS.md")


def doctest_markers(tree: Path) -> dict[str, str]:
    """The doctest markers of the tree's default pages that run (all but `skip`), as the runner
    names them ("docs/index.md:LINE", the line of the block's fence) → the verb."""
    markers: dict[str, str] = {}
    for pattern in DOCTEST_PAGES:
        for page in sorted(tree.glob(pattern)):
            verbs: list[str] = []
            for number, line in enumerate(page.read_text().split("\n"), 1):
                if match := re.match(r"^\s*<!-- doctest:?\s*(\w+)", line):
                    verbs.append(match[1])
                elif re.match(r"^\s*(```|~~~)", line):
                    for verb in verbs:
                        if verb != "skip":
                            markers.setdefault(f"{page.relative_to(tree)}:{number}", verb)
                    verbs = []
    return markers


def run_doctest(tree: Path) -> tuple[subprocess.CompletedProcess, dict[str, str], tuple[int, int]]:
    """`./lab doctest -v` in @p tree: (the process, "page:LINE" → "ok" or "FAIL" for every
    check it ran, (passed, failed) from its last line)."""
    proc = sh("./lab doctest -v", tree, timeout=1200)
    verdicts = {m[2]: m[1] for m in re.finditer(r"^(ok|FAIL) +(\S+:\d+) \w+$", proc.stdout, re.M)}
    summary = re.findall(r"^(\d+) passed, (\d+) failed$", proc.stdout, re.M)
    assert summary, f"./lab doctest printed no summary:\n{(proc.stdout + proc.stderr)[-3000:]}"
    return proc, verdicts, (int(summary[-1][0]), int(summary[-1][1]))


def passed_points(results: dict) -> float:
    """Points of the checks that passed whole (what a Classroom step per check earns)."""
    return sum(t["max_score"] for t in results["tests"] if t["score"] == t["max_score"])


def run_workflow(tree: Path, yaml) -> tuple[float, float, list[str]]:
    """Runs the tree's Classroom workflow as GitHub would, step by step, in @p tree: `run`
    steps with bash, Classroom's command-grader steps by their command (red when it exits
    non-zero). Returns (points earned, points available, names of the red steps)."""
    workflow = yaml.safe_load((tree / ".github/workflows/classroom.yml").read_text())
    (job,) = workflow["jobs"].values()
    earned = available = 0.0
    red, graders = [], []
    for step in job["steps"]:
        uses = step.get("uses", "")
        if "run" in step:
            proc = sh(step["run"], tree, timeout=job.get("timeout-minutes", 30) * 60)
            assert proc.returncode == 0, f"step {step.get('name')}: {proc.stderr[-3000:]}"
        elif uses.startswith("classroom-resources/autograding-command-grader@"):
            given = step["with"]
            graders.append(step["id"])
            available += given["max-score"]
            proc = sh(given["command"], tree, timeout=given["timeout"] * 60)
            if proc.returncode == 0:
                earned += given["max-score"]
            else:
                red.append(step["name"])
        elif uses.startswith("classroom-resources/autograding-grading-reporter@"):
            runners = step["with"]["runners"].split(",")
            assert runners == graders, "the reporter does not report every graded step"
            for runner in runners:
                assert step["env"][f"{runner.upper()}_RESULTS"] == \
                    f"${{{{steps.{runner}.outputs.result}}}}"
        else:
            assert uses.startswith(("actions/checkout@", "actions/upload-artifact@")), uses
    assert graders, "no graded step in the workflow"
    return earned, available, red
