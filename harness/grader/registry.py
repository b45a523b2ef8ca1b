"""The check registry: the ``@check`` decorator, and loading extra checks from a directory.

A check is a function taking a :class:`grader.context.CheckContext`. It passes by returning
and fails by raising :class:`CheckFailed` (``ctx.fail`` / ``ctx.expect``) or
``AssertionError``; any other exception also fails it, with the traceback as its output.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: The behaviours a server can be graded against.
PROFILES = ("sequential", "threaded", "limited")

#: Gradescope's visibility values for a test.
VISIBILITIES = ("visible", "hidden", "after_due_date", "after_published")


class CheckFailed(Exception):
    """Raised by a check when the server did not do what the check expects."""


@dataclass
class Check:
    """One registered check: its defaults, which a rubric entry may override."""

    id: str
    title: str
    func: Callable
    points: float = 0.0
    visibility: str = "visible"
    profiles: tuple[str, ...] = PROFILES
    timeout: float = 30.0
    needs_server: bool = True  #: start a fresh server before the check runs
    origin: str = "builtin"  #: "builtin", or the file a --hidden-dir check came from


#: Every check known so far, by id, in registration order.
REGISTRY: dict[str, Check] = {}

# While a --hidden-dir module is being imported: where its checks come from.
_loading_origin: str | None = None


def check(
    check_id: str,
    title: str,
    *,
    points: float = 0.0,
    visibility: str | None = None,
    profiles=PROFILES,
    timeout: float = 30.0,
    needs_server: bool = True,
):
    """Registers the decorated function as check @p check_id.

    The arguments are defaults; the rubric file may override points, visibility, profiles,
    timeout and title per check id. A check loaded from ``--hidden-dir`` is ``hidden`` unless
    it (or the rubric) says otherwise.
    """

    def register(func: Callable) -> Callable:
        if check_id in REGISTRY:
            raise ValueError(f"check id {check_id!r} registered twice "
                             f"({REGISTRY[check_id].origin} and {_loading_origin or 'builtin'})")
        chosen = visibility or ("hidden" if _loading_origin else "visible")
        if chosen not in VISIBILITIES:
            raise ValueError(f"check {check_id!r}: visibility {chosen!r} not in {VISIBILITIES}")
        unknown = set(profiles) - set(PROFILES)
        if unknown:
            raise ValueError(f"check {check_id!r}: unknown profiles {sorted(unknown)}")
        REGISTRY[check_id] = Check(
            id=check_id,
            title=title,
            func=func,
            points=float(points),
            visibility=chosen,
            profiles=tuple(profiles),
            timeout=float(timeout),
            needs_server=needs_server,
            origin=_loading_origin or "builtin",
        )
        return func

    return register


def load_check_dir(directory: Path) -> list[str]:
    """Imports every ``*.py`` of @p directory (not starting with ``_``), in name order, so the
    ``@check`` functions in them register. Returns the ids they added.

    Raises ValueError with a readable message when a file cannot be imported.
    """
    global _loading_origin
    if not directory.is_dir():
        raise ValueError(f"--hidden-dir {directory}: not a directory")
    before = set(REGISTRY)
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        name = f"grader_hidden_{abs(hash(str(path.resolve())))}_{path.stem}"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        _loading_origin = str(path)
        try:
            sys.modules[name] = module
            spec.loader.exec_module(module)
        except Exception as error:  # a broken hidden check is a setup error, not a 0
            raise ValueError(f"cannot load checks from {path}: {type(error).__name__}: {error}") from error
        finally:
            _loading_origin = None
    return [check_id for check_id in REGISTRY if check_id not in before]
