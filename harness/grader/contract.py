"""The submission contract: how a student's repository is built, and which of its programs
are graded with which profile and command line. The handout's README states it to students
(harness/handout reads it from here); the autograder and ``./lab grade-all`` apply it.

Each graded program (stage) is built and graded on its own: a stage that does not build
scores 0 and the others keep their points."""

from __future__ import annotations

import os
import shlex
import stat
import string
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence

from .rubric import RubricError, toml_loads


class Target(NamedTuple):
    """One graded program of a submission."""

    binary: str  #: the CMake target, built to build/bin/<binary>
    profile: str  #: the grader profile it must meet
    command: str  #: the grader's --server-cmd, relative to the submission's top directory


#: The programs graded, in order (stage 1 is given, so it is not graded).
TARGETS = (
    Target("stage2_threaded", "threaded", "build/bin/stage2_threaded -p {port} -r {root}"),
    Target("stage3_limited", "limited", "build/bin/stage3_limited -p {port} -r {root} "
                                        "-maxclient {maxclient} -maxtotal {maxtotal}"),
)


class ContractError(ValueError):
    """The submission does not follow the contract (the student's to fix, shown to them)."""


class Stage(NamedTuple):
    """How one target of a given submission is built and run."""

    target: Target
    build: List[List[str]]  #: commands run in the submission's top folder, in order
    command: str  #: the grader's --server-cmd (absolute)
    product: Optional[str]  #: file the build must leave, relative to the top folder
    unbuildable: str = ""  #: why this stage cannot be built at all ("" if it can)


class Plan(NamedTuple):
    """How a submission is built and run, stage by stage."""

    layout: str  #: what the submission was recognised as, in words
    setup: List[List[str]]  #: run once before any stage is built; failing fails every stage
    stages: List[Stage]


def quoted(path: Path) -> str:
    """@p path for a --server-cmd: shell-quoted, braces doubled (not placeholders)."""
    return shlex.quote(str(path)).replace("{", "{{").replace("}", "}}")


#: The manifest a submission of any other layout carries at its top (harness/grader/README.md).
MANIFEST = "lab-submission.toml"
#: Largest manifest read (it is a few lines).
MANIFEST_BYTES = 64 << 10
#: The earlier project's one-file Python server, run with no build and no wrapper.
PYTHON_SERVER = "http_server.py"
#: The limits' options of the course's command line, added for the limited profile.
LIMIT_OPTIONS = "-maxclient {maxclient} -maxtotal {maxtotal}"
#: Placeholders a manifest's run command may use: the grade command's, and {src} (the submission's folder).
RUN_PLACEHOLDERS = ("port", "root", "maxclient", "maxtotal", "src")


def plan(source: Path, targets: Sequence[Target], jobs: int) -> Plan:
    """The plan for the submission in @p source, by what its top folder holds: a manifest
    (any language), else CMakeLists.txt (C++), else http_server.py (the earlier project's
    Python layout). Raises ContractError when it holds none, or a bad manifest."""
    if os.path.lexists(source / MANIFEST):
        return manifest_plan(source, read_manifest(source / MANIFEST), targets)
    if (source / "CMakeLists.txt").is_file():
        return cmake_plan(source, targets, jobs)
    if (source / PYTHON_SERVER).is_file():
        return python_plan(source, targets)
    raise ContractError(f"found none of {MANIFEST}, CMakeLists.txt or {PYTHON_SERVER} at the "
                        f"submission's top folder (harness/grader/README.md, Submissions)")


def python_plan(source: Path, targets: Sequence[Target]) -> Plan:
    """The earlier project's layout: ``python3 http_server.py -p PORT`` (plus the limits for
    the limited profile), in a copy of the document root (the grade command's cwd), nothing to build."""
    stages = []
    for t in targets:
        command = f"python3 {quoted(source / PYTHON_SERVER)} -p {{port}}"
        if t.profile == "limited":
            command += f" {LIMIT_OPTIONS}"
        stages.append(Stage(t, [], command, None))
    return Plan(f"{PYTHON_SERVER} (Python, the earlier project's layout)", [], stages)


