"""The COMMAND dispatcher of the tools that have several (harness/grader, harness/bench).

A tool's ``__main__.py`` puts harness/ on sys.path, then hands its table to dispatch(): each
command names a module of the package with a ``main(argv) -> int``. A command whose module is
not in this copy (a handout carries only its part of a tool) is reported as such, exit 2.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def dispatch(package: Path, commands: dict[str, tuple[str, str]], argv: list[str]) -> int:
    """Runs ``COMMAND ARGS`` of the tool in folder @p package; commands: name → (module, summary)."""
    tool = f"harness/{package.name}"
    present = {name: entry for name, entry in commands.items()
               if (package / (entry[0].replace(".", "/") + ".py")).is_file()}
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, present), default=0) + 2
        print(f"usage: {tool} COMMAND [ARGS]  (COMMAND --help for its options)\n\ncommands:")
        for name, (_, summary) in present.items():
            print(f"  {name:<{width}}{summary}")
        return 0 if argv else 2
    command, *rest = argv
    if command not in present:
        print(f"{tool}: {command!r} is not a command of this copy ({', '.join(present)})",
              file=sys.stderr)
        return 2
    return importlib.import_module(f"{package.name}.{present[command][0]}").main(rest)
