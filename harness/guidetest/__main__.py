#!/usr/bin/env python3
"""Runs the command blocks of README.md, docs/*.md and ANSWERS.md and checks what they print.

The guide is tested the way Python's doctest, Rust's doc-tests and Mercurial's cram tests test
theirs: every shell block (```sh) carries a marker, an HTML comment just above it that a
reader of the rendered page does not see, saying how to run it and what its output must show.
docs/index.md ("Tested commands") documents the markers; for example:

    <!-- doctest: run
    server: build/bin/stage1_sequential -p 8080 -r www
    expect: 200
    real: 4..6
    -->

Blocks run in a scratch copy of the repository (build/bin there points at --bin), with bash,
one block at a time, on a free port that replaces 8080 everywhere in the block and in its
checks. Each block runs in its own process group; background processes it leaves (hold.py
--background, `... &`) are ended by process group, and every server the runner started is
stopped by pid. Ends with "N passed, M failed"; exits 1 when anything failed.

In a tree of the Python track (http_server.py at the top, no CMakeLists.txt: a handout cut with
--lang python) the blocks start the student's http_server.py and nothing is built: --bin is
not needed. Either way, only the tools the blocks name (curl, ss, ps, pgrep) must be there.

Usage: /usr/bin/python3 harness/guidetest [--bin DIR] [-v] [FILE[:LINE] ...]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
#: The pages whose blocks are run, relative to the repository.
DEFAULT_PAGES = ["README.md", "docs/*.md", "ANSWERS.md"]
#: Pages not marked yet, and why; named on the command line they run all the same.
NOT_YET_MARKED: dict = {}
#: Tools the guide's blocks may use, and the Debian packages that hold them.
TOOLS = {"curl": "curl", "ss": "iproute2", "ps": "procps", "pgrep": "procps"}
#: Info strings of the blocks that must carry a marker.
SHELL_LANGS = {"sh", "bash", "shell", "console"}
#: The port the pages use; each run replaces it with a free one.
DOC_PORT = "8080"
#: Bounds, in seconds.
SERVER_READY = 10.0
SERVER_STOP = 5.0
DEFAULT_TIMEOUT = 60.0

#: The line a server prints once it listens: the C++ stages' "NAME listening on URL (root
#: DIR)", or the Python track's http_server.py "listening on URL serving DIR".
LISTENING = re.compile(r"(^|\s)listening on http://\S+ (\(root .*\)|serving \S.*)$")
FENCE = re.compile(r"^(?P<indent>\s*)(?P<fence>```+|~~~+)\s*(?P<lang>[\w+-]*)")
REAL = re.compile(r"^real\s+(?:(\d+)m)?([\d.]+)s$")
ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


@dataclass
class Block:
    """One fenced block of a page, with the markers just above it."""

    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    text: str
    markers: list["Marker"] = field(default_factory=list)

    @property
    def where(self) -> str:
        return f"{self.page.relative_to(REPO)}:{self.line}"


@dataclass
class Marker:
    """One <!-- doctest: VERB ... --> comment: the verb, the rest of its first line, its keys."""

    verb: str
    argument: str
    keys: list[tuple[str, str]]

    def get(self, key: str, default: str | None = None) -> str | None:
        for name, value in self.keys:
            if name == key:
                return value
        return default

    def all(self, key: str) -> list[str]:
        return [value for name, value in self.keys if name == key]


VERBS = {"run", "server", "servers", "output", "collect", "excerpt", "skip"}
KEYS = {"server", "expect", "expect-not", "real", "number", "exit", "timeout", "keep", "needs"}


def have_ipv6() -> bool:
    """True when this machine has IPv6 on loopback (::1): some containers do not."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.bind(("::1", 0))
        return True
    except OSError:
        return False


#: What a block may need (`needs:`) that not every machine has, and how to tell.
NEEDS = {"ipv6": have_ipv6}


def parse_marker(comment: list[str]) -> Marker:
    head = comment[0].strip()[len("<!-- doctest:"):].strip()
    body = comment[1:]
    if head.endswith("-->"):
        head, body = head[:-3].strip(), []
    elif body:
        body = body[:-1] if body[-1].strip() == "-->" else body
    verb, _, argument = head.partition(" ")
    verb = verb.rstrip(":")
    if verb not in VERBS:
        raise ValueError(f"unknown doctest verb {verb!r}")
    keys = []
    for line in body:
        if not line.strip() or line.strip().startswith("#"):  # blank, or a comment
            continue
        name, sep, value = line.strip().partition(":")
        if not sep or name not in KEYS:
            raise ValueError(f"bad doctest line {line.strip()!r} (keys: {', '.join(sorted(KEYS))})")
        keys.append((name, value.strip()))
    if verb == "skip" and not argument.strip(" -—:"):
        raise ValueError("a skip marker must say why")
    return Marker(verb, argument.strip(), keys)