def read_manifest(path: Path) -> dict:
    """The manifest at @p path, parsed: a regular file (never followed through a link, never
    a FIFO that would hang the grader), at most MANIFEST_BYTES, valid TOML."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as error:
        raise ContractError(f"{MANIFEST}: cannot open it ({error.strerror}; a link is refused)") from None
    with os.fdopen(fd, "rb") as source:
        if not stat.S_ISREG(os.fstat(source.fileno()).st_mode):
            raise ContractError(f"{MANIFEST}: not a regular file")
        data = source.read(MANIFEST_BYTES + 1)
    if len(data) > MANIFEST_BYTES:
        raise ContractError(f"{MANIFEST}: larger than {MANIFEST_BYTES >> 10} KiB")
    try:
        return toml_loads(data.decode("utf-8"), path)
    except UnicodeDecodeError:
        raise ContractError(f"{MANIFEST}: not UTF-8") from None
    except RubricError as error:
        raise ContractError(f"{MANIFEST}: the grader cannot read TOML here: {error}") from None
    except ValueError as error:  # tomllib's and tomli's TOMLDecodeError
        raise ContractError(f"{MANIFEST}: not valid TOML: {error}") from None


def commands_of(value: object, where: str) -> List[List[str]]:
    """A manifest's build value (a shell command, or a list of them) as argv lists."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v.strip() for v in value):
        raise ContractError(f"{MANIFEST}: {where} must be a shell command or a list of them")
    return [["/bin/sh", "-c", command] for command in value]


def run_command(run: object, source: Path, where: str) -> str:
    """A manifest's run value as the grade command's --server-cmd: started in the submission's top
    folder unless it changes directory itself; {src} stands for that folder."""
    if not isinstance(run, str) or not run.strip():
        raise ContractError(f"{MANIFEST}: {where}.run must be a shell command")
    parts = []
    try:
        for text, field, spec, conversion in string.Formatter().parse(run):
            parts.append(text.replace("{", "{{").replace("}", "}}"))
            if field is None:
                continue
            if spec or conversion or field not in RUN_PLACEHOLDERS:
                raise ContractError(f"{MANIFEST}: {where}.run: unknown placeholder {{{field}}} "
                                    f"(known: {', '.join('{' + n + '}' for n in RUN_PLACEHOLDERS)}; "
                                    f"{{{{ and }}}} for literal braces)")
            parts.append(quoted(source) if field == "src" else f"{{{field}}}")
    except ValueError as error:
        raise ContractError(f"{MANIFEST}: {where}.run: {error}") from None
    return f"cd {quoted(source)} && {''.join(parts)}"


def manifest_plan(source: Path, manifest: dict, targets: Sequence[Target]) -> Plan:
    """The plan a manifest states: an optional top-level ``build`` run once, then per stage
    (a table named after it) an optional ``build`` and a ``run``."""
    names = {t.binary for t in targets}
    unknown = sorted(set(manifest) - names - {"build"})
    if unknown:
        raise ContractError(f"{MANIFEST}: unknown key(s) {', '.join(unknown)} (expected build "
                            f"and the tables {', '.join('[' + t.binary + ']' for t in targets)})")
    setup = commands_of(manifest["build"], "build") if "build" in manifest else []
    stages = []
    for t in targets:
        table = manifest.get(t.binary)
        if table is None:
            stages.append(Stage(t, [], "", None, f"{MANIFEST} has no [{t.binary}]"))
            continue
        if not isinstance(table, dict):
            raise ContractError(f"{MANIFEST}: {t.binary} must be a table ([{t.binary}])")
        extra = sorted(set(table) - {"build", "run"})
        if extra:
            raise ContractError(f"{MANIFEST}: [{t.binary}] has unknown key(s) "
                                f"{', '.join(extra)} (expected build, run)")
        build = commands_of(table["build"], f"[{t.binary}] build") if "build" in table else []
        stages.append(Stage(t, build, run_command(table.get("run"), source, f"[{t.binary}]"), None))
    return Plan(f"{MANIFEST}", setup, stages)


def cmake_plan(source: Path, targets: Sequence[Target], jobs: int) -> Plan:
    """CMake's default preset (Release, in build/), configured once, then each target built on
    its own, without the unit tests (the grader does not run them, and skipping them needs
    neither GoogleTest nor the time)."""
    setup = [["cmake", "--preset", "default", "-DLAB_BUILD_TESTS=OFF"]]
    stages = [Stage(t, [["cmake", "--build", "--preset", "default", "-j", str(jobs),
                         "--target", t.binary]],
                    f"{quoted(source)}/{t.command}", f"build/bin/{t.binary}")
              for t in targets]
    return Plan("CMake (C++)", setup, stages)

