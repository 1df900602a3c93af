"""Named reports: one ``queries/<name>.sql`` file each, loaded and run here.

A report's leading ``--`` lines are its help (the first is the summary). Lines of the form
``-- @param NAME DEFAULT`` declare a parameter and its default (``null`` for none; a parameter
with no ``@param`` line is required). In the SQL a parameter is written ``:NAME``. The
parameter ``image`` is special: ``--image REF`` resolves REF to an image id and binds it
(NULL means every image).

A file whose name starts with ``_`` is not a report but a fragment several reports share: the
common table expressions after its leading ``--`` lines. A report's line
``-- @include _NAME: cte, cte, ...`` (inside its ``with``, the names in the order the fragment
defines them) stands for ``queries/_NAME.sql``'s text and a comma; the report's ``body`` and
``--sql`` carry the text in its place (DuckDB's line numbers past it count the fragment's lines).

- ``list_reports()`` / ``get_report(name)`` / ``load(path)``: the ``Report`` values;
- ``run_report(name, params)``: its (columns, rows) over the catalog;
- ``inline_sql(name, params)``: a report's SQL with its parameters written in, ready for
  ``layerdb sql``; ``to_duckdb(sql)``: ``:name`` parameters as DuckDB's ``$name``;
- ``parse_value(text)``: a parameter's text as SQL reads it (numbers, ``null``, text);
- ``describe(report)`` / ``summaries(reports)``: what ``layerdb report`` prints about them.

dive's CI rules over the ``efficiency`` report are in ``dive_rules``; image diff in ``diff``.
"""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReportError

_PARAM = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)")
_DECL = re.compile(r"^--\s*@param\s+([A-Za-z_][A-Za-z0-9_]*)(?:\s+(.*))?$")
_INCLUDE = re.compile(r"^--\s*@include\s+([^\s:]+)\s*:(.*)$")
_CTE = re.compile(r"^([A-Za-z_][A-Za-z0-9_]*)\s+as\s+(?:not\s+)?(?:materialized\s+)?\(", re.I)


def queries_dir() -> Path:
    """Where the reports are: ``$LAYERDB_QUERIES``, the installed package's ``queries/``, or
    the source checkout's top-level ``queries/`` (editable installs)."""
    from .settings import settings

    env = settings().queries_dir
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
    body: str = ""  # the SQL as written, with :name parameters

    @property
    def summary(self) -> str:
        return self.help.splitlines()[0] if self.help else ""


def _convert(sql: str, where: str,
             replace: Callable[[str], str] | None = None) -> tuple[str, list[str]]:
    """Turn ``:name`` parameters into DuckDB's ``$name``, skipping strings, quoted names,
    comments, ``::`` casts and list slices (``x[1:n]``: a colon right after a name, a number
    or ``]`` is not a parameter)."""
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
            # a colon right after a name, number or ] is a list slice (``parts[1:i]``)
            if not m or (i > 0 and (sql[i - 1].isalnum() or sql[i - 1] in "_]")):
                out.append(ch)
                i += 1
                continue
            names.append(m.group(1))
            out.append(replace(m.group(1)) if replace else "$" + m.group(1))
            i = m.end()
        else:
            out.append(ch)
            i += 1
    return "".join(out), list(dict.fromkeys(names))


def to_duckdb(sql: str) -> str:
    """``sql`` with its ``:name`` parameters written as DuckDB's ``$name`` (what ``layerdb sql``
    needs to run a report's text as it is written)."""
    return _convert(sql, "query")[0]


def parse_value(text: str | None) -> Any:
    """A parameter's text as SQL gets it: ``null`` or empty is NULL, numbers are numbers (a
    version such as ``3.10`` stays text), quotes around text are dropped."""
    if text is None or text.strip().lower() in ("", "null"):
        return None
    t = text.strip()
    for conv in (int, float):
        try:
            v = conv(t)
        except ValueError:
            continue
        # a version such as 3.10 is not the number 3.1: keep the text when a plain decimal
        # does not read back the same
        if conv is float and repr(v) != t and re.fullmatch(r"[0-9]+\.[0-9]+", t):
            return t
        return v
    return t.strip("'\"")


