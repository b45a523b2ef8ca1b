"""The handout generator, run as ``/usr/bin/python3 harness/handout [OPTIONS] DIR`` from the
kit's top (``./lab handout`` calls it so); ``--help`` for the options."""

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a folder, Python puts the folder itself first on sys.path: the package's parent
# (harness/) goes there instead, so that ``handout`` and ``grader`` are imported as packages.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

from handout import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