def parse_page(page: Path) -> list[Block]:
    """The fenced blocks of @p page, each with the doctest markers directly above it."""
    lines = page.read_text(encoding="utf-8").split("\n")
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        match = FENCE.match(lines[i])
        if not match:
            i += 1
            continue
        indent, fence = len(match["indent"]), match["fence"]
        start = i
        body = []
        i += 1
        while i < len(lines) and not lines[i].strip().startswith(fence):
            body.append(lines[i][indent:] if lines[i][:indent].strip() == "" else lines[i])
            i += 1
        i += 1
        block = Block(page, start + 1, match["lang"], "\n".join(body) + "\n")
        # Markers: HTML comments starting with "<!-- doctest", blank lines allowed between.
        j = start - 1
        found: list[Marker] = []
        while j >= 0:
            if not lines[j].strip():
                j -= 1
                continue
            if not lines[j].rstrip().endswith("-->"):
                break
            k = j
            while k >= 0 and "<!--" not in lines[k]:
                k -= 1
            if k < 0 or not lines[k].strip().startswith("<!-- doctest"):
                break
            try:
                found.insert(0, parse_marker(lines[k:j + 1]))
            except ValueError as error:
                found.insert(0, Marker("invalid", str(error), []))
            j = k - 1
        block.markers = found
        blocks.append(block)
    return blocks


# --------------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------------


def free_port() -> int:
    """A port nothing uses on any address: some blocks listen on every address (-b ::), and
    the many client sockets of other runs (127.x.y.z, in TIME_WAIT too) would then be in the
    way of a port that is only free on 127.0.0.1."""
    try:
        with socket.socket(socket.AF_INET6) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind(("::", 0))
            return sock.getsockname()[1]
    except OSError:  # no IPv6
        with socket.socket() as sock:
            sock.bind(("0.0.0.0", 0))
            return sock.getsockname()[1]


def kill_group(pgid: int, sig: int = signal.SIGTERM) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def group_alive(pgid: int) -> bool:
    """True while a live (not zombie) process of group @p pgid exists, from /proc."""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", encoding="ascii", errors="replace") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:  # state, ppid, pgrp
            return True
    return False


