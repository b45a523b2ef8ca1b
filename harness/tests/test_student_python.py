"""The Python handout (./lab handout --lang python) tested from the student's side.

The kit cuts the Python starter (stubs) and its solution tree, then, inside each, runs what the
handout's own README lists with its own ./lab: ./lab run (the stub answers 503 and says which
TODO, the solution 200; --sequential serves in both), the server's --help, each ./lab grade
command (stubs at most 40 per profile, the solution full marks on both profiles: the round
trip of the reference solution in python/), the scripts its pages name (--help), its Classroom
workflow step by step (solution green with every point, stubs red with the points of the
checks they pass), question 5's command, shortened, in the solution tree, and ./lab doctest
over each tree's own pages (the solution: every block passes; the stubs: exactly the blocks of
stages 2 and 3 that need the student's code fail). Every relative link of each tree's Markdown
resolves, and the tree holds nothing of the C++ track.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import time
from pathlib import Path

import pytest

import studentside as ss
from test_handout import skip_under_sanitizers

#: The README's commands this test knows how to run; a new one fails the test until it does.
KNOWN = re.compile(r"^(\./lab (run|grade|speedup|doctest)\b|python3 http_server\.py --help$)")


@pytest.fixture(scope="module")
def trees(tmp_path_factory) -> dict[str, Path]:
    skip_under_sanitizers()  # nothing here runs the kit's build: once is enough
    base = tmp_path_factory.mktemp("student-python")
    return {"stubs": ss.generate(base / "handout", "--lang", "python"),
            "solution": ss.generate(base / "solution", "--lang", "python", "--solution")}


@pytest.fixture(scope="module")
def readme_grades(trees, tmp_path_factory) -> dict[str, dict[str, dict]]:
    """Each README ./lab grade command run in each tree: tree → profile → results.json."""
    return ss.readme_grades(trees, tmp_path_factory)


def test_tree_holds_the_python_track_only(trees):
    for name, tree in trees.items():
        files = {p.relative_to(tree).as_posix() for p in tree.rglob("*")
                 if p.is_file() and ".git" not in p.relative_to(tree).parts}
        assert {"http_server.py", "lab", "README.md", "ANSWERS.md", "docs/index.md",
                "harness/grader/__main__.py", "harness/grader/rubric.toml", "harness/bench/shaped.py",
                ".github/workflows/classroom.yml", "www/index.html"} <= files, name
        assert not [f for f in files if f.endswith((".cpp", ".hpp", "CMakeLists.txt"))
                    or f.startswith(("stage", "common/", "python/"))], name
        # Of the harness, only its part: the grader (not the instructor's batch grading or
        # similarity ranking) and question 5's benchmark with what it imports.
        assert not [f for f in files if f.startswith(("harness/handout/", "harness/hidden/",
                                                      "harness/demo/", "harness/tests/test_"))
                    or f == "harness/tests/conftest.py"
                    or f in ("harness/grader/batch.py", "harness/grader/similarity.py",
                             "harness/grader/submission.py", "harness/bench/compare.py",
                             "harness/bench/timeline.py", "harness/bench/lib/report.py")], name
        server = (tree / "http_server.py").read_text()
        assert "SOLUTION" not in server and "import" in server
        # The grader's manual shows grading this tree's server, not the C++ stages' binaries.
        manual = (tree / "harness/grader/README.md").read_text()
        assert '--server-cmd "build/bin/stage' not in manual, name
        assert '--server-cmd "python3 http_server.py -p {port}"' in manual, name
    stub = (trees["stubs"] / "http_server.py").read_text()
    assert "TODO(student)" in stub and "threading.Thread(target=run" not in stub
    assert "TODO(student)" not in (trees["solution"] / "http_server.py").read_text()


def test_readme_lists_only_commands_this_test_runs(trees):
    ss.check_readme_commands(trees, KNOWN)


def test_grade_scores_both_profiles(readme_grades):
    ss.check_grade_scores(readme_grades)


def test_lab_run(trees):
    status, stderr = ss.serve_and_get("./lab run", trees["stubs"])
    assert " 503 " in status + " " and "TODO(student)" in stderr, (status, stderr[-2000:])
    for tree in trees.values():
        status, _ = ss.serve_and_get("./lab run --sequential", tree)
        assert " 200 " in status + " ", status
    status, _ = ss.serve_and_get("./lab run", trees["solution"])
    assert " 200 " in status + " ", status


def test_help_of_every_command_and_script(trees):
    for name, tree in trees.items():
        for command in ("./lab help", "./lab grade --help", "./lab speedup --help",
                        "./lab doctest --help", "python3 http_server.py --help"):
            proc = ss.sh(command, tree, timeout=120)
            assert proc.returncode == 0 and "usage" in proc.stdout.lower(), (name, command, proc.stderr)
        assert "-maxclient" in ss.sh("python3 http_server.py --help", tree).stdout
        scripts = ss.named_scripts(tree)
        assert "harness/tests/testdata/flawed_server.py" in scripts, scripts
        for script in scripts:
            proc = ss.sh(f"{ss.PYTHON} {script} --help", tree, timeout=60)
            assert proc.returncode == 0, (name, script, proc.stderr[-2000:])
        bad = ss.sh("python3 http_server.py -p 0 -maxclient 3", tree, timeout=30)
        assert bad.returncode == 2 and "go together" in bad.stderr


def test_links_resolve(trees):
    """Every relative link of every Markdown page (inline, reference or HTML; #fragments
    too) leads to a file, directory or heading of the tree, and every .py or .sh file a page
    names is one of the tree's (test_help_of_every_command_and_script runs those that are
    scripts with --help)."""
    for tree in trees.values():
        assert not ss.dead_links(tree), ss.dead_links(tree)
        named, missing = ss.named_files(tree)
        assert not missing, f"{tree.name}: pages name files the tree does not hold: {missing}"
        assert {"http_server.py", "docs/tools/hold.py"} <= named, named
        tools = ss.named_tools(tree)
        assert {"harness/grader grade", "harness/bench shaped", "harness/guidetest"} <= tools, tools


def test_classroom_workflow(trees, readme_grades):
    yaml = pytest.importorskip("yaml")  # python3-yaml: ./lab setup of the kit installs it
    ss.check_classroom_workflow(trees, readme_grades, yaml)


def test_speedup_in_the_solution_tree(trees):
    """Question 5's command, shortened (3 rounds, 5 ms round trip, 1 Gbit/s), so short that
    its runs are flagged as noise: the student's server
    sequential and threaded, and python -m http.server, both test cases, no errors."""
    ss.check_short_speedup(trees["solution"], ("sequential", "threaded", "python"))


def test_server_answers(trees, tmp_path):
    """The solution's server over a root with a symbolic link out of it, a FIFO and an
    unreadable directory: each request gets the status the kit's servers give."""
    root = tmp_path / "root"
    (root / "sub").mkdir(parents=True)
    (root / "a.txt").write_text("hi\n")
    (tmp_path / "secret.txt").write_text("secret\n")
    (root / "link.txt").symlink_to("../secret.txt")
    os.mkfifo(root / "fifo")
    (root / "sub" / "index.html").write_text("<p>sub</p>\n")
    port = ss.free_port()
    server = subprocess.Popen(["python3", str(trees["solution"] / "http_server.py"), "-p", str(port),
                               "-q"], cwd=root, env=ss.student_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            try:
                ss.get(port, "/a.txt")
                break
            except OSError:
                time.sleep(0.05)
        cases = {"GET /a.txt HTTP/1.0": "200", "HEAD /a.txt HTTP/1.0": "200",
                 "POST /a.txt HTTP/1.0": "501", "GET /../secret.txt HTTP/1.0": "400",
                 "GET /%2e%2e/secret.txt HTTP/1.0": "400", "GET /link.txt HTTP/1.0": "404",
                 "GET /fifo HTTP/1.0": "403", "GET /nope HTTP/1.0": "404", "BAD": "400",
                 "GET /%00 HTTP/1.0": "400", "GET /sub/ HTTP/1.0": "200",
                 "GET /sub/../a.txt HTTP/1.0": "200", "GET a.txt HTTP/1.0": "400"}
        for request, status in cases.items():
            with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
                conn.sendall(request.encode() + b"\r\n\r\n")
                reply = b""
                while chunk := conn.recv(4096):
                    reply += chunk
            line = reply.split(b"\r\n", 1)[0].decode()
            assert line.split(" ")[1:2] == [status], (request, line)
            assert b"secret" not in reply, request
            if request.startswith("GET /a.txt"):
                assert b"Content-Type: text/plain" in reply and reply.endswith(b"\r\n\r\nhi\n")
            if request.startswith("HEAD"):
                assert reply.endswith(b"\r\n\r\n") and b"Content-Length: 3" in reply
    finally:
        server.terminate()
        server.wait(timeout=10)


def stage_of(page: Path, line: int) -> str:
    """The "## Stage N" section of @p page that holds @p line ("" before the first)."""
    section = ""
    for number, text in enumerate(page.read_text().split("\n"), 1):
        if number > line:
            break
        if text.startswith("## "):
            section = (re.match(r"## (Stage \d)", text) or [None, ""])[1]
    return section


def test_doctest_of_the_solution_tree(trees):
    """`./lab doctest` (listed in the README) over the solution tree's own pages, against its
    http_server.py: every block that is not marked skip runs and passes, 0 failed."""
    tree = trees["solution"]
    assert "./lab doctest" in ss.shell_blocks((tree / "README.md").read_text())
    markers = ss.doctest_markers(tree)
    assert sum(where.startswith("docs/index.md:") for where in markers) >= 6, markers
    proc, verdicts, (passed, failed) = ss.run_doctest(tree)
    assert proc.returncode == 0 and failed == 0, (proc.stdout + proc.stderr)[-5000:]
    assert set(verdicts) == set(markers) and set(verdicts.values()) == {"ok"}, verdicts
    assert passed >= len(markers)


def test_doctest_of_the_stub_handout(trees):
    """`./lab doctest` in the stub handout runs every block and reports: stage 1's blocks (the
    given server) pass; what fails is only blocks of stages 2 and 3 (the stubs answer 503), at
    least one in each, and the run exits 1."""
    tree = trees["stubs"]
    assert "./lab doctest" in ss.shell_blocks((tree / "README.md").read_text())
    proc, verdicts, (passed, failed) = ss.run_doctest(tree)
    output = (proc.stdout + proc.stderr)[-5000:]
    assert proc.returncode == 1 and failed > 0 and passed > 0, output
    assert set(verdicts) == set(ss.doctest_markers(tree)), (verdicts, output)
    stages = {where: stage_of(tree / where.split(":")[0], int(where.split(":")[1]))
              for where in verdicts}
    failing = {stages[w] for w, v in verdicts.items() if v == "FAIL"}
    assert failing == {"Stage 2", "Stage 3"}, (verdicts, output)
    assert all(v == "ok" for w, v in verdicts.items() if stages[w] == "Stage 1"), output
    assert "503" in output
