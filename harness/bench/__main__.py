"""The benchmarks, run as ``/usr/bin/python3 harness/bench COMMAND [ARGS]`` from the kit's top
(``./lab bench`` and ``./lab speedup`` call it so).

  compare   the stages against nginx, Apache and python -m http.server (compare.py)
  shaped    question 5: test cases 1 and 2 through a simulated network (shaped.py)
  timeline  request timelines of test cases 1 and 2 (timeline.py)
  shaper    the simulated network alone, as a proxy in front of a port (lib/shaper.py)

A command whose module is not in this copy (a Python handout carries ``shaped`` only) says so.
"""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a folder, Python puts the folder itself first on sys.path: the package's parent
# (harness/) goes there instead, so that ``bench`` is imported as the package it is.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from subcommands import dispatch  # noqa: E402  (harness/subcommands.py)

#: command → (module, what it does)
COMMANDS = {
    "compare": ("compare", "the stages against nginx, Apache and python -m http.server (./lab bench)"),
    "shaped": ("shaped", "question 5: test cases 1 and 2 through a simulated network (./lab speedup)"),
    "timeline": ("timeline", "request timelines of test cases 1 and 2 (docs/img/timeline-*.png)"),
    "shaper": ("lib.shaper", "the simulated network alone: a proxy in front of a port"),
}


def main(argv: list) -> int:
    return dispatch(HERE, COMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
