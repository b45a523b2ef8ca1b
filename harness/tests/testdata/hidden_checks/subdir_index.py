"""An example hidden check, loaded with ``harness/grader grade --hidden-dir harness/tests/testdata/hidden_checks``.

Files in a hidden-check directory are plain Python importing the same decorator as the
built-in checks. A check defined here is ``hidden`` (results.json shows it to students only
as Gradescope's visibility allows) unless the decorator or the rubric says otherwise.
"""

from grader import check


@check("subdir_index", "GET /sub/ serves sub/index.html", points=5, timeout=20)
def subdir_index(ctx):
    reply = ctx.request("/sub/")
    ctx.expect(reply.status == 200, f"GET /sub/: expected 200, got {reply.status_line!r}")
    expected = ctx.file_bytes("sub/index.html")
    ctx.expect(reply.body == expected,
               f"GET /sub/: {len(reply.body)} bytes that are not sub/index.html ({len(expected)} bytes)")
    ctx.expect(reply.media_type == "text/html",
               f"GET /sub/: Content-Type {reply.headers.get('content-type')!r}, expected text/html")
    ctx.note("200 with sub/index.html")
