"""Strings from outside (file names, labels, sources) made safe to print or store.

One rule, used by every terminal writer of the CLI and by the line formats of ``hashmatch
hash`` (``hash,quality,path``, ``pdq <hex> path``):

- a backslash is written ``\\\\``;
- newline, carriage return and tab are written ``\\n``, ``\\r``, ``\\t``; other control
  characters (C0, DEL, C1) ``\\xNN``;
- a byte of a file name that is not valid UTF-8 (Python keeps it as a lone surrogate,
  ``os.fsdecode``'s ``surrogateescape``) is written ``\\xNN``, its byte value;
- invisible formatting characters that can reorder or hide text on a terminal
  (bidirectional overrides and isolates such as U+202E, zero-width characters, BOM) are
  written ``\\uNNNN``.

Everything else (accents, Arabic, Chinese, emoji) is printed as is. A printed name is
therefore always one line, and it shows what the bytes really are.

Stored paths (:func:`storable`) only get the ``\\xNN`` treatment of undecodable bytes: the
store keeps text (UTF-8), so such a name is kept in that readable, escaped form.
"""
from __future__ import annotations

import unicodedata

_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _is_surrogate(code: int) -> bool:
    return 0xDC80 <= code <= 0xDCFF


def storable(text: str) -> str:
    """``text`` with undecodable file-name bytes (surrogateescape) as ``\\xNN``: encodable
    as UTF-8, so a store or a JSON file can keep it."""
    if text is None:
        return text
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    out = []
    for ch in text:
        code = ord(ch)
        if _is_surrogate(code):
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF:
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def safe(value) -> str:
    """``value`` as text that prints as exactly one line and cannot control the terminal."""
    text = "" if value is None else str(value)
    if text.isprintable() and "\\" not in text:
        return text  # the common case, fast
    out = []
    for ch in text:
        code = ord(ch)
        if ch in _NAMED:
            out.append(_NAMED[ch])
        elif code < 0x20 or 0x7F <= code < 0xA0:
            out.append(f"\\x{code:02x}")
        elif _is_surrogate(code):
            out.append(f"\\x{code - 0xDC00:02x}")
        elif 0xD800 <= code <= 0xDFFF or unicodedata.category(ch) in ("Cf", "Zl", "Zp", "Co",
                                                                        "Cn"):
            out.append(f"\\u{code:04x}" if code <= 0xFFFF else f"\\U{code:08x}")
        else:
            out.append(ch)
    return "".join(out)


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal: East Asian wide/full-width characters take two,
    combining marks none."""
    total = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        total += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return total


def ljust(text: str, columns: int) -> str:
    return text + " " * max(0, columns - width(text))


def rjust(text: str, columns: int) -> str:
    return " " * max(0, columns - width(text)) + text


def shorten(text: str, columns: int, keep_end: bool = True) -> str:
    """``text`` cut to ``columns`` with "...": for paths the end (the file name) is kept."""
    if width(text) <= columns:
        return text
    if columns <= 3:
        return "..."[:columns]
    if keep_end:
        out, used = [], 3
        for ch in reversed(text):
            w = width(ch)
            if used + w > columns:
                break
            out.append(ch)
            used += w
        return "..." + "".join(reversed(out))
    out, used = [], 3
    for ch in text:
        w = width(ch)
        if used + w > columns:
            break
        out.append(ch)
        used += w
    return "".join(out) + "..."


def csv_field(text: str) -> str:
    """One field of a ``hash,quality,path`` line: :func:`safe` (so one line), then quoted as
    RFC 4180 says when it holds a comma or a double quote (quotes doubled)."""
    text = safe(text)
    if any(c in text for c in ',"') or text != text.strip():
        return '"' + text.replace('"', '""') + '"'
    return text


def from_storable(text: str) -> str:
    """The file name :func:`storable` came from (``\\xNN`` of bytes >= 0x80 back to the
    surrogates ``os.fsencode`` turns into those bytes), to open the file again."""
    import re

    return re.sub(r"\\x([89a-f][0-9a-f])", lambda m: chr(0xDC00 + int(m.group(1), 16)), text)
