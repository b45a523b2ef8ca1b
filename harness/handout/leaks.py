"""The generator's last checks on a tree before it is written: solution text that would leak
(whole lines, and distinctive fragments of exercise code), and links to files it lacks."""

from __future__ import annotations

import os
import re

from .markers import HTML, Block
from .pages import fenced_lines
from .parts import PARTS, SOLUTION, placed
from .source import Source
from .tree import Output


def normalized(line: str) -> str:
    return " ".join(line.split())


def distinctive(line: str) -> bool:
    """Whether a solution line says enough to count as leaked when it shows up elsewhere: not
    blank, not a comment, not just punctuation, and not too short to be anyone's."""
    text = normalized(line)
    return (len(text) >= 12 and re.search(r"[A-Za-z0-9]", text) is not None
            and not text.startswith(("//", "#", "/*", "*", "<!--")))


#: An identifier long enough to be the solution's own (``reclaimable``, ``try_acquire``).
IDENTIFIER = re.compile(r"(?<![\w.])[A-Za-z_]\w{5,}(?!\w)")
#: A call or member access chain with its arguments: ``std::move(admission.slot)``.
EXPRESSION = re.compile(r"(?<![\w.>:])(?:[A-Za-z_]\w*(?:::|\.|->))*[A-Za-z_]\w*\([^()\n]*\)")


def fragments(line: str) -> set[str]:
    """The pieces of a code line that can leak on their own: its long identifiers, and its
    calls with their arguments that are long enough to be distinctive, whitespace normalised."""
    code = re.split(r"\s(?://|#)\s", " " + line, maxsplit=1)[0]  # not its trailing comment
    found = {m.group(0) for m in IDENTIFIER.finditer(code)}
    found |= {normalized(m.group(0)) for m in EXPRESSION.finditer(code)
              if len(normalized(m.group(0))) >= 14}
    return found


def find_leaks(files: dict[str, Source], kept: set[str], tree: dict[str, Output],
               lang: str = "cpp") -> list[str]:
    """Where the text of a replaced block shows up in @p tree.

    A line of a replaced block is secret when it is distinctive and the tree has no other
    reason to hold it: it is not among the plain lines of a code file the tree ships, nor in
    a stub the tree ships, nor in a kept block. Plain lines of Markdown files do not count: a
    guide that quotes the solution outside a block is exactly the leak to catch.

    Fragments count too: a long identifier, or a call with its arguments, of the code of an
    exercise's replaced block (a part of kind SOLUTION) that appears nowhere in the code the
    tree ships must not appear anywhere in it, a guide quoting ``std::move(admission.slot)``
    in a sentence included.
    """
    given: set[str] = set()
    given_code: list[str] = []
    replaced: list[Block] = []
    replaced_here: list[Block] = []  #: of the files this tree ships (fragments are per tree)
    for item in files.values():
        if item.parsed is None:
            continue
        shipped = placed(item.rel, lang) in tree
        code = item.parsed.syntax is not HTML
        for segment in item.parsed.segments:
            if isinstance(segment, str):
                if shipped and code:
                    given.add(normalized(segment))
                    given_code.append(segment)
                continue
            if shipped:
                given.update(normalized(line) for line in segment.stub or [])
                if code:
                    given_code.extend(segment.stub or [])
            if segment.part in kept:
                given.update(normalized(line) for _, line in segment.solution)
                if code:
                    given_code.extend(line for _, line in segment.solution)
            else:
                replaced.append(segment)
                if shipped:
                    replaced_here.append(segment)
    leaks = line_leaks(replaced, given, tree)
    return leaks + fragment_leaks(files, replaced_here, given_code, tree, leaks)


