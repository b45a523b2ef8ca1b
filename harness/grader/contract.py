"""The submission contract: how a student's repository is built, and which of its programs
are graded with which profile and command line. The handout's README states it to students
(harness/handout.py reads it from here); the autograder and ``./lab grade-all`` apply it.

Each graded program (stage) is built and graded on its own: a stage that does not build
scores 0 and the others keep their points."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import List, NamedTuple, Optional, Sequence


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


def plan(source: Path, targets: Sequence[Target], jobs: int) -> Plan:
    """The plan for the submission in @p source (CMake, C++: CMakeLists.txt at the top)."""
    if (source / "CMakeLists.txt").is_file():
        return cmake_plan(source, targets, jobs)
    raise ContractError("found no CMakeLists.txt at the submission's top folder")


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

