"""Cuts a student handout, or the matching solution tree, out of the reference kit.

    ./lab handout DIR                      the student repository: stubs instead of solutions
    ./lab handout --solution DIR           the same tree with the solutions kept
    ./lab handout --with stage4 DIR        ... plus an extension (repeatable; see --help)
    ./lab handout --check                  only check the solution markers

The reference stays the one source of truth: every piece of code a student is to write sits
in a *solution block*, written as comments in its file's own syntax (``//`` in C++, ``#`` in
CMake, Python and shell, ``<!-- ... -->`` in Markdown). A block is three marker lines around
two sections: the reference's code, then, optionally, the stub that replaces it, each line of
the stub commented out so that the reference builds exactly as before. With <comment>
standing for the file's comment marker:

    <comment> BEGIN SOLUTION stage3/try-acquire
    ...the reference's lines...
    <comment> STUB
    <comment> ...the stub's lines, each behind one comment marker...
    <comment> END SOLUTION

A block is named PART/WHAT. PART decides when the reference's lines are kept (PARTS below):
the exercises (stage2, stage3) and the autograder's secrets (hidden) only in a --solution
tree; the extensions (stage4, reclaim-idle) only when --with names them, in either tree;
the instructor's own tooling (instructor) never. Everywhere else the stub takes the block's
place, uncommented. Blocks do not nest, and a name is used once per file. A malformed marker
stops the generation with FILE:LINE: message and exit status 1, before anything is written.

Whole files belong to a part too (Part.paths): stage 4's directory goes with stage4, the
hidden checks with hidden, and so on. Three files are written rather than copied: README.md
(the student README), ANSWERS.md (the questions with empty answers; the reference's answers
only in a --solution tree) and, in a handout, harness/grader/rubric.toml without its hidden
entries; harness/tests/conftest.py gains a few lines that keep the harness off the parts left out.

Before it writes anything, the generator checks that no solution text leaks: a line of a
replaced block that appears nowhere else in the reference must not appear in the output
(docs quoting the code are the usual culprit). Then it writes DIR and makes it a git
repository with one commit. Standard library only; Python 3.11 (tomllib).
"""

from .cli import main
from .markers import CPP, HASH, HTML, Block, MarkerError, Parsed, Syntax, parse, render
from .pages import answers_template, visible_rubric
from .parts import PARTS, GenerationError, Part
from .source import Source, load
from .tree import Output, build_tree

#: What the tests (tests/test_handout.py) and other callers use, from the modules:
#: parts.py      which parts there are, where their files go (PARTS, PYTHON_SHARED, ...)
#: markers.py    comment syntaxes, the markers, parse() and render()
#: source.py     the reference's files, loaded
#: pages.py      ANSWERS.md, the rubric and the conftest shim as written into a tree
#: readme.py     the student README of each track
#: workflow.py   the Classroom workflow
#: tree.py       a tree in memory, then on disk
#: leaks.py      solution text that must not leak, dead links
#: cli.py        the command line
__all__ = ["CPP", "HASH", "HTML", "Block", "GenerationError", "MarkerError", "Output", "PARTS",
           "Parsed", "Part", "Source", "Syntax", "answers_template", "build_tree", "load", "main",
           "parse", "render", "visible_rubric"]
