"""The grader, run as ``/usr/bin/python3 harness/grader COMMAND [ARGS]`` from the kit's top
(``./lab grade``, ``./lab grade-all``, ``./lab package``, ``./lab similarity`` call it so).

  grade       grade one server against the rubric (grader/cli.py; grader/README.md)
  batch       build and grade submissions: a folder of them, or inside Gradescope (batch.py)
  similarity  rank pairs of submissions by shared code (similarity.py)

A command whose module is not in this copy (a student handout carries ``grade`` only) says so.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a folder, Python puts the folder itself first on sys.path: the package's parent
# (harness/) goes there instead, so that ``grader`` is imported as the package it is.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from subcommands import dispatch  # noqa: E402  (harness/subcommands.py)

#: command → (module, what it does)
COMMANDS = {
    "grade": ("cli", "grade one server against the rubric (./lab grade)"),
    "batch": ("batch", "build and grade submissions: a folder, one, or Gradescope "
                       "(./lab grade-all, ./lab package)"),
    "similarity": ("similarity", "rank pairs of submissions by shared code (./lab similarity)"),
}


def main(argv: list) -> int:
    return dispatch(HERE, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
