#!/usr/bin/env python3
"""Doxygen input filter for the Markdown pages: links that work on GitHub but not in Doxygen.

Doxygen turns a link to a Markdown file into a reference to that page, and fails (warnings
are errors here) when the file is not one of its pages; Doxygen 1.9.4 also knows no GitHub
heading anchors (`#deployment`). So, outside fenced code blocks:

- a link to a .md file that is not one of the reference's pages becomes its plain text;
- a link to a heading anchor becomes its plain text, and a link to a page keeps the page
  but loses the anchor.

Usage (FILTER_PATTERNS, docs/CMakeLists.txt): doxygen_md_filter.py PAGES_FILE INPUT.md,
where PAGES_FILE lists the absolute paths of the pages, one a line. The output has the same
lines as the input, so Doxygen's line numbers stay right.
"""

from __future__ import annotations

import os
import re
import sys

LINK = re.compile(r"(?<!!)\[(?P<text>[^\]]+)\]\((?P<target>[^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")


def rewrite(line: str, here: str, pages: set[str]) -> str:
    def replace(match: re.Match) -> str:
        text, target = match["text"], match["target"]
        if "://" in target or target.startswith("mailto:"):
            return match[0]
        path, _, anchor = target.partition("#")
        if not path:  # a heading of this page
            return text
        if not path.endswith(".md"):
            return match[0]
        if os.path.normpath(os.path.join(here, path)) not in pages:
            return text
        return f"[{text}]({path})" if anchor else match[0]

    return LINK.sub(replace, line)


def main() -> int:
    pages_file, source = sys.argv[1], sys.argv[2]
    with open(pages_file, encoding="utf-8") as listed:
        pages = {os.path.normpath(line.strip()) for line in listed if line.strip()}
    here = os.path.dirname(os.path.abspath(source))
    in_fence = False
    with open(source, encoding="utf-8") as text:
        for line in text:
            if FENCE.match(line):
                in_fence = not in_fence
            sys.stdout.write(line if in_fence or FENCE.match(line) else rewrite(line, here, pages))
    return 0


if __name__ == "__main__":
    sys.exit(main())
