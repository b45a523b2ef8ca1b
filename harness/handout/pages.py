"""Files the generator writes instead of copying, besides the README: the questions without
their answers, the rubric without its hidden checks, and the tests' shim for left-out parts."""

from __future__ import annotations

import re
import tomllib

from .parts import ANSWERS, CHECKS, RUBRIC, GenerationError, Part


def fenced_lines(text: str):
    """Yields (line number, line, inside a fenced code block) for Markdown @p text."""
    fence = ""
    for number, line in enumerate(text.split("\n"), 1):
        opening = re.match(r"^\s{0,3}(`{3,}|~{3,})", line)
        if opening and (not fence or opening[1].startswith(fence)):
            fence = "" if fence else opening[1]
            yield number, line, True
            continue
        yield number, line, bool(fence)


def answers_template(text: str) -> str:
    """The reference's ANSWERS.md reduced to its title and questions, with room to answer."""
    title = "# Answers to the course questions"
    questions = []
    for _, line, in_code in fenced_lines(text):
        if in_code:
            continue
        if line.startswith("# ") and not questions:
            title = line.rstrip()
        elif re.match(r"^##\s+\d+\.\s", line):
            questions.append(line.rstrip())
    if not questions:
        raise GenerationError(f"{ANSWERS}:1: no question headings (## 1. ...) found")
    out = [
        title, "",
        "Answer each question below under its heading, about the code in this repository as you",
        "have completed it. Say what your code does and why, give the command or the test that",
        "shows it, and quote the figures you measured (with the machine they come from). The guide",
        "in `docs/` (start at [docs/index.md](docs/index.md)) explains each stage.",
    ]
    for question in questions:
        out += ["", "---", "", question, "", "Your answer:", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def check_ids(checks_text: str) -> set[str]:
    """The ids of the checks registered in the grader's checks.py."""
    return set(re.findall(r"@check\(\s*[\"']([^\"']+)[\"']", checks_text))


def visible_rubric(text: str, builtin: set[str]) -> tuple[str, list[str]]:
    """The rubric without the entries of hidden checks; returns it and the ids dropped.

    An entry is hidden when its visibility is anything but "visible", or when it gives none and
    names no built-in check (a --hidden-dir check is hidden by default). A built-in check cannot
    be hidden this way: its code would still ship in checks.py.
    """
    try:
        checks = tomllib.loads(text).get("checks", {})
    except tomllib.TOMLDecodeError as error:
        raise GenerationError(f"{RUBRIC}:1: {error}") from error
    hidden = [cid for cid, entry in checks.items()
              if entry.get("visibility", "visible" if cid in builtin else "hidden") != "visible"]
    lines = text.split("\n")
    header = re.compile(r"^\s*\[\s*checks\s*\.\s*\"?([^\]\"]+)\"?\s*\]\s*(#.*)?$")
    keep: list[str] = []
    dropping = False
    for number, line in enumerate(lines, 1):
        table = header.match(line)
        if table or re.match(r"^\s*\[", line):
            dropping = bool(table) and table[1].strip() in hidden
            if dropping and table[1].strip() in builtin:
                raise GenerationError(
                    f"{RUBRIC}:{number}: check {table[1].strip()!r} is not visible, but it is "
                    f"built into {CHECKS}, which every handout ships: move it to a hidden-check "
                    f"directory (harness/hidden/) or put its code in a block named "
                    f"hidden/{table[1].strip()}")
        if not dropping:
            keep.append(line)
    result = re.sub(r"\n{3,}", "\n\n", "\n".join(keep))
    left = tomllib.loads(result).get("checks", {})
    assert not set(left) & set(hidden), "hidden rubric entries survived"
    return result, hidden


def profile_maxima(rubric_text: str) -> dict[str, float]:
    """Points available per profile in a rubric (entries that give their points)."""
    totals: dict[str, float] = {}
    for entry in tomllib.loads(rubric_text).get("checks", {}).values():
        for profile in entry.get("profiles", []):
            totals[profile] = totals.get(profile, 0) + entry.get("points", 0)
    return totals


def conftest_shim(absent: list[Part]) -> str:
    """Text appended to the handout's harness/tests/conftest.py when parts are left out: their
    binaries leave the stage lists, and tests named after them are deselected (they would only
    fail for a missing binary)."""
    binaries = sorted({b for part in absent for b in part.binaries})
    words = sorted({w for part in absent for w in part.test_words})
    names = ", ".join(part.name for part in absent)
    return f'''

# ---- Added by ./lab handout: this handout leaves out {names}. ----
# Their binaries are never built, so they leave the stage lists above, and tests named after
# them are deselected instead of failing for a missing binary.
_HANDOUT_ABSENT_BINARIES = {binaries!r}
_HANDOUT_ABSENT_WORDS = {words!r}

for _name in ("STAGES", "THREADED_STAGES", "LIMITED_STAGES"):
    _stages = globals().get(_name)
    if isinstance(_stages, list):
        _stages[:] = [stage for stage in _stages if stage not in _HANDOUT_ABSENT_BINARIES]


def pytest_collection_modifyitems(config, items):
    """Deselects the tests of the parts this handout leaves out."""
    def absent(item):
        params = getattr(getattr(item, "callspec", None), "params", {{}})
        return (any(word in item.nodeid for word in _HANDOUT_ABSENT_WORDS)
                or any(value in _HANDOUT_ABSENT_BINARIES for value in params.values()
                       if isinstance(value, str)))

    dropped = [item for item in items if absent(item)]
    if dropped:
        items[:] = [item for item in items if not absent(item)]
        config.hook.pytest_deselected(items=dropped)
'''
