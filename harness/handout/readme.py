"""The student README of a generated tree, for the C++ track and the Python track: what to
implement (with the list of TODOs found in the tree), the contract, checking, submitting."""

from __future__ import annotations

import re
import textwrap
from typing import TYPE_CHECKING

from .markers import CPP, HASH, syntax_for
from .parts import (EXTENSION, PARTS, PYTHON_TARGETS, SOLUTION, STAGE_COMMANDS, WORKFLOW,
                    WORKFLOWS)

if TYPE_CHECKING:
    from .tree import Output


CONTROL_WORDS = {"if", "for", "while", "switch", "catch", "return", "sizeof", "try"}
SIGNATURE = re.compile(
    r"(?<![\w.>])(?P<name>(?:[A-Za-z_~][\w~]*::)*(?:operator\s*[^\s(]+|[A-Za-z_~][\w~]*))\s*\(")


def enclosing_function(lines: list[str], index: int) -> str:
    """The name of the function around line @p index (0-based), found by walking out through
    the scopes that enclose it (each opened by a line ending in "{" or ":" and indented less
    than what it holds); "" when none is found."""
    indent = len(lines[index]) - len(lines[index].lstrip())
    above = index - 1
    while above >= 0:
        code = lines[above].strip()
        if not code.endswith(("{", ":")) or code.startswith(("//", "#", "*", "/*")):
            above -= 1
            continue
        # A signature can span lines: take earlier ones until its parentheses balance.
        text, first = code, above
        while text.count("(") < text.count(")") and first > 0:
            first -= 1
            text = lines[first].strip() + " " + text
        depth = len(lines[first]) - len(lines[first].lstrip())
        if depth < indent:
            indent = depth
            name = SIGNATURE.search(text)
            if name and name["name"] not in CONTROL_WORDS:
                return name["name"]
        above = first - 1
    return ""


def todo_list(tree: dict[str, "Output"]) -> list[str]:
    """Markdown list items, one per TODO(student) comment of the tree: where, in which
    function, and the comment's first sentence."""
    items = []
    for rel in sorted(tree):
        out = tree[rel]
        syntax = syntax_for(rel, out.text) if out.text is not None else None
        if syntax not in (CPP, HASH):
            continue
        comment = re.compile(rf"^\s*{re.escape(syntax.open)}\s?(?P<text>.*)$")
        lines = out.text.split("\n")
        for index, line in enumerate(lines):
            found = comment.match(line)
            if not found or not found["text"].startswith("TODO(student):"):
                continue
            words = [found["text"][len("TODO(student):"):].strip()]
            for following in lines[index + 1:]:
                more = comment.match(following)
                if not more or not more["text"].strip() or "TODO(" in more["text"]:
                    break
                words.append(more["text"].strip())
            text = re.sub(r"@p (\w+)", r"`\1`", " ".join(words))
            summary = re.split(r"(?<=\.)\s", text, maxsplit=1)[0].rstrip(".")
            name = enclosing_function(lines, index)
            where = f" in `{name}()`" if name else ""
            items += textwrap.wrap(f"- `{rel}:{index + 1}`{where}: {summary}.", 96,
                                   subsequent_indent="  ", break_long_words=False,
                                   break_on_hyphens=False)
    return items


def wrapped(text: str, indent: str = "") -> list[str]:
    """@p text in lines up to 96 characters (later ones indented by @p indent), never breaking
    a `code span`, so that a command in one reads and copies whole."""
    text = re.sub(r"`[^`]*`", lambda m: m[0].replace(" ", "\0"), text)
    return [line.replace("\0", " ") for line in textwrap.wrap(
        text, 96, subsequent_indent=indent, break_long_words=False, break_on_hyphens=False)]


def paragraph(text: str) -> list[str]:
    """@p text wrapped as a Markdown paragraph of lines up to 96 characters."""
    return wrapped(text)


def bullets(items: list[str]) -> list[str]:
    """@p items as a Markdown list, each item wrapped to lines up to 96 characters."""
    return [line for item in items for line in wrapped("- " + item, "  ")]


