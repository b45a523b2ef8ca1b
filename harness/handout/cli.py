"""The command line of ``./lab handout`` (``/usr/bin/python3 harness/handout``)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from .leaks import dead_links, find_leaks
from .parts import EXTENSION, PARTS, REPO, GenerationError, describe, kept_parts
from .source import load, reference_version
from .tree import build_tree, check_destination, git_commit, write_tree


def plural(count: int, word: str) -> str:
    return f"{count} {word}{'' if count == 1 else 's'}"


def display(source: Path, rel: str) -> str:
    """@p rel as a path from the current directory when the source is beneath it."""
    absolute = source / rel
    shown = os.path.relpath(absolute)
    return absolute.as_posix() if shown.startswith("..") else shown


def parse_args(argv: list[str]) -> argparse.Namespace:
    extensions = [p for p in PARTS.values() if p.kind == EXTENSION]
    parser = argparse.ArgumentParser(
        prog="./lab handout",
        description="Write a student handout of the kit to DIR: the reference with each "
                    "solution block replaced by its stub, the questions without answers, the "
                    "visible checks only, a student README, as a git repository with one "
                    "commit. See docs/instructor.md.",
        epilog="parts:\n" + "\n".join(f"  {p.name:<13} {p.kind:<11} {p.summary}"
                                      for p in PARTS.values())
               + "\n\nexit status: 0 done, 1 malformed markers, leaked solution text or an "
                 "unusable DIR (FILE:LINE: message on stderr), 2 usage errors",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("dest", nargs="?", metavar="DIR", type=Path,
                        help="where to write the tree (must not exist, or be empty)")
    parser.add_argument("--solution", action="store_true",
                        help="keep the solutions: the instructor's private tree, which the "
                             "autograder uses (answers and hidden checks included)")
    parser.add_argument("--with", dest="extensions", action="append", default=[],
                        metavar="PART", choices=[p.name for p in extensions],
                        help="include an extension, whole ("
                             + " or ".join(p.name for p in extensions)
                             + "); repeatable; extensions are left out by default")
    parser.add_argument("--check", action="store_true",
                        help="only check the markers of the reference and list its blocks")
    parser.add_argument("--lang", choices=("cpp", "python"), default="cpp",
                        help="the track: cpp (default) the C++ stages; python the Python "
                             "starter (http_server.py, the sequential server given, the "
                             "thread and the limits to write), graded with the same checks")
    parser.add_argument("--no-git", action="store_true", help="do not make DIR a git repository")
    parser.add_argument("--source", type=Path, default=REPO, metavar="DIR",
                        help="the reference to cut from (default: this kit)")
    args = parser.parse_args(argv)
    if not args.check and args.dest is None:
        parser.error("DIR is required (or --check)")
    if args.lang == "python" and args.extensions:
        parser.error("--with adds parts of the C++ track; the Python track has none")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    source = args.source.resolve()
    files, errors = load(source)
    for error in errors:
        print(f"{display(source, error.path)}:{error.line}: {error.message}", file=sys.stderr)
    if errors:
        print(f"lab handout: {len(errors)} marker error(s); nothing written", file=sys.stderr)
        return 1
    blocks = [b for item in files.values() if item.parsed for b in item.parsed.blocks]
    if args.check:
        for block in blocks:
            stub = f"stub of {plural(len(block.stub), 'line')}" if block.stub else "no stub"
            print(f"{display(source, block.path)}:{block.line}: {block.name} "
                  f"({plural(len(block.solution), 'line')}, {stub})")
        print(f"lab handout: {len(blocks)} blocks, markers well-formed")
        return 0
    kept = kept_parts(args.solution, args.extensions, args.lang)
    try:
        check_destination(args.dest, source)
        tree = build_tree(files, kept, args.solution, args.lang)
        leaks = find_leaks(files, kept, tree, args.lang)
        if leaks:
            for leak in leaks:
                print(leak, file=sys.stderr)
            raise GenerationError(f"{len(leaks)} line(s) of solution text would leak; mark the "
                                  f"text that holds them, or reword it")
        for note in dead_links({rel: out.text for rel, out in tree.items()}):
            print(f"lab handout: note: {note}", file=sys.stderr)
        args.dest.mkdir(parents=True, exist_ok=True)
        write_tree(args.dest, tree)
        kind = "solution tree" if args.solution else "student handout"
        if args.lang == "python":
            kind = "Python " + kind
        commit = ""
        if not args.no_git:
            commit = git_commit(args.dest, (
                f"Concurrent HTTP server lab: {kind}\n\n"
                f"Cut with ./lab handout{' --solution' if args.solution else ''}"
                + (" --lang python" if args.lang == "python" else "")
                + "".join(f" --with {name}" for name in args.extensions)
                + f" from the reference at {reference_version(source)}.\n"
                f"Parts: {describe(kept, args.solution)}.\n"))
    except GenerationError as error:
        print(f"lab handout: {error}", file=sys.stderr)
        return 1
    replaced = sum(1 for b in blocks if b.part not in kept)
    print(f"lab handout: wrote the {kind} to {args.dest} ({describe(kept, args.solution)}): "
          f"{len(tree)} files, {replaced} of {len(blocks)} blocks replaced by their stubs"
          + (f", git commit {commit}" if commit else ""))
    return 0
