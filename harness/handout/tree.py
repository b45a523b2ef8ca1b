"""A generated tree, in memory (one Output per file) and then on disk as a git repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from grader import contract

from .markers import render
from .pages import answers_template, check_ids, conftest_shim, profile_maxima, visible_rubric
from .parts import (ANSWERS, CHECKS, CONFTEST, EXTENSION, PARTS, PYTHON_DIR, PYTHON_TARGETS,
                    README, RUBRIC, WORKFLOW, GenerationError, left_out, owner, placed)
from .readme import python_readme, student_readme
from .source import Source
from .workflow import classroom_workflow


@dataclass
class Output:
    """One file of the generated tree."""

    data: bytes
    mode: int
    symlink: bool = False
    text: str | None = None
    origin: str = ""  #: "copy", "rendered" or "generated"


def output_of(item: Source, kept: set[str]) -> Output:
    """Reference file @p item as it goes into a tree: rendered when it has solution blocks
    (those of the @p kept parts keep the reference's lines), else copied as it is."""
    if item.symlink:
        return Output(item.data, item.mode, symlink=True, origin="copy")
    if item.parsed is not None:
        text = render(item.parsed, kept)
        return Output(text.encode("utf-8"), item.mode, text=text, origin="rendered")
    return Output(item.data, item.mode, text=item.text, origin="copy")


def build_tree(files: dict[str, Source], kept: set[str], solution: bool,
               lang: str = "cpp") -> dict[str, Output]:
    """The generated tree, in memory: rel path → Output."""
    if lang == "python":
        return build_python_tree(files, kept, solution)
    tree: dict[str, Output] = {}
    for rel, item in files.items():
        part = owner(rel)
        if (left_out(rel) or (part is not None and part.name not in kept) or rel in (README, ANSWERS)
                or placed(rel, lang) is None):
            continue
        tree[rel] = output_of(item, kept)

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        tree[rel] = Output(text.encode("utf-8"), mode, text=text, origin="generated")

    if ANSWERS in files and files[ANSWERS].text is not None:
        reference = files[ANSWERS].text
        put(ANSWERS, reference if solution else answers_template(reference))
    if RUBRIC in tree and not solution:
        builtin = check_ids(tree[CHECKS].text or "") if CHECKS in tree else set()
        text, _ = visible_rubric(tree[RUBRIC].text or "", builtin)
        put(RUBRIC, text)
    absent = [p for p in PARTS.values()
              if p.kind == EXTENSION and p.name not in kept and (p.binaries or p.test_words)]
    if CONFTEST in tree and absent:
        conftest = tree[CONFTEST].text or ""
        if re.search(r"^def pytest_collection_modifyitems\b", conftest, re.M):
            raise GenerationError(
                f"{CONFTEST}:1: it defines pytest_collection_modifyitems, which the handout's "
                f"shim for left-out parts would replace: merge the two in conftest_shim() of "
                f"harness/handout/pages.py")
        put(CONFTEST, conftest.rstrip("\n") + "\n" + conftest_shim(absent), tree[CONFTEST].mode)
    maxima = profile_maxima(tree[RUBRIC].text or "") if RUBRIC in tree else {}
    if RUBRIC in tree:
        targets = [(t.binary, t.profile, t.command) for t in contract.TARGETS]
        put(WORKFLOW, classroom_workflow(tree[RUBRIC].text or "", targets, "./lab build"))
    put(README, student_readme(tree, kept, solution, maxima))
    return tree


def build_python_tree(files: dict[str, Source], kept: set[str],
                      solution: bool) -> dict[str, Output]:
    """The Python track's tree: PYTHON_DIR's files at its top, the shared files beside them."""
    tree: dict[str, Output] = {}
    for rel, item in files.items():
        dest = placed(rel, "python")
        part = owner(rel)
        if dest is None or left_out(rel) or (part is not None and part.name not in kept):
            continue
        tree[dest] = output_of(item, kept)
    for needed in ("http_server.py", "lab", RUBRIC):
        if needed not in tree:
            raise GenerationError(f"{PYTHON_DIR}: the Python track needs {needed}")

    def put(rel: str, text: str, mode: int = 0o644) -> None:
        tree[rel] = Output(text.encode("utf-8"), mode, text=text, origin="generated")

    if ANSWERS in files and files[ANSWERS].text is not None:
        put(ANSWERS, answers_template(files[ANSWERS].text))
    rubric = tree[RUBRIC].text or ""
    if not solution:
        builtin = check_ids(tree[CHECKS].text or "") if CHECKS in tree else set()
        rubric, _ = visible_rubric(rubric, builtin)
        put(RUBRIC, rubric)
    put(".gitignore", "__pycache__/\n*.pyc\n/build/\n/grade-results/\n")
    put(WORKFLOW, classroom_workflow(rubric, list(PYTHON_TARGETS), None))
    put(README, python_readme(tree, solution, profile_maxima(rubric)))
    return tree


def write_tree(dest: Path, tree: dict[str, Output]) -> None:
    for rel in sorted(tree):
        out = tree[rel]
        path = dest / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if out.symlink:
            os.symlink(out.data.decode(), path)
            continue
        path.write_bytes(out.data)
        os.chmod(path, out.mode)


def git_commit(dest: Path, message: str) -> str:
    """Makes @p dest a git repository with one commit by "lab handout"; returns its id.

    The user's git configuration is ignored (no signing, no hooks, no template), and nothing
    touches the network."""
    env = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1",
           "GIT_AUTHOR_NAME": "lab handout", "GIT_AUTHOR_EMAIL": "lab-handout@localhost",
           "GIT_COMMITTER_NAME": "lab handout", "GIT_COMMITTER_EMAIL": "lab-handout@localhost",
           "GIT_TERMINAL_PROMPT": "0"}

    def git(*args: str) -> str:
        run = subprocess.run(["git", "-C", str(dest), "-c", "core.hooksPath=/dev/null",
                              "-c", "commit.gpgsign=false", *args],
                             env=env, capture_output=True, text=True)
        if run.returncode != 0:
            raise GenerationError(f"{dest}: git {' '.join(args)} failed: {run.stderr.strip()}")
        return run.stdout.strip()

    git("init", "-q", "-b", "main")
    git("add", "-A")
    git("commit", "-q", "-m", message)
    return git("rev-parse", "--short", "HEAD")


def check_destination(dest: Path, source: Path) -> None:
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise GenerationError(f"{dest}: exists and is not an empty directory; remove it or "
                              f"name another")
    inside = dest.resolve() == source or source in dest.resolve().parents
    if inside:
        ignored = shutil.which("git") and subprocess.run(
            ["git", "-C", str(source), "check-ignore", "-q", str(dest.resolve())]).returncode == 0
        if not ignored:
            raise GenerationError(f"{dest}: inside the reference, where the next handout would "
                                  f"pick it up; write it outside (or under build/)")