class Session:
    """The state one page's blocks share: the scratch directory, the port, a server, and the
    process groups of background processes the blocks left behind."""

    def __init__(self, scratch: Path, name: str):
        self.scratch = scratch
        self.name = name  # prefix of this page's files in .doctest/
        self.port = str(free_port())
        self.server: subprocess.Popen | None = None
        self.groups: list[int] = []
        self.variables: list[str] = []
        self.counter = 0

    def substitute(self, text: str) -> str:
        """The page's port becomes this run's; /tmp/ becomes a directory of the scratch copy,
        so that two runs never share a file."""
        text = re.sub(rf"\b{DOC_PORT}\b", self.port, text)
        return re.sub(r"(?<![\w/.])/tmp/", f"{self.scratch}/.tmp/", text)

    def _file(self, suffix: str) -> Path:
        self.counter += 1
        return self.scratch / ".doctest" / f"{self.name}.{self.counter:03d}{suffix}"

    # -- servers ---------------------------------------------------------------------------

    def start_server(self, command: str) -> str:
        """Starts @p command (one shell line, or a block) and waits for its listening line.
        Returns that line; raises RuntimeError when the server does not come up."""
        self.stop_all()
        for _ in range(3):
            script = self._file(".server.sh")
            script.write_text(self.substitute(command))
            log = self._file(".server.log")
            with open(log, "wb") as out:
                proc = subprocess.Popen(["bash", str(script)], cwd=self.scratch,
                                        stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            self.server = proc
            deadline = time.monotonic() + SERVER_READY
            while time.monotonic() < deadline:
                complete = log.read_text(errors="replace").split("\n")[:-1]
                for line in complete:
                    if LISTENING.search(line):
                        return line
                if proc.poll() is not None:
                    break
                time.sleep(0.02)
            output = log.read_text(errors="replace")
            self.stop_server()
            if "in use" in output:  # another program took the port: try another
                self.port = str(free_port())
                continue
            raise RuntimeError(f"server did not start: {command.strip()!r}; output {output[-600:]!r}")
        raise RuntimeError(f"no free port after three tries; last output {output[-300:]!r}")

    def stop_server(self) -> None:
        """SIGTERM to the server's process group (the shell and the server it started), then
        waits until every process of the group has gone: the shell dies at once, the server
        only once it has closed its listening socket. SIGKILL after SERVER_STOP seconds."""
        proc, self.server = self.server, None
        if proc is None:
            return
        kill_group(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + SERVER_STOP
        while group_alive(proc.pid) and time.monotonic() < deadline:
            proc.poll()  # reap the shell, so that only the server can keep the group alive
            time.sleep(0.02)
        if group_alive(proc.pid):
            kill_group(proc.pid, signal.SIGKILL)
        proc.wait(timeout=SERVER_STOP)

    def end_background(self) -> None:
        groups, self.groups = self.groups, []
        for pgid in groups:
            kill_group(pgid)

    def stop_all(self) -> None:
        self.end_background()
        self.stop_server()

    # -- blocks ----------------------------------------------------------------------------

    def run_block(self, text: str, timeout: float) -> tuple[int | None, str]:
        """Runs @p text with bash in its own process group; (exit status or None, output)."""
        script = self._file(".sh")
        script.write_text("".join(v + "\n" for v in self.variables) + self.substitute(text))
        log = self._file(".out")
        with open(log, "wb") as out:
            proc = subprocess.Popen(["bash", str(script)], cwd=self.scratch,
                                    stdin=subprocess.DEVNULL, stdout=out,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.groups.append(proc.pid)
        try:
            status: int | None = proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            kill_group(proc.pid, signal.SIGKILL)
            proc.wait()
            status = None
        for line in text.split("\n"):
            if ASSIGNMENT.match(line):
                self.variables.append(line)
        return status, log.read_text(errors="replace")


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def line_matches(pattern: str, line: str) -> bool:
    """Exact match after stripping both ends; "..." in @p pattern stands for any text."""
    parts = [re.escape(part) for part in pattern.strip().split("...")]
    return re.fullmatch(".*".join(parts), line.strip()) is not None


def parse_range(text: str) -> tuple[float, float]:
    """"LO..HI"; either end may be written {nproc}, {nproc+1}, ... (this machine's cores)."""
    def value(end: str) -> float:
        match = re.fullmatch(r"\{nproc(?:\+(\d+))?\}", end.strip())
        if match:
            return float((os.cpu_count() or 1) + int(match[1] or 0))
        return float(end)
    low, _, high = text.partition("..")
    return value(low), value(high)


def check_output(marker: Marker, session: Session, output: str) -> list[str]:
    """Problems with @p output against @p marker's expect, expect-not, real and number keys."""
    problems = []
    lines = output.split("\n")
    for pattern in marker.all("expect"):
        pattern = session.substitute(pattern)
        if not any(line_matches(pattern, line) for line in lines):
            problems.append(f"no line matches {pattern!r}")
    for pattern in marker.all("expect-not"):
        pattern = session.substitute(pattern)
        if any(line_matches(pattern, line) for line in lines):
            problems.append(f"a line matches {pattern!r}, which must not appear")
    for bounds in marker.all("real"):
        low, high = parse_range(bounds)
        times = [int(m[1] or 0) * 60 + float(m[2]) for m in map(REAL.match, lines) if m]
        if not times:
            problems.append("no `real` line (from bash's time)")
        for seconds in times:
            if not low <= seconds <= high:
                problems.append(f"real {seconds:.3f} s, outside {low:g}..{high:g} s")
    for spec in marker.all("number"):
        bounds, _, pattern = spec.partition(" ")
        low, high = parse_range(bounds)
        values = [float(m[1]) for m in re.finditer(pattern, output, re.MULTILINE)]
        if not values:
            problems.append(f"nothing matches /{pattern}/")
        for value in values:
            if not low <= value <= high:
                problems.append(f"/{pattern}/ gave {value:g}, outside {low:g}..{high:g}")
    return problems


def check_excerpt(excerpt: str, source: Path) -> list[str]:
    """Every non-blank line of @p excerpt is a line of @p source, in the same order, leading
    and trailing blanks aside (an excerpt may leave lines out, never change one)."""
    if not source.is_file():
        return [f"{source.relative_to(REPO)} does not exist"]
    lines = [line.strip() for line in source.read_text(encoding="utf-8").split("\n")]
    position = 0
    for wanted in (w.strip() for w in excerpt.split("\n") if w.strip()):
        while position < len(lines) and lines[position] != wanted:
            position += 1
        if position == len(lines):
            return [f"not in {source.relative_to(REPO)} (in this order): {wanted!r}"]
        position += 1
    return []


def check_in_order(expected: str, output: str) -> list[str]:
    """Every non-empty line of @p expected appears in @p output, in the same order."""
    lines = output.split("\n")
    position = 0
    for pattern in (p for p in expected.split("\n") if p.strip()):
        while position < len(lines) and not line_matches(pattern, lines[position]):
            position += 1
        if position == len(lines):
            return [f"output lacks (in order) {pattern.strip()!r}"]
        position += 1
    return []


# --------------------------------------------------------------------------------------------
# Driver
# --------------------------------------------------------------------------------------------


@dataclass
class Result:
    where: str
    what: str
    problems: list[str]
    output: str = ""


def collect_only(text: str) -> str:
    """@p text with every pytest command turned into a --collect-only run: pytest exits 5
    when a selection collects nothing, and set -e makes any such line fail the block."""
    return "set -e\n" + "\n".join(
        line.split("#")[0].rstrip() + " --collect-only -p no:cacheprovider"
        if "pytest" in line else line for line in text.split("\n"))


def run_marker(block: Block, marker: Marker, session: Session, last_output: str) -> Result:
    """Runs one marker of @p block (any verb but skip) and checks what it asks for."""
    what = marker.verb
    if marker.verb == "invalid":
        return Result(block.where, "marker", [marker.argument])
    if marker.verb == "excerpt":
        return Result(block.where, what, check_excerpt(block.text, REPO / marker.argument))
    if marker.verb == "output":
        problems = check_in_order(session.substitute(block.text), last_output)
        return Result(block.where, what, problems, last_output)
    if marker.verb in ("server", "servers"):
        commands = ([block.text] if marker.verb == "server"
                    else [line for line in block.text.split("\n") if line.strip()])
        problems: list[str] = []
        for command in commands:
            try:
                problems += check_output(marker, session, session.start_server(command))
            except RuntimeError as error:
                problems.append(str(error))
            if marker.verb == "servers":  # one after the other: each is stopped again
                session.stop_all()
        return Result(block.where, what, problems)
    # run, collect
    server = marker.get("server")
    if server:
        try:
            session.start_server(server)
        except RuntimeError as error:
            return Result(block.where, what, [str(error)])
    text = collect_only(block.text) if marker.verb == "collect" else block.text
    timeout = float(marker.get("timeout", str(DEFAULT_TIMEOUT)))
    status, output = session.run_block(text, timeout)
    problems = []
    wanted = marker.get("exit", "0")
    if status is None:
        problems.append(f"still running after {timeout:g} s")
    elif wanted != "any" and status != int(wanted):
        problems.append(f"exit status {status}, expected {wanted}")
    problems += check_output(marker, session, output)
    if marker.get("keep") is None:
        session.end_background()
    return Result(block.where, what, problems, output)


def report(result: Result, verbose: bool) -> None:
    if not (verbose or result.problems):
        return
    print(f"{'FAIL' if result.problems else 'ok  '} {result.where} {result.what}", flush=True)
    for problem in result.problems:
        print(f"     {problem}")
    if result.problems and result.output:
        for line in result.output.rstrip().split("\n")[-30:]:
            print(f"     | {line}")
    sys.stdout.flush()


def run_page(page: Path, scratch: Path, only_line: int | None, verbose: bool,
             results: list[Result], skipped: list[str]) -> None:
    """Runs the marked blocks of @p page in order (only the one at @p only_line, if given,
    after starting the server it would have had)."""
    session = Session(scratch, str(page.relative_to(REPO)).replace("/", "_"))
    last_output = ""
    pending_server: str | None = None  # with only_line: the server of the blocks passed over
    try:
        for block in parse_page(page):
            if not block.markers:
                if block.lang in SHELL_LANGS and only_line is None:
                    result = Result(block.where, "unmarked",
                                    ["a shell block without a doctest marker"])
                    results.append(result)
                    report(result, verbose)
                continue
            if only_line is not None and block.line != only_line:
                for marker in block.markers:
                    if marker.verb == "server":
                        pending_server = block.text
                    elif marker.get("server"):
                        pending_server = marker.get("server")
                continue
            if pending_server is not None:
                try:
                    session.start_server(pending_server)
                except RuntimeError as error:
                    print(f"doctest: {error}", file=sys.stderr)
                pending_server = None
            for marker in block.markers:
                if marker.verb == "skip":
                    skipped.append(f"{block.where}: {marker.argument.strip(' -—:')}")
                    continue
                lacking = [need for need in marker.all("needs")
                           if not NEEDS.get(need, lambda: False)()]
                if lacking:
                    skipped.append(f"{block.where}: needs {', '.join(lacking)}, which this "
                                   "machine lacks")
                    continue
                result = run_marker(block, marker, session, last_output)
                if marker.verb in ("run", "collect"):
                    last_output = result.output
                results.append(result)
                report(result, verbose)
    finally:
        session.stop_all()


def python_track() -> bool:
    """True in a tree of the Python track: its server is http_server.py, nothing is built."""
    return (REPO / "http_server.py").is_file() and not (REPO / "CMakeLists.txt").exists()


def tools_needed(pages: list[tuple[Path, int | None]]) -> list[str]:
    """The tools of TOOLS that the shell blocks of @p pages name, bash always."""
    text = "\n".join(block.text for page, _ in pages if page.is_file()
                     for block in parse_page(page) if block.lang in SHELL_LANGS)
    return ["bash"] + [tool for tool in TOOLS if re.search(rf"(?<![\w./-]){tool}\b", text)]


def make_scratch(bin_dir: Path | None) -> Path:
    """A copy of the repository's files (tracked and new, not ignored), with build/bin
    pointing at @p bin_dir (None: no build/bin, for the Python track)."""
    scratch = Path(tempfile.mkdtemp(prefix="lab-doctest-"))
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=REPO,
                                capture_output=True, check=True, timeout=30).stdout
        names = [n for n in listed.decode().split("\0") if n]
    except (OSError, subprocess.SubprocessError):
        names = [str(p.relative_to(REPO)) for p in REPO.rglob("*")
                 if p.is_file() and not any(part.startswith(("build", ".git")) for part in p.relative_to(REPO).parts)]
    for name in names:
        source = REPO / name
        if not source.is_file():
            continue
        target = scratch / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target, follow_symlinks=False)
    if bin_dir is not None:
        (scratch / "build").mkdir(exist_ok=True)
        (scratch / "build" / "bin").symlink_to(bin_dir)
    (scratch / ".doctest").mkdir()
    (scratch / ".tmp").mkdir()
    return scratch


def main() -> int:
    parser = argparse.ArgumentParser(prog="harness/guidetest", description=__doc__.split("\n\n")[0])
    parser.add_argument("pages", nargs="*", metavar="FILE[:LINE]",
                        help="pages to run (default: README.md, docs/*.md, ANSWERS.md); "
                             ":LINE runs only the command block whose fence is on that "
                             "line, after starting the server it would have had")
    parser.add_argument("--bin", default=str(REPO / "build" / "bin"),
                        help="directory of the built servers (default build/bin; not used "
                             "in a tree of the Python track)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every check")
    parser.add_argument("--keep", action="store_true", help="keep the scratch copy")
    args = parser.parse_args()

    bin_dir = None if python_track() else Path(args.bin).resolve()
    if bin_dir is not None:
        missing = [s for s in ("stage1_sequential", "stage2_threaded", "stage3_limited")
                   if not os.access(bin_dir / s, os.X_OK)]
        if missing:
            print(f"doctest: {', '.join(missing)} not built in {bin_dir} (--bin DIR)",
                  file=sys.stderr)
            return 2
    selected: list[tuple[Path, int | None]] = []
    for spec in args.pages or DEFAULT_PAGES:
        name, _, line = spec.partition(":")
        paths = sorted(REPO.glob(name)) if "*" in name else [(REPO / name)]
        selected += [(p.resolve(), int(line) if line else None) for p in paths]
    tools = [tool for tool in tools_needed(selected) if not shutil.which(tool)]
    if tools:
        packages = sorted({TOOLS.get(tool, tool) for tool in tools})
        print(f"doctest: the guide's commands need {', '.join(tools)} "
              f"(Debian packages {', '.join(packages)})", file=sys.stderr)
        return 2

    # CTest ends a test that runs too long with SIGTERM: stop the servers all the same.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(1))
    scratch = make_scratch(bin_dir)
    results: list[Result] = []
    skipped: list[str] = []
    try:
        for page, line in selected:
            if not args.pages and str(page.relative_to(REPO)) in NOT_YET_MARKED:
                skipped.append(f"{page.relative_to(REPO)}: whole page, "
                               f"{NOT_YET_MARKED[str(page.relative_to(REPO))]}")
                continue
            run_page(page, scratch, line, args.verbose, results, skipped)
    finally:
        if not args.keep:
            shutil.rmtree(scratch, ignore_errors=True)
        else:
            print(f"scratch copy kept in {scratch}")
    failed = [r for r in results if r.problems]
    if args.verbose:
        for reason in skipped:
            print(f"skip {reason}")
    print(f"{len(skipped)} blocks not run ({'listed above' if args.verbose else '-v lists them and why'})")
    print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
