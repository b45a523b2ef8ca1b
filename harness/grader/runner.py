"""Runs checks one by one, each in its own thread under its own timeout, and never lets a
hanging server, a crashing server or a broken check stop the grading."""

from __future__ import annotations

import threading
import time
import traceback
from dataclasses import dataclass

from .context import CheckContext, Settings
from .registry import Check, CheckFailed
from .sandbox import near_cap
from .server import ServerStartError, describe_status


@dataclass
class Result:
    """The outcome of one check."""

    check: Check
    passed: bool
    score: float
    output: str
    duration: float
    kind: str = ""  #: why it failed: "failed", "timeout", "exception", "startup", "not run"
    message: str = ""  #: one-line reason (the JUnit failure message)


def not_run(check: Check, why: str) -> Result:
    """The Result of a check that never ran (grading was interrupted, or the build failed)."""
    return Result(check, False, 0.0, why, 0.0, "not run", why)


#: How long a failed check waits for a dying server to exit, so its status can be told.
EXIT_GRACE = 0.5
#: How long a stopped check's thread gets to let go of its files before they are removed
#: (it may be copying the document root; its sockets are closed, so it ends quickly).
SETTLE_GRACE = 3.0


def run_check(check: Check, settings: Settings) -> Result:
    """Runs @p check against a fresh server; always returns a Result. Interrupted (Ctrl-C,
    SIGTERM), it stops the server, removes the check's files and lets the exception go on."""
    ctx = CheckContext(check, settings)
    try:
        return supervise(check, settings, ctx)
    except BaseException:
        ctx.abort()
        settle(ctx)
        ctx.cleanup()
        raise


def settle(ctx: CheckContext) -> None:
    """Waits (a little) for the check's thread to end, so that removing the check's files
    does not race with a thread still writing them."""
    if ctx.thread is not None:
        ctx.thread.join(SETTLE_GRACE)


def supervise(check: Check, settings: Settings, ctx: CheckContext) -> Result:
    """run_check()'s work: the check in its own thread, under its timeout."""
    outcome: dict = {}
    lock = threading.Lock()

    def body():
        try:
            ctx.prepare_root()
            if check.needs_server:
                ctx.start_server()
            check.func(ctx)
            server = ctx.server
            if server is not None and not server.alive():
                raise CheckFailed(f"the server exited (status {describe_status(server.exit_status())}) "
                                  f"during the check")
            found = ("passed", "", "")
        except ServerStartError as error:
            found = ("startup", str(error), "")
        except (CheckFailed, AssertionError) as error:
            message = str(error) or f"{type(error).__name__} at\n{traceback.format_exc()}"
            found = ("failed", message, "")
        except BaseException as error:  # the grader's own bug, or a check's: fail, keep going
            found = ("exception", f"{type(error).__name__}: {error}", traceback.format_exc())
        with lock:
            outcome.setdefault("found", found)

    start = time.monotonic()
    thread = threading.Thread(target=body, name=f"check-{check.id}", daemon=True)
    ctx.thread = thread
    thread.start()
    limit = check.timeout * settings.scale
    thread.join(limit)
    with lock:  # whichever comes first, the check's own end or the timeout, decides
        outcome.setdefault("found", ("timeout", f"timed out after {limit:g} s", ""))
    kind, message, trace = outcome["found"]
    server = ctx.server
    if kind != "passed" and server is not None and server.alive():
        server.wait_exit(EXIT_GRACE)  # a server that just crashed: learn how it died
    died = server.exit_status() if server is not None else None  # before we stop it ourselves
    try:
        ctx.abort()  # closes the check's sockets and stops its server, even if it still runs
    except Exception:
        trace += "\nwhile stopping the server:\n" + traceback.format_exc()
    duration = time.monotonic() - start
    passed = kind == "passed"
    if kind in ("failed", "timeout") and died is not None and "exited" not in message:
        message += f" (the server had exited with status {describe_status(died)})"
    if server is not None and server.escaped:
        ctx.note(f"The server left {len(server.escaped)} process(es) running outside its process "
                 f"group when it was stopped; the grader killed them: "
                 + "; ".join(server.escaped[:5]) + ".")
    for line in cap_notes(ctx, died):
        ctx.note(line)
    output = compose_output(ctx, passed, message, trace)
    settle(ctx)
    ctx.cleanup()
    score = check.points if passed else check.points * (ctx.credit or 0.0)
    return Result(check, passed, round(score, 2), output, duration,
                  "" if passed else kind, message.split("\n", 1)[0][:1000])


def cap_notes(ctx: CheckContext, died) -> list:
    """Plain words for each sandbox cap the server ran into during this check."""
    sandbox = ctx.settings.sandbox
    server = ctx.server
    if server is None or not sandbox.sealed:
        return []
    notes = []
    caps = sandbox.caps
    if ctx.log_sizes() >= caps.file_mib << 20:
        notes.append(f"The server's output reached the cap of {caps.file_mib} MiB per file: "
                     f"writing more failed (the grader keeps only the last "
                     f"{ctx.settings.log_bytes >> 10} KiB of each log).")
    if near_cap(server.most_tasks, caps.procs):
        notes.append(f"The server ran {server.most_tasks} processes and threads at once, near "
                     f"the cap of {caps.procs} processes and threads: beyond the cap, starting "
                     f"another one fails.")
    if died is not None and (died < 0 or died > 128):
        notes.append(f"The server was killed by a signal; if it ran out of memory, note that "
                     f"each process may use at most {caps.memory_mib} MiB of address space.")
    return notes


def sentence(text: str) -> str:
    """@p text ending its sentence: a full stop unless it has one (or ends a list or quote)."""
    stripped = text.rstrip()
    if not stripped or stripped[-1] in ".!?:\"'":
        return stripped
    return stripped + "."


def compose_output(ctx: CheckContext, passed: bool, message: str, trace: str) -> str:
    """The text shown for a check: reason, what was observed, and the server's log tails."""
    parts = []
    if not passed:
        parts.append(sentence(message))
    if ctx.notes:
        parts.append("\n".join(f"  {note}" for note in ctx.notes))
    if trace:
        parts.append(trace.rstrip())
    if not passed and ctx.server is not None:
        parts.append(f"server command: {ctx.server.command}")
        tails = ctx.server.log_tails(ctx.settings.log_lines)
        if tails:
            parts.append(tails)
    return "\n".join(parts) if parts else "passed"
