"""The submission contract: how a student's repository is built, and which of its programs
are graded with which profile and command line. The handout's README states it to students
(harness/handout.py reads it from here); the autograder and ``./lab grade-all`` apply it."""

from __future__ import annotations

from typing import List, NamedTuple


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


def build_commands(binaries: List[str], jobs: int) -> List[List[str]]:
    """The commands that build @p binaries in a submission's top directory: CMake's default
    preset (Release, in build/), without the unit tests (the grader does not run them, and
    skipping them needs neither GoogleTest nor the time)."""
    return [
        ["cmake", "--preset", "default", "-DLAB_BUILD_TESTS=OFF"],
        ["cmake", "--build", "--preset", "default", "-j", str(jobs), "--target", *binaries],
    ]
