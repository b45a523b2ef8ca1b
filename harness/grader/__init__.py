"""Grader of the lab kit: starts any HTTP server command and scores it against a rubric.

Run it with ``harness/grader grade`` (see ``harness/grader/README.md``). A check file for
``--hidden-dir`` needs only::

    from grader import check

    @check("my_check", "what it checks", points=5)
    def my_check(ctx):           # ctx: grader.context.CheckContext
        reply = ctx.request("/index.html")
        ctx.expect(reply.status == 200, f"got {reply.status_line!r}")
"""

from .context import CheckContext, client_ips
from .registry import PROFILES, CheckFailed, check

__all__ = ["CheckContext", "CheckFailed", "PROFILES", "check", "client_ips"]
