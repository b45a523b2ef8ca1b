"""The GitHub Classroom workflow a tree carries: one graded step per visible check."""

from __future__ import annotations

import re
import tomllib

from .parts import RUBRIC, GenerationError


def yaml_quoted(text: str) -> str:
    """@p text as a single-quoted YAML scalar."""
    return "'" + text.replace("'", "''") + "'"


def classroom_workflow(rubric_text: str, targets: list[tuple[str, str, str]],
                       build: str | None) -> str:
    """The GitHub Classroom workflow: one autograding-command-grader step per visible check of
    each graded program, worth the check's points, and the reporter that sends them to
    Classroom's gradebook. A step earns its points when its check passes whole."""
    checks = tomllib.loads(rubric_text).get("checks", {})
    steps, runners = [], []
    for name, profile, command in targets:
        short = re.sub(r"[^a-z0-9]+", "-", name.split()[0].lower()).strip("-")
        if "(" in name:
            short += "-" + re.sub(r"[^a-z0-9]+", "-", name.split("(", 1)[1].lower()).strip("-")
        limits = " --maxclient 12 --maxtotal 60" if profile == "limited" else ""
        for cid, entry in checks.items():
            if profile not in entry.get("profiles", []) or entry.get(
                    "visibility", "visible") != "visible" or not entry.get("points"):
                continue
            step_id = f"{short}-{cid}".replace("_", "-")
            points = entry["points"]
            run = (f"./lab grade --profile {profile}{limits} --checks {cid} --fail-under "
                   f"{points:g} --out grade-results/{step_id} --server-cmd \"{command}\"")
            minutes = max(2, int(entry.get("timeout", 60) * 3 // 60) + 1)
            steps += [
                f"      - name: {yaml_quoted(f'{name}: {cid}')}",
                f"        id: {step_id}",
                "        uses: classroom-resources/autograding-command-grader@v1",
                "        with:",
                f"          test-name: {yaml_quoted(f'{name}: {cid}')}",
                "          setup-command: ''",
                f"          command: {yaml_quoted(run)}",
                f"          timeout: {minutes}",
                f"          max-score: {points:g}",
            ]
            runners.append(step_id)
    if not runners:
        raise GenerationError(f"{RUBRIC}:1: no visible check with points for the workflow")
    out = [
        "# GitHub Classroom: every push grades the submission with the visible checks of",
        "# harness/grader/rubric.toml, one step per check, and reports each check's points to Classroom's",
        "# gradebook (Classroom's autograding actions). A step earns its check's points only when",
        "# the check passes whole. The same commands run locally: see the README.",
        "# Written by ./lab handout; the reports of every step are kept as \"grade-results\".",
        "name: Autograding Tests",
        "on: [push, workflow_dispatch, repository_dispatch]",
        "permissions:",
        "  checks: write",
        "  actions: read",
        "  contents: read",
        "jobs:",
        "  run-autograding-tests:",
        "    runs-on: ubuntu-24.04",
        "    timeout-minutes: 30",
        "    if: github.actor != 'github-classroom[bot]'",
        "    steps:",
        "      - name: Checkout code",
        "        uses: actions/checkout@v4",
    ]
    if build:
        out += ["      - name: Build (installs the packages it needs with sudo)",
                f"        run: {build}"]
    out += steps
    out += ["      - name: Autograding Reporter",
            "        uses: classroom-resources/autograding-grading-reporter@v1",
            "        env:"]
    out += [f"          {r.upper()}_RESULTS: \"${{{{steps.{r}.outputs.result}}}}\"" for r in runners]
    out += ["        with:",
            f"          runners: {','.join(runners)}",
            "      - name: Keep the reports",
            "        if: ${{ !cancelled() }}",
            "        uses: actions/upload-artifact@v4",
            "        with:",
            "          name: grade-results",
            "          path: grade-results/"]
    return "\n".join(out) + "\n"
