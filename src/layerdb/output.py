"""Renderers shared by commands: ``table`` (for people, drawn here in plain text), ``json``
(an array of objects), ``csv``; ``write_result`` writes a result to a ``.csv`` or ``.json``
file (a ``.parquet`` file is written by the catalog, ``Catalog.copy_to_parquet``).

Tables follow docker's and dive's conventions: sizes in size-like columns are human (``121 MB``,
powers of 1000 as ``docker images``), digests are cut to 12 hex digits, and control characters
(ESC, CR/LF, bidirectional overrides) are shown escaped, so a hostile ref, label, path or
``created_by`` cannot act on the terminal. ``no_trunc`` keeps full digests and exact numbers
(still escaped). JSON and CSV are exact: full digests, exact numbers, text as stored.
"""
from __future__ import annotations

import base64
import csv
import datetime
import decimal
import json
import re
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

# C0 and C1 controls, DEL, the bidirectional embeddings/overrides/isolates and marks, and the
# Unicode line and paragraph separators: what a terminal may act on or display misleadingly.
_CONTROLS = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_DIGEST = re.compile(r"^(sha256:)?([0-9a-f]{64})$")
_SIZE_COLUMN = re.compile(r"(^|_)(size|bytes)($|_)")


def _escape(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def printable(text: str) -> str:
    """``text`` with every control character shown as an escape (``\\x1b``, ``\\u202e``):
    safe to print on a terminal. Lossy by design: for people, not for identity."""
    return _CONTROLS.sub(_escape, text)


def has_controls(text: str, allow: str = "") -> bool:
    """Whether ``text`` holds a control character other than those in ``allow``."""
    return any(c not in allow for c in _CONTROLS.findall(text))


def _plain(v: Any) -> Any:
    """A JSON-ready value."""
    if isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        try:
            return b.decode("utf-8")
        except UnicodeDecodeError:
            return "base64:" + base64.b64encode(b).decode()
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, (datetime.datetime, datetime.date, datetime.time)):
        return v.isoformat()
    if isinstance(v, decimal.Decimal):
        return float(v)
    if isinstance(v, datetime.timedelta):
        return v.total_seconds()
    return v


def _exact(v: Any) -> str:
    """A CSV cell: the value as stored (floats in full)."""
    if v is None:
        return ""
    v = _plain(v)
    if isinstance(v, (list, dict)):
        return json.dumps(v, ensure_ascii=False)
    return str(v)


def human_size(n: float) -> str:
    """Bytes as ``docker images`` shows them: three significant digits, powers of 1000
    (``0 B``, ``512 B``, ``5.59 kB``, ``121 MB``, ``1.23 GB``)."""
    sign = "-" if n < 0 else ""
    n = abs(n)
    units = ("B", "kB", "MB", "GB", "TB", "PB", "EB")
    i = 0
    while i < len(units) - 1 and float(f"{n:.3g}") >= 1000:
        n /= 1000
        i += 1
    if i == 0:
        return f"{sign}{int(n)} B"
    return f"{sign}{float(f'{n:.3g}'):g} {units[i]}"


def _cell(v: Any, column: str = "", no_trunc: bool = True) -> str:
    """A table cell: human sizes and short digests unless ``no_trunc``; controls escaped."""
    if v is None:
        return ""
    if not no_trunc:
        if (isinstance(v, int) and not isinstance(v, bool) and _SIZE_COLUMN.search(column.lower())):
            return human_size(v)
        if isinstance(v, str):
            m = _DIGEST.match(v)
            if m:
                return m.group(2)[:12]
    if isinstance(v, float):
        text = (f"{v:.4g}" if abs(v) < 1e15 else str(v)) if not no_trunc else repr(v)
    else:
        v = _plain(v)
        if isinstance(v, list) and not no_trunc:
            v = [_DIGEST.sub(lambda m: m.group(2)[:12], x) if isinstance(x, str) else x for x in v]
        text = json.dumps(v, ensure_ascii=False) if isinstance(v, (list, dict)) else str(v)
    return printable(text)


def _json(columns: Sequence[str], rows: Iterable[Sequence[Any]], out: TextIO) -> None:
    """``json.dump([{column: value}...], ensure_ascii=False, indent=2)``, the same bytes, a row
    at a time: no list of every row as a dict, and each scalar through the C encoder (the
    indenting encoder is pure Python: a million-row diff took a minute and 400 MB more)."""
    if len(set(columns)) != len(columns) or not columns:  # a later column wins its key
        json.dump([{c: _plain(v) for c, v in zip(columns, r)} for r in rows], out,
                  ensure_ascii=False, indent=2)
        return
    keys = ["\n    " + json.dumps(c, ensure_ascii=False) + ": " for c in columns]
    start = "[\n  {"
    for r in rows:
        parts = []
        for k, v in zip(keys, r):
            v = _plain(v)
            if isinstance(v, (list, dict)) and v:
                text = json.dumps(v, ensure_ascii=False, indent=2).replace("\n", "\n    ")
            else:
                text = json.dumps(v, ensure_ascii=False)
            parts.append(k + text)
        out.write(start + ",".join(parts) + "\n  }")
        start = ",\n  {"
    out.write("[]" if start == "[\n  {" else "\n]")


def render(columns: Sequence[str], rows: Sequence[Sequence[Any]], fmt: str, out: TextIO,
           no_trunc: bool = False) -> None:
    """Write ``rows`` as ``fmt``. ``no_trunc`` (tables only): full digests, exact numbers."""
    if fmt == "json":
        _json(columns, rows, out)
        out.write("\n")
    elif fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(columns)
        for r in rows:
            w.writerow([_exact(v) for v in r])
    else:
        cells = [[_cell(v, c, no_trunc) for c, v in zip(columns, r)] for r in rows]
        heads = [printable(c.upper()) for c in columns]
        widths = [len(c) for c in heads]
        for r in cells:
            for i, v in enumerate(r):
                widths[i] = max(widths[i], len(v))
        line = "  ".join(c.ljust(w) for c, w in zip(heads, widths)).rstrip()
        out.write(line + "\n")
        for r in cells:
            out.write("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() + "\n")


def output_kind(output: str) -> str:
    """``parquet``, ``csv`` or ``json`` from a file name's suffix; ``UsageError`` otherwise."""
    import os

    from .errors import UsageError

    ext = os.path.splitext(output)[1].lower()
    if ext not in (".parquet", ".csv", ".json"):
        raise UsageError(f"{output}: unknown output type (use .parquet, .csv or .json)")
    return ext[1:]


def write_result(columns: Sequence[str], rows: Sequence[Sequence[Any]], output: str) -> None:
    """Write a result to ``output`` as CSV or JSON by its suffix (exact values)."""
    kind = output_kind(output)
    if kind == "parquet":
        from .errors import UsageError

        raise UsageError(f"{output}: Parquet is written by the catalog (copy_to_parquet)")
    with open(output, "w", encoding="utf-8", newline="") as f:
        render(columns, rows, kind, f)


def human_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return str(n)