def question5(servers: str, build: str) -> list[str]:
    """The README section on question 5: the one command, and what to hand in."""
    return [
        "## Question 5: what to hand in", "",
    ] + paragraph(
        "Question 5 of `ANSWERS.md` asks for the times and speedups of the two concurrent-fetch "
        "test cases: test case 1, many small files (200 files, 3.5 MiB in all), and test case 2, "
        "a few large files (4 files, 32 MiB in all). Each is fetched twice: by one client, file "
        "after file (sequential), and by 12 client threads sharing the list (concurrent); the "
        "speedup is the sequential time over the concurrent one. On loopback a whole pass takes "
        "milliseconds, which measures the machine's noise rather than the server, so measure "
        "them through a simulated network:") + [
        "",
        "<!-- doctest: skip — runs for about 5 minutes -->",
        "```sh",
        "./lab speedup",
        "```", "",
    ] + paragraph(
        f"It {build}serves a generated site with {servers} and `python3 -m http.server`, sends "
        "every connection through a proxy that adds a 20 ms round trip and 100 Mbit/s each way "
        "(`harness/bench/lib/shaper.py`), and runs 5 rounds, the servers in turns. It refuses "
        "fewer than 3 rounds and runs without the simulated network, and marks with ⚠ any time "
        "shorter than 0.5 s. It takes 4 to 5 minutes, prints one table per test case, and "
        "writes them to `build/bench-shaped/shaped.md` (every single run in "
        "`build/bench-shaped/shaped_runs.csv`); `/usr/bin/python3 harness/bench shaped --help` lists the "
        "options it passes on. Hand in, under question 5 of `ANSWERS.md`:") + [
        "",
        "1. the two tables of `shaped.md` as they are (for each server: the median sequential and",
        "   concurrent times in seconds, the speedup with its min–max over the rounds, the errors),",
        "   and its `Produced by ... Machine: ...` line;",
        "2. for each test case, which servers gain from the 12 concurrent clients and how much, and",
        "   why the sequential server's speedup differs between the two cases: where is the time",
        "   spent waiting?",
        "3. every cell marked ⚠ or with errors, and what you did about it (a rerun on a quieter",
        "   machine, or `./lab speedup --rtt-ms 50`, said as such).",
        "",
    ]


def doctest_note(server: str) -> list[str]:
    """The README's paragraph on ./lab doctest, which checks the guide's blocks on @p server."""
    return paragraph(
        "`./lab doctest` runs the command blocks of this README, `docs/` and `ANSWERS.md` that "
        f"can run unattended, against {server}, and checks that they print what the pages say "
        "(`harness/guidetest --help`); those that need code you write fail until it "
        "does its job.") + [""]


def grade_section(intro: str, targets: list[tuple[str, str]], maxima: dict[str, float],
                  detail: str = "") -> list[str]:
    """The README's "Check your work with the grader" section: @p intro, the ./lab grade
    command of each (profile, --server-cmd) of @p targets, and what those checks are (@p
    detail: a sentence of the track's own on how the grader runs the server)."""
    out = ["## Check your work with the grader", "", intro, "",
           "<!-- doctest: skip — grades for a minute each; the autograder runs the same checks -->",
           "```sh"]
    for profile, command in targets:
        limits = " --maxclient 12 --maxtotal 60" if profile == "limited" else ""
        out.append(f'./lab grade --profile {profile}{limits} \\\n    --server-cmd "{command}"')
    out += ["```", ""]
    points = [f"{maxima[p]:g} on the {p} profile" for p in ("threaded", "limited") if p in maxima]
    return out + paragraph(
        "These are the visible checks of `harness/grader/rubric.toml`"
        + (f" ({' and '.join(points)} at most)" if points else "") + ". " + detail
        + "`harness/grader/README.md` explains each check, what its failure messages mean, "
          "and the reports it writes (`grade-results/`). The autograder runs the same checks on "
          "your submission, and may add hidden ones.") + [""]


def contract_section(specific: list[str], limited: str) -> list[str]:
    """The README's "The submission contract": the track's @p specific items, then what every
    track shares: stage 3's refusals (@p limited: who refuses), ANSWERS.md, and the grader
    left alone."""
    return ["## The submission contract", ""] + bullets(specific + [
        f"{limited} refuses a connection over the per-client limit with `429 Too Many Requests` "
        "and one over the total limit with `503 Service Unavailable`, at once, without a thread.",
        "`ANSWERS.md` holds your answers to the course's questions.",
        "The grader, the rubric and the harness stay as they are: the autograder uses its own copy.",
    ]) + [""]


def submitting_section(workflow: str) -> list[str]:
    """The README's "Submitting": push (or bundle), with @p workflow, what a push runs."""
    return ["## Submitting", ""] + paragraph(
        "Commit your work and push it to the repository your course gave you (with GitHub "
        "Classroom, the assignment repository made for you): what is pushed at the deadline is "
        "what gets graded. " + workflow + "If your course collects files instead, hand in a "
        "bundle of your history, made with `git bundle create submission.bundle HEAD`.") + [""]


