"""Solution blocks: the comment syntax of each file type, the marker lines, and the parse of a
reference file into plain lines and blocks, rendered back with each block kept or stubbed."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import PurePosixPath

from .parts import PARTS


@dataclass(frozen=True)
class Syntax:
    """How a file type writes a one-line comment: ``open text close``."""

    name: str
    open: str
    close: str = ""


CPP = Syntax("C++", "//")
HASH = Syntax("#", "#")
HTML = Syntax("Markdown", "<!--", "-->")

SUFFIXES = {
    ".cpp": CPP, ".hpp": CPP, ".cc": CPP, ".cxx": CPP, ".hh": CPP, ".h": CPP, ".c": CPP,
    ".py": HASH, ".sh": HASH, ".bash": HASH, ".cmake": HASH, ".toml": HASH, ".yml": HASH,
    ".yaml": HASH, ".cfg": HASH, ".ini": HASH, ".dict": HASH,
    ".md": HTML, ".html": HTML, ".htm": HTML,
}
FILE_NAMES = {
    "CMakeLists.txt": HASH, ".gitignore": HASH, ".clang-format": HASH, ".clang-tidy": HASH,
    "Dockerfile": HASH, "Makefile": HASH,
}

NAME_RE = re.compile(r"^(?P<part>[a-z0-9][a-z0-9-]*)/(?P<what>[A-Za-z0-9][A-Za-z0-9_.-]*)$")
# A comment that means to be a BEGIN or END marker, spelled right or not.
KEYWORD_RE = re.compile(r"^(?P<kw>BEGIN|END)\b[ \t_-]*SOLUTIONS?\b[ \t]*(?P<rest>.*)$", re.I)


def syntax_for(rel: str, text: str) -> Syntax | None:
    """The comment syntax of file @p rel, or None for a type that has none known here."""
    path = PurePosixPath(rel)
    if path.name in FILE_NAMES:
        return FILE_NAMES[path.name]
    if path.suffix in SUFFIXES:
        return SUFFIXES[path.suffix]
    if text.startswith("#!"):
        return HASH  # shell or Python script without a suffix (./lab, .ci/run)
    return None


class MarkerError(Exception):
    """Something wrong at one place of the reference: printed as FILE:LINE: message."""

    def __init__(self, path: str, line: int, message: str):
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = path, line, message


@dataclass
class Block:
    """One solution block of a reference file."""

    path: str
    name: str
    line: int  #: the BEGIN SOLUTION line
    solution: list[tuple[int, str]] = field(default_factory=list)  #: (line number, text)
    stub: list[str] | None = None  #: uncommented; None when the block has no STUB section
    stub_line: int = 0
    end_line: int = 0

    @property
    def part(self) -> str:
        return self.name.split("/", 1)[0]


@dataclass
class Parsed:
    """A reference text file cut into plain lines and blocks."""

    path: str
    syntax: Syntax
    segments: list[str | Block]
    trailing_newline: bool

    @property
    def blocks(self) -> list[Block]:
        return [s for s in self.segments if isinstance(s, Block)]


def marker(line: str, syntax: Syntax) -> tuple[str, str] | None:
    """What marker @p line is: ("begin", name), ("end", name or ""), ("stub", ""), or
    ("error", message) for a line that means to be one but is malformed; None for any other
    line."""
    stripped = line.strip()
    if not stripped.startswith(syntax.open):
        return None
    body = stripped[len(syntax.open):]
    closed = True
    if syntax.close:
        closed = body.endswith(syntax.close)
        if closed:
            body = body[:-len(syntax.close)]
    body = body.strip()
    keyword = KEYWORD_RE.match(body)
    if keyword is None and not re.match(r"^STUB\b", body):
        return None
    if not closed:
        return ("error", f"marker comment not closed with {syntax.close} on its line")
    if keyword is None:
        if body != "STUB":
            return ("error", f"malformed marker {body!r}: the stub marker is a comment holding "
                             f"just STUB")
        return ("stub", "")
    kw = keyword["kw"].upper()
    spelled = f"{kw} SOLUTION"
    if not re.match(rf"^{spelled}(\s|$)", body):
        return ("error", f"malformed marker {body!r}: write {spelled}, in capitals, one space "
                         f"apart")
    rest = body[len(spelled):].strip()
    if kw == "BEGIN":
        if not rest:
            return ("error", "BEGIN SOLUTION without a name: write BEGIN SOLUTION PART/WHAT")
        return ("begin", rest)
    return ("end", rest)


def uncomment(line: str, syntax: Syntax) -> str | None:
    """A stub line without its comment marker (indentation kept), or None if it is not a
    comment of @p syntax. A blank line stays blank."""
    if not line.strip():
        return ""
    match = re.match(r"^([ \t]*)(.*?)[ \t]*$", line)
    indent, rest = match[1], match[2]
    if not rest.startswith(syntax.open):
        return None
    rest = rest[len(syntax.open):]
    if syntax.close:
        if not rest.endswith(syntax.close):
            return None
        rest = rest[:-len(syntax.close)]
        rest = rest[1:] if rest.startswith(" ") else rest
        rest = rest[:-1] if rest.endswith(" ") else rest
    elif rest.startswith(" "):
        rest = rest[1:]
    return indent + rest if rest.strip() else ""


def parse(path: str, text: str, syntax: Syntax) -> tuple[Parsed, list[MarkerError]]:
    """Cuts @p text into plain lines and blocks; returns every marker error found."""
    errors: list[MarkerError] = []
    lines = text.split("\n")
    trailing = lines[-1] == ""
    if trailing:
        lines.pop()
    segments: list[str | Block] = []
    names: dict[str, int] = {}
    block: Block | None = None
    in_stub = False
    for number, line in enumerate(lines, 1):
        found = marker(line, syntax)
        if found is None:
            if block is None:
                segments.append(line)
            elif not in_stub:
                block.solution.append((number, line))
            else:
                plain = uncomment(line, syntax)
                if plain is None:
                    errors.append(MarkerError(path, number, (
                        f"stub line of block {block.name} is not a {syntax.name} comment "
                        f"(write each stub line behind {syntax.open}"
                        f"{' … ' + syntax.close if syntax.close else ''})")))
                else:
                    block.stub.append(plain)
            continue
        kind, value = found
        if kind == "error":
            errors.append(MarkerError(path, number, value))
        elif kind == "begin":
            if block is not None:
                errors.append(MarkerError(path, number, (
                    f"BEGIN SOLUTION {value} inside block {block.name} (opened at line "
                    f"{block.line}): blocks do not nest; close it with END SOLUTION first")))
                continue
            name_match = NAME_RE.match(value)
            if name_match is None:
                errors.append(MarkerError(path, number, (
                    f"bad block name {value!r}: write PART/WHAT, e.g. stage3/try-acquire "
                    f"(lower-case part; letters, digits, '.', '_' and '-')")))
            elif name_match["part"] not in PARTS:
                errors.append(MarkerError(path, number, (
                    f"block {value}: unknown part {name_match['part']!r}; known parts: "
                    f"{', '.join(PARTS)}")))
            elif value in names:
                errors.append(MarkerError(path, number, (
                    f"block name {value} is used twice in this file (first at line "
                    f"{names[value]})")))
            names.setdefault(value, number)
            block = Block(path, value, number)
            in_stub = False
        elif kind == "stub":
            if block is None:
                errors.append(MarkerError(path, number, "STUB outside a solution block"))
            elif in_stub:
                errors.append(MarkerError(path, number, (
                    f"second STUB in block {block.name} (the first is at line {block.stub_line})")))
            else:
                in_stub = True
                block.stub, block.stub_line = [], number
        else:  # end
            if block is None:
                errors.append(MarkerError(path, number, "END SOLUTION without BEGIN SOLUTION"))
                continue
            if value and value != block.name:
                errors.append(MarkerError(path, number, (
                    f"END SOLUTION {value} closes block {block.name} (opened at line "
                    f"{block.line})")))
            if not block.solution and not block.stub:
                errors.append(MarkerError(path, block.line, f"block {block.name} is empty"))
            block.end_line = number
            segments.append(block)
            block, in_stub = None, False
    if block is not None:
        errors.append(MarkerError(path, block.line, (
            f"block {block.name} is never closed: END SOLUTION missing before the end of the "
            f"file")))
    return Parsed(path, syntax, segments, trailing), errors


def render(parsed: Parsed, kept: set[str]) -> str:
    """The file with every block replaced by its reference lines (part in @p kept) or its stub.

    A block that leaves nothing behind takes one neighbouring blank line with it, so that
    removing a paragraph or a line does not leave two blank lines where there was one.
    """
    out: list[str] = []
    swallow_blank = False
    for segment in parsed.segments:
        if isinstance(segment, Block):
            lines = ([text for _, text in segment.solution] if segment.part in kept
                     else list(segment.stub or []))
            out.extend(lines)
            swallow_blank = not lines and (not out or not out[-1].strip())
            continue
        if swallow_blank and not segment.strip():
            swallow_blank = False
            continue
        swallow_blank = False
        out.append(segment)
    return "\n".join(out) + ("\n" if parsed.trailing_newline and out else "")