def _read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as e:
        raise ReportError(f"{path}: {e.strerror}") from e


def _fragment(path: Path, line: int, name: str, listed: list[str]) -> tuple[str, str]:
    """The text ``-- @include NAME: listed`` at ``path:line`` stands for: the common table
    expressions of ``queries/NAME.sql`` (its leading ``--`` lines dropped) and a comma; and the
    file's name, for errors."""
    where = f"{path}:{line}"
    if not re.fullmatch(r"_[A-Za-z0-9_-]+", name):
        raise ReportError(f"{where}: @include takes a fragment's name, which starts with _ "
                          f"(not {name!r})")
    frag = path.parent / f"{name}.sql"
    if not frag.is_file():
        raise ReportError(f"{where}: no fragment {frag.name} beside the report")
    lines = _read(frag).splitlines(keepends=True)
    start = next((i for i, t in enumerate(lines) if not t.strip().startswith("--")), len(lines))
    if any(t.strip().startswith("-- @") for t in lines[:start]) or \
            any(_INCLUDE.match(t.strip()) for t in lines[start:]):
        raise ReportError(f"{frag}: a fragment has no directives (its report has the parameters)")
    text = "".join(lines[start:]).strip().rstrip(";").rstrip()
    defined = [m.group(1) for t in text.splitlines() if (m := _CTE.match(t))]
    if not defined:
        raise ReportError(f"{frag}: a fragment is common table expressions (NAME as (...), ...)")
    if listed != defined:
        raise ReportError(f"{where}: {frag.name} defines {', '.join(defined)} "
                          f"(the @include line lists {', '.join(listed) or 'none'})")
    return text + ",\n", str(frag)


def _pieces(body: str, path: Path, first_line: int) -> list[tuple[str, str]]:
    """``body`` as (text, file) pieces, each ``-- @include`` line followed by its fragment."""
    out: list[tuple[str, str]] = []
    own: list[str] = []
    for i, line in enumerate(body.splitlines(keepends=True)):
        own.append(line)
        m = _INCLUDE.match(line.strip())
        if m:
            listed = [n for n in re.split(r"[\s,]+", m.group(2)) if n]
            frag, where = _fragment(path, first_line + i, m.group(1), listed)
            out += [("".join(own), str(path)), (frag, where)]
            own = []
    if own or not out:
        out.append(("".join(own), str(path)))
    return out


def load(path: Path) -> Report:
    text = _read(path)
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
            defaults[m.group(1)] = parse_value(m.group(2))
        elif s.startswith("-- @"):
            raise ReportError(f"{path}:{i + 1}: unknown directive {s[3:].split()[0]!r}")
        else:
            help_lines.append(s[2:].strip())
    else:
        body_start = len(lines)
    body = "".join(lines[body_start:]).strip().rstrip(";")
    if not body:
        raise ReportError(f"{path}:{body_start + 1}: the report has no SQL")
    sql, names = "", []
    pieces = _pieces(body, path, body_start + 1)
    for piece, where in pieces:  # a fragment's errors name the fragment
        converted, found = _convert(piece, where)
        sql += converted
        names += [n for n in found if n not in names]
    body = "".join(piece for piece, _ in pieces)
    # line numbers in errors count from the top of the file
    sql = "\n" * body_start + sql
    for d in defaults:
        if d not in names:
            raise ReportError(f"{path}: @param {d} is declared but not used")
    # declared parameters in their @param order, then the required ones as they appear
    names = [d for d in defaults] + [n for n in names if n not in defaults]
    return Report(path.stem, str(path), "\n".join(help_lines).strip(), sql, tuple(names), defaults,
                  body)


def list_reports() -> list[Report]:
    return [load(p) for p in _report_files()]