def python_readme(tree: dict[str, "Output"], solution: bool, maxima: dict[str, float]) -> str:
    """The README of a Python tree (--lang python)."""
    out = ["# Concurrent HTTP server lab, in Python" + (": solution tree" if solution else ""), ""]
    if solution:
        out += [
            "> **Solution tree, for the instructor: keep it private.** It is the Python handout",
            "> with every stub filled in with the reference's code and the answered questions'",
            "> headings; students get it cut with `./lab handout --lang python DIR`.", ""]
    out += paragraph(
        "`http_server.py` is the sequential static-file server of the earlier project, run as "
        "`python3 http_server.py -p 8080`: it serves its working directory over HTTP/1.0, one "
        "client at a time. You grow it into a server that serves every connection on a thread "
        "of its own (stage 2) and limits how many connections one client, and all clients "
        "together, may hold (stage 3, `-maxclient N -maxtotal M`). Standard library only; "
        "Python 3.8 or newer.") + [""]
    out += ["| stage | run as | in this repository |", "| --- | --- | --- |",
            "| 1, sequential | `python3 http_server.py -p 8080 --sequential` | complete: read it first |",
            "| 2, a thread per connection | `python3 http_server.py -p 8080` | "
            + ("complete |" if solution else "you write `hand_off()` |"),
            "| 3, admission control | `python3 http_server.py -p 8080 -maxclient 12 -maxtotal 60` | "
            + ("complete |" if solution else "you write the limiter and `admit()` |"), ""]
    todos = todo_list(tree)
    out += ["## What " + ("students implement" if solution else "you implement"), ""]
    out += paragraph(
        "[docs/index.md](docs/index.md) walks through the given server and states what each "
        "stage must do.") + [""]
    if todos:
        out += ["Every place to fill in is marked `TODO(student)`, with a comment saying what the",
                "code must do; until it is written, the server says `TODO(student): ...` on stderr",
                "and answers 503:", ""] + todos + [""]
    out += [
        "## Run it", "",
        "<!-- doctest: skip — serves until Ctrl-C -->",
        "```sh",
        "./lab run                        # serve www/ on http://localhost:8080/ (Ctrl-C stops it)",
        "./lab run --sequential           # the same with stage 1",
        "python3 http_server.py --help    # every option",
        "./lab doctest                    # the guide's commands, run and checked",
        "```", "",
    ] + doctest_note("`http_server.py`")
    out += grade_section(
        "`./lab grade` runs the checks your submission will be scored with, against your server:",
        [(profile, command) for _, profile, command in PYTHON_TARGETS], maxima,
        "The grader starts your server for each check with a copy of the sample site as its "
        "working directory, on a free port, and stops it afterwards. ")
    out += contract_section([
        "`http_server.py` stays at the top of the repository and runs with Python 3 and its "
        "standard library alone.",
        f"The grader runs it as `{PYTHON_TARGETS[0][2]}` (stage 2) and `{PYTHON_TARGETS[1][2]}` "
        "(stage 3), with a copy of the document root as its working directory, and connects to "
        "`127.0.0.1:{port}`."], "With `-maxclient` and `-maxtotal` (stage 3), the server")
    out += submitting_section(
        f"Each push runs `{WORKFLOW}` on GitHub: one step per visible check, each worth the "
        "check's points in Classroom's gradebook when the check passes whole. ")
    out += question5("your server (stage 1 with `--sequential`, and threaded)", "")
    out += [
        "## Reading", "",
        "- [docs/index.md](docs/index.md): the lab guide for this track.",
        "- [ANSWERS.md](ANSWERS.md): the questions to answer.",
        "- [harness/grader/README.md](harness/grader/README.md): the grader.",
    ]
    return "\n".join(out) + "\n"


