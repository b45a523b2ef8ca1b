"""A reader for the small part of TOML that a rubric uses, so the grader runs on Python 3.8+
(``tomllib`` arrived in 3.11; Gradescope's Ubuntu 22.04 image has 3.10).

Supported, exactly as TOML defines them: ``# comments``; table headers ``[a.b]`` with bare or
quoted keys; ``key = value`` lines with bare or quoted keys; values that are basic strings
(``"..."`` with the usual escapes), literal strings (``'...'``), integers, floats, booleans,
and arrays of those (also spread over several lines, trailing comma allowed). Anything else
(inline tables, dates, multi-line strings, dotted keys on the left) is rejected with the line
number, so a rubric never means one thing here and another in a full TOML reader.
"""

from __future__ import annotations

import re
from typing import Any, Dict, List, Tuple

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_INTEGER = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)")
_FLOAT = re.compile(r"[+-]?(0|[1-9](_?[0-9])*)(\.[0-9](_?[0-9])*)?([eE][+-]?[0-9](_?[0-9])*)?")
_ESCAPES = {"b": "\b", "t": "\t", "n": "\n", "f": "\f", "r": "\r", '"': '"', "\\": "\\"}


class TomlError(ValueError):
    """The text is not TOML, or uses a part of TOML this reader does not support."""


def loads(text: str) -> Dict[str, Any]:
    """Parses @p text into nested dicts; raises TomlError naming the line."""
    return _Reader(text).document()