def fragment_leaks(files: dict[str, Source], replaced: list[Block], given_code: list[str],
                   tree: dict[str, Output], already: list[str]) -> list[str]:
    """The fragment half of find_leaks()."""
    shipped_code = normalized(" \n ".join(given_code))
    shipped_words = set(IDENTIFIER.findall(shipped_code))
    secret: dict[str, Block] = {}
    for block in replaced:
        if PARTS[block.part].kind != SOLUTION or files[block.path].parsed.syntax is HTML:
            continue
        for _, line in block.solution:
            if not distinctive(line):
                continue
            for piece in fragments(line):
                known = (piece in shipped_words if IDENTIFIER.fullmatch(piece)
                         else piece in shipped_code)
                if not known:
                    secret.setdefault(piece, block)
    if not secret:
        return []
    seen = {leak.split(": solution text", 1)[0] for leak in already}
    pattern = re.compile("|".join(
        rf"(?<![\w.]){re.escape(p)}(?!\w)" for p in sorted(secret, key=len, reverse=True)))
    leaks = []
    for rel in sorted(tree):
        out = tree[rel]
        if out.text is None:
            continue
        for number, line in enumerate(out.text.split("\n"), 1):
            if f"{rel}:{number}" in seen:
                continue
            hit = pattern.search(normalized(line))
            if hit:
                block = secret[hit.group(0)]
                leaks.append(f"{rel}:{number}: solution fragment of block {block.name} "
                             f"({block.path}) appears in the generated tree: {hit.group(0)!r}")
    return leaks


def line_leaks(replaced: list[Block], given: set[str], tree: dict[str, Output]) -> list[str]:
    """The whole-line half of find_leaks()."""
    secret: dict[str, tuple[Block, int]] = {}
    for block in replaced:
        for number, line in block.solution:
            text = normalized(line)
            if distinctive(line) and text not in given:
                secret.setdefault(text, (block, number))
    leaks = []
    for rel in sorted(tree):
        out = tree[rel]
        if out.text is None or not secret:
            continue
        for number, line in enumerate(out.text.split("\n"), 1):
            hit = secret.get(normalized(line))
            if hit:
                block, origin = hit
                leaks.append(f"{rel}:{number}: solution text of block {block.name} "
                             f"({block.path}:{origin}) appears in the generated tree: "
                             f"{normalized(line)!r}")
    return leaks


#: Where a Markdown page links: [text](target "title"), [text](<target>), a reference
#: definition [id]: target, and HTML's href= and src=.
LINK_RES = (re.compile(r"\]\(\s*(?:<([^>]*)>|([^)\s]+))[^)]*\)"),
            re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?([^>\s]+)>?"),
            re.compile(r"\b(?:href|src)\s*=\s*[\"']([^\"']+)[\"']"))


def prose_lines(text: str):
    """(line number, line) of Markdown @p text outside fenced code, `inline code` removed."""
    for number, line, in_code in fenced_lines(text):
        if not in_code:
            yield number, re.sub(r"`[^`]*`", "", line)


def anchors(text: str) -> set[str]:
    """The #fragments that lead into Markdown @p text: its headings as GitHub names them
    (lower case, punctuation dropped, spaces as hyphens, -1, -2 ... on repeats), and id= or
    name= anchors."""
    found: set[str] = set()
    for _, line in prose_lines(text):
        if heading := re.match(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$", line):
            slug = re.sub(r"[^\w\- ]", "", heading[1].lower()).replace(" ", "-")
            name, n = slug, 0
            while name in found:
                n += 1
                name = f"{slug}-{n}"
            found.add(name)
        found.update(re.findall(r"\b(?:id|name)\s*=\s*[\"']([^\"']+)[\"']", line))
    return found


def dead_links(files: dict[str, str | None]) -> list[str]:
    """Relative links of a tree's Markdown (outside code) whose target it does not hold, or
    whose #fragment names no heading of the page it leads to. @p files: every file of the
    tree, by path relative to its top, with its text (None: not read, or not text)."""
    dead = []
    for rel in sorted(files):
        text = files[rel]
        if not rel.endswith(".md") or text is None:
            continue
        for number, line in prose_lines(text):
            for target in [next(g for g in m.groups() if g is not None)
                           for pattern in LINK_RES for m in pattern.finditer(line)]:
                if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto: ...
                    continue
                name, _, fragment = target.partition("#")
                path = os.path.normpath(os.path.join(os.path.dirname(rel), name)) if name else rel
                if path not in files and not any(k.startswith(path + "/") for k in files):
                    dead.append(f"{rel}:{number}: {target}")
                elif (fragment and path.endswith(".md") and files.get(path) is not None
                      and fragment not in anchors(files[path])):
                    dead.append(f"{rel}:{number}: {target} (no such heading)")
    return dead
