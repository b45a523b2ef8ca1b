#!/usr/bin/env python3
"""Grades an HTTP server against the lab kit's rubric. ``grade.py --help`` for the options;
harness/README-grading.md for the details."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from grader.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