class _Reader:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    # -- positions and errors ---------------------------------------------------------------

    def line(self) -> int:
        return self.text.count("\n", 0, self.pos) + 1

    def error(self, message: str) -> TomlError:
        return TomlError(f"line {self.line()}: {message}")

    def peek(self) -> str:
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def skip_blanks(self) -> None:
        """Spaces and tabs (not newlines)."""
        while self.peek() in (" ", "\t") and self.peek():
            self.pos += 1

    def skip_comment(self) -> None:
        if self.peek() == "#":
            end = self.text.find("\n", self.pos)
            self.pos = len(self.text) if end < 0 else end

    def end_of_line(self) -> None:
        """Blanks, an optional comment, then a newline or the end of the text."""
        self.skip_blanks()
        self.skip_comment()
        if self.text.startswith("\r\n", self.pos):
            self.pos += 2
        elif self.peek() == "\n":
            self.pos += 1
        elif self.peek():
            raise self.error(f"unexpected {self.peek()!r} after the value")

    def skip_space_and_comments(self) -> None:
        """Whitespace, newlines and comments (between array items)."""
        while True:
            self.skip_blanks()
            self.skip_comment()
            if self.peek() in ("\n", "\r") and self.peek():
                self.pos += 1
            else:
                return

    # -- structure -----------------------------------------------------------------------------

    def document(self) -> Dict[str, Any]:
        root: Dict[str, Any] = {}
        table = root
        defined = set()
        while self.pos < len(self.text):
            self.skip_blanks()
            char = self.peek()
            if char in ("#", "\n", "\r") or not char:
                self.end_of_line()
            elif char == "[":
                if self.text.startswith("[[", self.pos):
                    raise self.error("arrays of tables ([[...]]) are not supported")
                self.pos += 1
                path = self.key_path("]")
                if path in defined:
                    raise self.error(f"table [{'.'.join(path)}] defined twice")
                defined.add(path)
                table = root
                for part in path:
                    table = table.setdefault(part, {})
                    if not isinstance(table, dict):
                        raise self.error(f"[{'.'.join(path)}]: {part!r} is already a value")
                self.end_of_line()
            else:
                key = self.key()
                self.skip_blanks()
                if self.peek() == ".":
                    raise self.error("dotted keys on the left of '=' are not supported")
                if self.peek() != "=":
                    raise self.error(f"expected '=' after {key!r}")
                self.pos += 1
                self.skip_blanks()
                if key in table:
                    raise self.error(f"key {key!r} defined twice")
                table[key] = self.value()
                self.end_of_line()
        return root

    def key_path(self, closing: str) -> Tuple[str, ...]:
        parts: List[str] = []
        while True:
            self.skip_blanks()
            parts.append(self.key())
            self.skip_blanks()
            if self.peek() == ".":
                self.pos += 1
            elif self.peek() == closing:
                self.pos += 1
                return tuple(parts)
            else:
                raise self.error(f"expected '.' or '{closing}' in a table header")

    def key(self) -> str:
        char = self.peek()
        if char == '"':
            return self.basic_string()
        if char == "'":
            return self.literal_string()
        match = _BARE_KEY.match(self.text, self.pos)
        if not match:
            raise self.error(f"expected a key, found {char!r}" if char else "expected a key")
        self.pos = match.end()
        return match.group()

    # -- values ----------------------------------------------------------------------------------

    def value(self) -> Any:
        char = self.peek()
        if char == '"':
            if self.text.startswith('"""', self.pos):
                raise self.error('multi-line strings (""") are not supported')
            return self.basic_string()
        if char == "'":
            if self.text.startswith("'''", self.pos):
                raise self.error("multi-line strings (''') are not supported")
            return self.literal_string()
        if char == "[":
            return self.array()
        if char == "{":
            raise self.error("inline tables ({...}) are not supported")
        for word, result in (("true", True), ("false", False)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return result
        return self.number()

    def number(self) -> Any:
        match = _FLOAT.match(self.text, self.pos)
        if not match or match.end() == self.pos:
            raise self.error(f"expected a value, found {self.peek()!r}" if self.peek()
                             else "expected a value")
        token = match.group()
        following = self.text[match.end():match.end() + 1]
        if following and (following.isalnum() or following in "_.:-+"):
            raise self.error(f"unsupported value starting {self.text[self.pos:self.pos + 12]!r}")
        self.pos = match.end()
        clean = token.replace("_", "")
        return int(clean, 10) if _INTEGER.fullmatch(token) else float(clean)

    def basic_string(self) -> str:
        self.pos += 1  # the opening quote
        out = []
        while True:
            char = self.peek()
            if not char or char in ("\n", "\r"):
                raise self.error("unterminated string")
            self.pos += 1
            if char == '"':
                return "".join(out)
            if char == "\\":
                code = self.peek()
                self.pos += 1
                if code in _ESCAPES:
                    out.append(_ESCAPES[code])
                elif code in ("u", "U"):
                    width = 4 if code == "u" else 8
                    digits = self.text[self.pos:self.pos + width]
                    if len(digits) != width or not all(c in "0123456789abcdefABCDEF" for c in digits):
                        raise self.error(f"bad \\{code} escape")
                    out.append(chr(int(digits, 16)))
                    self.pos += width
                else:
                    raise self.error(f"unknown escape \\{code}")
            elif ord(char) < 0x20 and char != "\t" or char == "\x7f":
                raise self.error("control character in a string")
            else:
                out.append(char)

    def literal_string(self) -> str:
        self.pos += 1
        end = self.pos
        while end < len(self.text) and self.text[end] not in ("'", "\n", "\r"):
            end += 1
        if end >= len(self.text) or self.text[end] != "'":
            raise self.error("unterminated string")
        value = self.text[self.pos:end]
        self.pos = end + 1
        return value

    def array(self) -> List[Any]:
        self.pos += 1  # [
        items: List[Any] = []
        while True:
            self.skip_space_and_comments()
            if self.peek() == "]":
                self.pos += 1
                return items
            if not self.peek():
                raise self.error("unterminated array")
            items.append(self.value())
            self.skip_space_and_comments()
            if self.peek() == ",":
                self.pos += 1
            elif not self.peek():
                raise self.error("unterminated array")
            elif self.peek() != "]":
                raise self.error("expected ',' or ']' in an array")