def _report_files() -> list[Path]:
    """queries/*.sql but the fragments (``_NAME.sql``) reports include."""
    return [p for p in sorted(queries_dir().glob("*.sql")) if not p.name.startswith("_")]


def get_report(name: str) -> Report:
    p = queries_dir() / f"{name}.sql"
    if name.startswith("_") or not p.is_file():
        names = ", ".join(r.stem for r in _report_files())
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


def _given(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: parse_value(v) if isinstance(v, str) else v for k, v in (params or {}).items()}


def _resolve_values(report: Report, cat: Any, params: dict[str, Any] | None,
                    image: str | None, platform: str | None) -> dict[str, Any]:
    given = _given(params)
    raw = (params or {}).get("image")
    if image is None and isinstance(raw, str) and given.get("image") is not None:
        image = raw  # -p image REF means --image REF (REF as written: "1234" is an id prefix)
    if image is not None:
        if "image" not in report.params:
            raise ReportError(f"report {report.name} does not take --image")
        given["image"] = cat.resolve_image(image, platform).id
    return bind(report, given)


def run_report(name: str, params: dict[str, Any] | None = None, image: str | None = None,
               catalog_root: str | None = None, platform: str | None = None,
               catalog: Any = None) -> tuple[list[str], list[tuple]]:
    """Run report ``name``; return (columns, rows). ``image`` (a ref or id) binds ``:image``."""
    from .catalog import Catalog

    report = get_report(name)
    own = catalog is None
    cat = catalog or Catalog(catalog_root)
    try:
        return cat.query(report.sql, _resolve_values(report, cat, params, image, platform))
    finally:
        if own:
            cat.close()


def iter_report(name: str, params: dict[str, Any] | None, catalog: Any, image: str | None = None,
                platform: str | None = None) -> tuple[list[str], Any]:
    """``run_report`` on an open ``catalog``, the rows an iterator fetched as it is read (read
    them before the catalog's next query or close): a big result is not held in memory."""
    report = get_report(name)
    return catalog.query_iter(report.sql, _resolve_values(report, catalog, params, image, platform))


def _literal(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    return "'" + str(v).replace("'", "''") + "'"


def inline_sql(name: str, params: dict[str, Any] | None = None, image: str | None = None,
               catalog_root: str | None = None, platform: str | None = None,
               catalog: Any = None) -> str:
    """Report ``name``'s SQL with every parameter written in as a literal (given values, else
    the defaults): what ``layerdb sql`` runs to give the same result."""
    report = get_report(name)
    if image is None and _given(params).get("image") is None:
        values = bind(report, _given(params))
    else:
        from .catalog import Catalog

        own = catalog is None
        cat = catalog or Catalog(catalog_root)
        try:
            values = _resolve_values(report, cat, params, image, platform)
        finally:
            if own:
                cat.close()
    # a block comment, not "--" lines: the text goes on a command line (layerdb sql "$(...)")
    head = "/* layerdb report " + report.name + ": " + report.help.replace("*/", "* /") + " */\n"
    sql, _ = _convert(report.body, report.path, lambda n: _literal(values[n]))
    return head + sql + "\n"


def describe(report: Report) -> str:
    """A report's full help, parameters and defaults, as ``layerdb report NAME --describe``
    prints them."""
    lines = [f"{report.name}: {report.help or '(no help)'}", ""]
    if report.params:
        lines.append("parameters:")
        for p in report.params:
            if p in report.defaults:
                d = report.defaults[p]
                how = "all images, or --image REF" if p == "image" else \
                    f"default {'null' if d is None else d}"
            else:
                how = "required"
            lines.append(f"  -p {p} VALUE   ({how})")
    else:
        lines.append("parameters: none")
    return "\n".join(lines)


def summaries(reports: Sequence[Report]) -> tuple[list[str], list[tuple]]:
    """(columns, rows) for ``layerdb report --list``."""
    return (["name", "params", "summary"],
            [(r.name, ", ".join(r.params), r.summary) for r in reports])