def student_readme(tree: dict[str, "Output"], kept: set[str], solution: bool,
                   maxima: dict[str, float]) -> str:
    """The README of a generated tree: what to implement, the contract, checking, submitting."""
    exercises = [p for p in PARTS.values() if p.kind == SOLUTION and p.readme]
    extensions = [p for p in PARTS.values() if p.kind == EXTENSION]
    included = [p for p in extensions if p.name in kept]
    absent = [p for p in extensions if p.name not in kept]
    workflows = sorted(rel for rel in tree if rel.startswith(WORKFLOWS))
    has_stage4 = "stage4" in kept
    out = ["# Concurrent HTTP server lab" + (": solution tree" if solution else ""), ""]
    if solution:
        out += [
            "> **Solution tree, for the instructor and the autograder: keep it private.** It is the",
            "> student handout with every stub filled in with the reference's code, the answered",
            "> questions (ANSWERS.md) and the autograder's hidden checks and tests. Students get the",
            "> same tree without them, cut with `./lab handout DIR`.", ""]
    out += [
        "Three small HTTP/1.0 static-file servers in C++20, one per stage of the lab, built on one",
        "shared core library; a test harness that runs them against real clients; and the grader",
    ] + (paragraph(
        "that scores them. In the student handout, part of the code is left for students to "
        "write, as described below; in this tree it is filled in.") if solution else [
        "that scores them. Part of the code is yours to write. Where it goes, the code compiles",
        "but does not do its job yet, and says so when it runs."]) + [
        "",
        "| executable | model | in this repository |",
        "| --- | --- | --- |",
        "| `stage1_sequential` | accept, serve, close: one client at a time | complete: read it first |",
        "| `stage2_threaded` | a new thread for each connection | you write the hand-off to the thread |",
        "| `stage3_limited` | stage 2 plus admission control (per-client and total limits) "
        "| you write the admission control |",
    ]
    if has_stage4:
        out.append("| `stage4_event` | a few event loops, stage 3's limits | complete, for comparison |")
    if solution:
        out = [line.replace("| you write ", "| students write ") for line in out]
    out += ["", "The shared core (`common/`: request parser, path resolution, responses, sockets,",
            "options, logging, the thread set's helpers) is complete, and so are its tests.", "",
            "## What students implement" if solution else "## What you implement", ""]
    for part in exercises + included:
        out += paragraph(part.readme) + [""]
    todos = todo_list(tree)
    if todos:
        out += ["Every place to fill in is marked `TODO(student)`, with a comment saying what the",
                "code must do:", ""] + todos + [""]
    elif solution:
        out += ["(In the student handout each of these places holds a stub marked",
                "`TODO(student)`.)", ""]
    if absent:
        out += ["Not in this repository:", ""]
        for part in absent:
            if part.name == "stage4":
                out.append("- stage 4, the event-driven server, with its tests and guide page;")
            elif part.name == "reclaim-idle":
                out.append("- `--reclaim-idle`: the option is still accepted, but the limiter never "
                           "reclaims a slot (a full server refuses), and its tests are left out;")
            else:
                out.append(f"- {part.summary};")
        out[-1] = out[-1].rstrip(";") + "."
        out.append("")
    out += [
        "## Build, run, test", "",
        "On Debian 12 (as root or with `sudo`; `./lab setup` installs what is missing):", "",
        "<!-- doctest: skip — builds, serves until Ctrl-C and runs every test -->",
        "```sh",
        "./lab build                      # configure and build into build/ (binaries in build/bin/)",
        "./lab run stage2_threaded        # serve www/ on http://localhost:8080/ (Ctrl-C stops it)",
        "./lab test                       # every unit test and the harness, through CTest",
        "build/bin/limiter_tests          # stage 3's unit tests alone",
        "./lab doctest                    # the guide's commands, run and checked",
        "```", "",
        "Every stage prints its options with `--help`. The unit tests and harness tests of the",
        "given parts pass from the start; those of stages 2 and 3 fail until your code does its",
        "job, and a failing limiter test prints the `TODO(student)` it ran into.", "",
    ] + doctest_note("the stages, which it builds first")
    out += grade_section(
        "`./lab grade` builds, then runs the checks your submission will be scored with:",
        list(STAGE_COMMANDS.values()), maxima)
    out += contract_section([
        "The repository builds with `./lab build` (CMake's `default` preset: `cmake --preset "
        "default && cmake --build --preset default`) on Debian 12 with g++ 12, without a warning "
        "(`-Wall -Wextra -Wpedantic -Wshadow -Wconversion`).",
        "The build produces `build/bin/stage2_threaded` and `build/bin/stage3_limited` (and "
        "keeps `build/bin/stage1_sequential`).",
        "The command lines stay as they are: the grader starts the servers as "
        f"`{STAGE_COMMANDS['stage2_threaded'][1]}` and `{STAGE_COMMANDS['stage3_limited'][1]}`, "
        "and connects to `127.0.0.1:{port}`."], "Stage 3")
    workflow = ""
    if workflows:
        workflow = ("Each push also runs " + ", ".join(f"`{w}`" for w in workflows) + " on GitHub"
                    + (f"; `{WORKFLOW}` builds your code and grades it with the visible checks, "
                       "one step per check, each worth the check's points in GitHub Classroom's "
                       "gradebook when the check passes whole. " if WORKFLOW in workflows else ". "))
    out += submitting_section(workflow)
    out += question5("each stage of this repository", "builds the stages, ")
    out += [
        "## Reading", "",
        "- [docs/index.md](docs/index.md): the lab guide, one page per stage, and the design notes",
        "  on the shared core.",
        "- [ANSWERS.md](ANSWERS.md): the questions to answer.",
        "- [harness/README.md](harness/README.md): the harness's tools at a glance;",
        "  [harness/tests/README.md](harness/tests/README.md): the tests, and how to run part of them.",
        "- [harness/grader/README.md](harness/grader/README.md): the grader.",
    ]
    return "\n".join(out) + "\n"
