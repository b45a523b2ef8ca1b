"""The rubric file: per check id, its points, visibility, profiles and timeout.

TOML (``rubric.toml``, read with the standard :mod:`tomllib` on Python 3.11+, else with
``tomli``, the library tomllib was taken from: Debian/Ubuntu ``python3-tomli`` or
``pip install tomli``) or JSON (``rubric.json``, standard library on any Python), same shape::

    [checks.index_html]
    points = 10
    visibility = "visible"          # or hidden, after_due_date, after_published
    profiles = ["sequential", "threaded", "limited"]
    timeout = 20                    # seconds, times --timeout-scale
    # title = "..."                 # optional: the name shown in reports

Every key is optional; what a rubric entry leaves out keeps the check's own default. Checks
are reported in rubric order, then any checks the rubric does not mention.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path

from .registry import PROFILES, VISIBILITIES, Check

KEYS = {"points", "visibility", "profiles", "timeout", "title"}


class RubricError(ValueError):
    """The rubric file is missing, unreadable or malformed."""


def toml_loads(text: str, path: Path) -> dict:
    """Parses TOML with tomllib (3.11+) or tomli; a clear RubricError when neither is there."""
    try:
        import tomllib as toml
    except ImportError:
        try:
            import tomli as toml
        except ImportError:
            version = ".".join(map(str, sys.version_info[:2]))
            raise RubricError(
                f"rubric {path} is TOML, which Python {version} cannot read without a library: "
                f"install tomli (apt-get install python3-tomli, or python3 -m pip install tomli), "
                f"run the grader under Python 3.11+ (tomllib), or give a JSON rubric "
                f"(--rubric rubric.json)") from None
    return toml.loads(text)


def load(path: Path) -> dict[str, dict]:
    """Reads and validates @p path; returns {check id: entry}."""
    try:
        text = path.read_bytes()
    except OSError as error:
        raise RubricError(f"cannot read rubric {path}: {error.strerror}") from error
    try:
        data = json.loads(text) if path.suffix == ".json" else toml_loads(text.decode("utf-8"), path)
    except RubricError:
        raise
    except (ValueError, UnicodeDecodeError) as error:
        raise RubricError(f"rubric {path}: {error}") from error
    if not isinstance(data, dict) or set(data) - {"checks"} or not isinstance(data.get("checks"), dict):
        raise RubricError(f"rubric {path}: expected only a 'checks' table of check ids")
    for check_id, entry in data["checks"].items():
        where = f"rubric {path}, check {check_id!r}"
        if not isinstance(entry, dict):
            raise RubricError(f"{where}: expected a table of {sorted(KEYS)}")
        unknown = set(entry) - KEYS
        if unknown:
            raise RubricError(f"{where}: unknown key(s) {sorted(unknown)}; known: {sorted(KEYS)}")
        if "points" in entry and (isinstance(entry["points"], bool)
                                  or not isinstance(entry["points"], (int, float)) or entry["points"] < 0):
            raise RubricError(f"{where}: points must be a number >= 0")
        if "visibility" in entry and entry["visibility"] not in VISIBILITIES:
            raise RubricError(f"{where}: visibility must be one of {', '.join(VISIBILITIES)}")
        if "profiles" in entry:
            profiles = entry["profiles"]
            if not isinstance(profiles, list) or not set(profiles) <= set(PROFILES):
                raise RubricError(f"{where}: profiles must be a list drawn from {', '.join(PROFILES)}")
        if "timeout" in entry and (isinstance(entry["timeout"], bool)
                                   or not isinstance(entry["timeout"], (int, float)) or entry["timeout"] <= 0):
            raise RubricError(f"{where}: timeout must be a number of seconds > 0")
        if "title" in entry and not isinstance(entry["title"], str):
            raise RubricError(f"{where}: title must be a string")
    return data["checks"]


def apply(checks: dict[str, Check], rubric: dict[str, dict]) -> list[Check]:
    """The checks with their rubric entries applied, in rubric order then registration order."""
    ordered = [check_id for check_id in rubric if check_id in checks]
    ordered += [check_id for check_id in checks if check_id not in rubric]
    result = []
    for check_id in ordered:
        entry = rubric.get(check_id, {})
        check = checks[check_id]
        result.append(replace(
            check,
            points=float(entry.get("points", check.points)),
            visibility=entry.get("visibility", check.visibility),
            profiles=tuple(entry.get("profiles", check.profiles)),
            timeout=float(entry.get("timeout", check.timeout)),
            title=entry.get("title", check.title),
        ))
    return result
