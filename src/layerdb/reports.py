"""Named reports: one ``queries/<name>.sql`` file each.

A report's leading ``--`` lines are its help (the first is the summary). Lines of the form
``-- @param NAME DEFAULT`` declare a parameter and its default (``null`` for none; a parameter
with no ``@param`` line is required). In the SQL a parameter is written ``:NAME``. The
parameter ``image`` is special: ``--image REF`` resolves REF to an image id and binds it
(NULL means every image).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from .errors import ReportError

_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
_DECL = re.compile(r"^--\s*@param\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*))?$")


def queries_dir() -> Path:
    """Where the reports are: ``$LAYERDB_QUERIES``, the installed package's ``queries/``, or
    the source checkout's top-level ``queries/`` (editable installs)."""
    env = os.environ.get("LAYERDB_QUERIES")
    if env:
        return Path(env)
    here = Path(__file__).resolve().parent
    for cand in (here / "queries", here.parent.parent / "queries"):
        if cand.is_dir():
            return cand
    raise ReportError("cannot find the queries/ directory")


@dataclass(frozen=True)
class Report:
    name: str
    path: str
    help: str
    sql: str  # with :name already turned into $name
    params: tuple[str, ...]
    defaults: dict[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        return self.help.splitlines()[0] if self.help else ""


def _convert(sql: str, where: str) -> tuple[str, list[str]]:
    """Turn ``:name`` parameters into DuckDB's ``$name``, skipping strings, quoted names,
    comments and ``::`` casts."""
    out: list[str] = []
    names: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        ch = sql[i]
        if ch in ("'", '"'):
            j = i + 1
            while j < n:
                if sql[j] == ch:
                    if j + 1 < n and sql[j + 1] == ch:
                        j += 2
                        continue
                    break
                j += 1
            if j >= n:
                line = sql.count("\n", 0, i) + 1
                raise ReportError(f"{where}:{line}: unterminated quote")
            out.append(sql[i : j + 1])
            i = j + 1
        elif sql.startswith("--", i):
            j = sql.find("\n", i)
            j = n if j < 0 else j
            out.append(sql[i:j])
            i = j
        elif sql.startswith("::", i):
            out.append("::")
            i += 2
        elif ch == ":":
            m = _PARAM.match(sql, i)
            if not m:
                out.append(ch)
                i += 1
                continue
            names.append(m.group(1))
            out.append("$" + m.group(1))
            i = m.end()
        else:
            out.append(ch)
            i += 1
    return "".join(out), list(dict.fromkeys(names))


def _value(text: Optional[str]) -> Any:
    if text is None or text.strip().lower() in ("", "null"):
        return None
    t = text.strip()
    for conv in (int, float):
        try:
            return conv(t)
        except ValueError:
            pass
    return t.strip("'\"")


def load(path: Path) -> Report:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{path}: {e.strerror}") from e
    help_lines: list[str] = []
    defaults: dict[str, Any] = {}
    body_start = 0
    lines = text.splitlines(keepends=True)
    for i, line in enumerate(lines):
        s = line.strip()
        if not s.startswith("--"):
            body_start = i
            break
        m = _DECL.match(s)
        if m:
            defaults[m.group(1)] = _value(m.group(2))
        elif s.startswith("-- @"):
            raise ReportError(f"{path}:{i + 1}: unknown directive {s[3:].split()[0]!r}")
        else:
            help_lines.append(s[2:].strip())
    else:
        body_start = len(lines)
    body = "".join(lines[body_start:]).strip().rstrip(";")
    if not body:
        raise ReportError(f"{path}:{body_start + 1}: the report has no SQL")
    sql, names = _convert(body, str(path))
    # line numbers in errors count from the top of the file
    sql = "\n" * body_start + sql
    for d in defaults:
        if d not in names:
            raise ReportError(f"{path}: @param {d} is declared but not used")
    return Report(path.stem, str(path), "\n".join(help_lines).strip(), sql, tuple(names), defaults)


def list_reports() -> list[Report]:
    d = queries_dir()
    return [load(p) for p in sorted(d.glob("*.sql"))]


def get_report(name: str) -> Report:
    p = queries_dir() / f"{name}.sql"
    if not p.is_file():
        names = ", ".join(r.stem for r in sorted(queries_dir().glob("*.sql")))
        raise ReportError(f"no report named {name!r} (reports: {names})")
    return load(p)


def bind(report: Report, given: dict[str, Any]) -> dict[str, Any]:
    unknown = set(given) - set(report.params)
    if unknown:
        raise ReportError(f"report {report.name} has no parameter {', '.join(sorted(unknown))}"
                          f" (it takes: {', '.join(report.params) or 'none'})")
    out: dict[str, Any] = {}
    for p in report.params:
        if p in given:
            out[p] = given[p]
        elif p in report.defaults:
            out[p] = report.defaults[p]
        else:
            raise ReportError(f"report {report.name} needs -p {p} VALUE")
    return out


def run_report(name: str, params: Optional[dict[str, Any]] = None, image: Optional[str] = None,
               catalog_root: Optional[str] = None, platform: Optional[str] = None,
               catalog: Any = None) -> tuple[list[str], list[tuple]]:
    """Run report ``name``; return (columns, rows). ``image`` (a ref or id) binds ``:image``."""
    from .catalog import Catalog

    report = get_report(name)
    given = {k: _value(v) if isinstance(v, str) else v for k, v in (params or {}).items()}
    own = catalog is None
    cat = catalog or Catalog(catalog_root)
    try:
        if image is not None:
            if "image" not in report.params:
                raise ReportError(f"report {name} does not take --image")
            given["image"] = cat.resolve_image(image, platform).id
        return cat.query(report.sql, bind(report, given))
    finally:
        if own:
            cat.close()
