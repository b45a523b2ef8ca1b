"""The three outputs: a summary table (stdout), junit.xml (CI) and results.json (Gradescope)."""

from __future__ import annotations

import json
import os
import re
import socket
import textwrap
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from .runner import Result

# Characters XML 1.0 cannot hold (server output may contain anything).
_XML_INVALID = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


def fmt_points(value: float) -> str:
    return f"{value:g}" if value == int(value) else f"{value:.2f}"


def totals(results: list[Result]) -> tuple[float, float]:
    return sum(r.score for r in results), sum(r.check.points for r in results)


def shown(results: list[Result], reveal_hidden: bool) -> list[Result]:
    """@p results, without the checks students may not see yet unless @p reveal_hidden."""
    return results if reveal_hidden else [r for r in results if r.check.visibility == "visible"]


def summary(results: list[Result], meta: dict, reveal_hidden: bool = True) -> str:
    """The human table: one row per check, the reason under each failure, and the total.
    Without @p reveal_hidden, checks that are not visible are left out, points and names."""
    results = shown(results, reveal_hidden)
    score, max_score = totals(results)
    width = max([len(r.check.id) for r in results] + [len("check"), len("TOTAL")])
    lines = [
        f"Grading: {meta['command']}",
        f"Profile: {meta['profile']} (maxclient {meta['maxclient']}, maxtotal {meta['maxtotal']})",
        "",
        f"{'check':<{width}}  {'result':<7} {'points':>9}  {'time':>6}  visibility",
        f"{'-' * width}  {'-' * 7} {'-' * 9}  {'-' * 6}  {'-' * 10}",
    ]
    for r in results:
        result = "PASS" if r.passed else {"timeout": "TIMEOUT", "exception": "ERROR",
                                          "not run": "NOT RUN"}.get(r.kind, "FAIL")
        points = f"{fmt_points(r.score)}/{fmt_points(r.check.points)}"
        lines.append(f"{r.check.id:<{width}}  {result:<7} {points:>9}  {r.duration:5.1f}s  {r.check.visibility}")
        if not r.passed:
            lines += textwrap.wrap(r.message, 100, initial_indent="    ", subsequent_indent="    ",
                                   max_lines=6, placeholder=" ...")
    lines.append(f"{'-' * width}  {'-' * 7} {'-' * 9}")
    passed = sum(r.passed for r in results)
    lines.append(f"{'TOTAL':<{width}}  {f'{passed}/{len(results)}':<7} "
                 f"{fmt_points(score) + '/' + fmt_points(max_score):>9}")
    if not reveal_hidden:
        lines.append("(visible checks only; hidden checks, if any, are not counted here)")
    if not meta.get("complete", True):
        lines.append(f"INCOMPLETE: {meta.get('stopped') or 'grading did not finish'}; "
                     f"the score is not final")
    return "\n".join(lines)


def gradescope(results: list[Result], meta: dict) -> dict:
    """results.json in Gradescope's autograder format."""
    score, max_score = totals(results)
    visible_score, visible_max = totals(shown(results, False))
    output = (f"Profile {meta['profile']} (maxclient {meta['maxclient']}, maxtotal "
              f"{meta['maxtotal']}): {fmt_points(visible_score)}/{fmt_points(visible_max)} points "
              f"on the visible checks.")
    if not meta.get("complete", True):
        output = (f"INCOMPLETE: {meta.get('stopped') or 'grading did not finish'}; the score "
                  f"is not final. " + output)
    return {
        "score": score,
        "max_score": max_score,
        "execution_time": round(meta.get("elapsed", 0.0), 3),
        "output": output,
        "visibility": meta.get("visibility", "visible"),
        "stdout_visibility": meta.get("stdout_visibility", "hidden"),
        "extra_data": {"complete": bool(meta.get("complete", True)),
                       "stopped": meta.get("stopped", ""),
                       **({"sandbox": meta["sandbox_layer"]} if "sandbox_layer" in meta else {})},
        "tests": [
            {
                "name": f"{r.check.id}: {r.check.title}",
                "number": str(i),
                "score": r.score,
                "max_score": r.check.points,
                "status": "passed" if r.passed else "failed",
                "output": r.output,
                "visibility": r.check.visibility,
            }
            for i, r in enumerate(results, 1)
        ],
    }


def junit(results: list[Result], meta: dict) -> ET.ElementTree:
    """JUnit XML: one testsuite, a testcase per check, <failure message=...> when it failed."""
    score, max_score = totals(results)
    errors = sum(r.kind == "exception" for r in results)
    skipped = sum(r.kind == "not run" for r in results)
    failures = sum(not r.passed for r in results) - errors - skipped
    suites = ET.Element("testsuites", name="lab-grader", tests=str(len(results)),
                        failures=str(failures), errors=str(errors),
                        time=f"{sum(r.duration for r in results):.3f}")
    suite = ET.SubElement(suites, "testsuite", {
        "name": f"grade.{meta['profile']}",
        "tests": str(len(results)),
        "failures": str(failures),
        "errors": str(errors),
        "skipped": str(skipped),
        "time": f"{sum(r.duration for r in results):.3f}",
        "timestamp": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(meta.get("started", time.time()))),
        "hostname": socket.gethostname(),
    })
    props = ET.SubElement(suite, "properties")
    for name, value in (("command", meta["command"]), ("profile", meta["profile"]),
                        ("maxclient", meta["maxclient"]), ("maxtotal", meta["maxtotal"]),
                        ("score", fmt_points(score)), ("max_score", fmt_points(max_score)),
                        ("complete", str(bool(meta.get("complete", True))).lower())):
        ET.SubElement(props, "property", name=name, value=clean(str(value)))
    for r in results:
        case = ET.SubElement(suite, "testcase", classname=f"grade.{meta['profile']}",
                             name=r.check.id, time=f"{r.duration:.3f}")
        points = (f"points {fmt_points(r.score)}/{fmt_points(r.check.points)}, "
                  f"visibility {r.check.visibility}: {r.check.title}")
        if not r.passed:
            # JUnit's three outcomes: the server failed a check; the check itself broke (a
            # bug in it or in the grader); the check did not run.
            tag = {"exception": "error", "not run": "skipped"}.get(r.kind, "failure")
            failure = ET.SubElement(case, tag, message=clean(r.message or r.kind),
                                    type=r.kind or "failed")
            failure.text = clean(r.output)
        ET.SubElement(case, "system-out").text = clean(points + ("\n" + r.output if r.passed else ""))
    indent(suites)
    return ET.ElementTree(suites)


def indent(element: ET.Element, level: int = 0) -> None:
    """Pretty-prints @p element in place (``ET.indent`` is Python 3.9+; the grader runs on 3.8)."""
    pad = "\n" + "  " * level
    children = list(element)
    if children:
        if not (element.text or "").strip():
            element.text = pad + "  "
        for child in children:
            indent(child, level + 1)
            if not (child.tail or "").strip():
                child.tail = pad + "  "
        children[-1].tail = pad


def clean(text: str) -> str:
    return _XML_INVALID.sub("?", text)


def write_all(out_dir: Path, results: list[Result], meta: dict) -> None:
    """Writes results.json and junit.xml (each atomically: a reader never sees half a file)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    write_atomic(out_dir / "results.json", json.dumps(gradescope(results, meta), indent=2) + "\n")
    tree = junit(results, meta)
    tmp = out_dir / ".junit.xml.tmp"
    tree.write(tmp, encoding="utf-8", xml_declaration=True)
    os.replace(tmp, out_dir / "junit.xml")


def write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name("." + path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
