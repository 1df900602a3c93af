"""Named reports: one ``queries/<name>.sql`` file each.

A report's leading ``--`` lines are its help (the first is the summary). Lines of the form
``-- @param NAME DEFAULT`` declare a parameter and its default (``null`` for none; a parameter
with no ``@param`` line is required). In the SQL a parameter is written ``:NAME``. The
parameter ``image`` is special: ``--image REF`` resolves REF to an image id and binds it
(NULL means every image).

Beside the loader, the library side of ``layerdb report``, ``check`` and ``diff``: each
returns plain data (dicts, dataclasses) and never prints.

- ``efficiency(image)``: the ``efficiency`` report as one dict per image;
- ``load_rules(...)`` / ``parse_dive_ci(text)`` / ``parse_bytes(text)`` and
  ``check_rules(summary, rules)``: dive's CI rules (``.dive-ci``) judged on those dicts;
- ``diff_images(a, b)``: the ``diff`` report between two resolved images, with totals;
- ``inline_sql(name, params)``: a report's SQL with its parameters written in, ready for
  ``layerdb sql``; ``to_duckdb(sql)``: ``:name`` parameters as DuckDB's ``$name``.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import ReportError, UsageError

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


def _value(text: str | None) -> Any:
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
    # declared parameters in their @param order, then the required ones as they appear
    names = [d for d in defaults] + [n for n in names if n not in defaults]
    return Report(path.stem, str(path), "\n".join(help_lines).strip(), sql, tuple(names), defaults,
                  body)


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


def _given(params: dict[str, Any] | None) -> dict[str, Any]:
    return {k: _value(v) if isinstance(v, str) else v for k, v in (params or {}).items()}


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


# Efficiency and dive's CI rules ----------------------------------------------------------------

#: The keys every ``efficiency`` row has (see queries/efficiency.sql).
EFFICIENCY_KEYS = ("image", "image_id", "size_bytes", "user_size_bytes", "efficiency",
                   "efficiency_dive", "wasted_bytes", "wasted_bytes_dive",
                   "wasted_user_percent", "wasted_user_percent_dive")


def efficiency(image: str | None = None, catalog_root: str | None = None,
               platform: str | None = None, catalog: Any = None) -> list[dict[str, Any]]:
    """The ``efficiency`` report as one dict per image (every image when ``image`` is None)."""
    cols, rows = run_report("efficiency", image=image, catalog_root=catalog_root,
                            platform=platform, catalog=catalog)
    return [dict(zip(cols, r)) for r in rows]


#: dive's rule names and defaults (``None``: disabled), in dive's order.
RULES: dict[str, str | None] = {
    "lowest-efficiency": "0.9",
    "highest-wasted-bytes": None,
    "highest-user-wasted-percent": "0.1",
}

_UNITS = {"": 1, "b": 1}
for _i, _p in enumerate("kmgtpe", start=1):
    _UNITS[_p] = _UNITS[_p + "b"] = 1000 ** _i
    _UNITS[_p + "i"] = _UNITS[_p + "ib"] = 1024 ** _i
_SIZE = re.compile(r"^\s*([0-9]+(?:\.[0-9]*)?|\.[0-9]+)\s*([a-z]*)\s*$", re.IGNORECASE)


def parse_bytes(text: str) -> int:
    """A size the way dive (go-humanize) reads it: ``20MB`` = 20,000,000, ``20MiB`` =
    20,971,520, ``1.5 kb``, ``512`` (bytes). Raises ``UsageError``."""
    m = _SIZE.match(str(text))
    unit = m.group(2).lower() if m else None
    if not m or unit not in _UNITS:
        raise UsageError(f"{text!r} is not a size (like 20MB, 512KiB or 1000)")
    return int(float(m.group(1)) * _UNITS[unit])


def _size(key: str, text: str) -> int:
    try:
        return parse_bytes(text)
    except UsageError as e:
        raise UsageError(f"{key}: {e}") from None


def _ratio(key: str, text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise UsageError(f"{key}: {text!r} is not a number (a ratio such as 0.9)") from None
    if v != v or v < 0:
        raise UsageError(f"{key}: {text!r} must be a ratio of at least 0")
    return v


@dataclass(frozen=True)
class Rules:
    """dive's CI thresholds; ``None`` disables a rule. ``source`` names where they came from."""

    lowest_efficiency: float | None = 0.9
    highest_wasted_bytes: int | None = None
    highest_user_wasted_percent: float | None = 0.1
    source: str = "defaults"


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "'\"":
        return v[1:-1]
    return v


def _strip_comment(line: str) -> str:
    quote = ""
    for i, ch in enumerate(line):
        if quote:
            if ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def parse_dive_ci(text: str, where: str = ".dive-ci") -> dict[str, str]:
    """The rules of a ``.dive-ci`` file: the small YAML subset dive documents, ``rules:``
    then indented ``key: value`` lines (comments, quotes and blank lines allowed). Returns
    rule name -> value as written (``disabled`` included). Other top-level sections are
    ignored; an unknown rule name or a line that is not ``key: value`` is an error."""
    out: dict[str, str] = {}
    section = None
    for n, raw in enumerate(text.splitlines(), start=1):
        line = _strip_comment(raw).rstrip()
        if not line.strip() or line.strip() == "---":
            continue
        lead = line[: len(line) - len(line.lstrip())]
        if "\t" in lead:
            raise UsageError(f"{where}:{n}: tabs are not allowed for indentation in YAML")
        key, sep, value = line.strip().partition(":")
        if not sep or not key.strip():
            raise UsageError(f"{where}:{n}: expected 'key: value', got {raw.strip()!r}")
        key, value = _unquote(key), value.strip()
        if not lead:
            section = key
            if key == "rules" and value not in ("", "{}"):
                raise UsageError(f"{where}:{n}: 'rules:' must be followed by indented "
                                 "'rule: value' lines")
            continue
        if section != "rules":
            continue
        if key not in RULES:
            raise UsageError(f"{where}:{n}: unknown rule {key!r} (rules: {', '.join(RULES)})")
        out[key] = _unquote(value)
    return out


def load_rules(config: str | None = None, overrides: dict[str, str | None] | None = None,
               default_config: str | None = ".dive-ci") -> Rules:
    """dive's rules: the defaults, then a ``.dive-ci`` file (``config``, else
    ``default_config`` when that file exists), then ``overrides`` (rule name -> value,
    ``None`` meaning not given). A value may be ``disabled``."""
    values: dict[str, str | None] = dict(RULES)
    source = "defaults"
    path = config or (default_config if default_config and os.path.isfile(default_config)
                      else None)
    if path:
        try:
            with open(path, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise UsageError(f"{path}: {e.strerror}") from e
        values.update(parse_dive_ci(text, path))
        source = path
    for k, v in (overrides or {}).items():
        if k not in RULES:
            raise UsageError(f"unknown rule {k!r} (rules: {', '.join(RULES)})")
        if v is not None:
            values[k] = v

    def on(k: str) -> str | None:
        v = values[k]
        return None if v is None or str(v).strip().lower() == "disabled" else str(v).strip()

    eff, wasted, pct = (on(k) for k in RULES)
    return Rules(
        lowest_efficiency=None if eff is None else _ratio("lowest-efficiency", eff),
        highest_wasted_bytes=None if wasted is None else _size("highest-wasted-bytes", wasted),
        highest_user_wasted_percent=None if pct is None else _ratio(
            "highest-user-wasted-percent", pct),
        source=source)


@dataclass(frozen=True)
class RuleResult:
    image: str
    image_id: str
    rule: str
    status: str  # PASS, FAIL or SKIP
    value: float | None
    threshold: float | None
    message: str


def check_rules(summary: dict[str, Any], rules: Rules, dive: bool = False) -> list[RuleResult]:
    """Judge one ``efficiency`` row by dive's rules, in dive's order. ``dive=True`` judges
    dive's own figures (``*_dive``), reproducing ``dive --ci``; else layerdb's."""
    sfx = "_dive" if dive else ""
    eff = summary["efficiency" + sfx]
    wasted = summary["wasted_bytes" + sfx]
    pct = summary["wasted_user_percent" + sfx]
    img, iid = summary["image"], summary["image_id"]
    out: list[RuleResult] = []

    def add(rule: str, failed: bool, value: Any, threshold: Any, fail: str, ok: str) -> None:
        out.append(RuleResult(img, iid, rule, "FAIL" if failed else "PASS", value, threshold,
                              fail if failed else ok))

    if rules.lowest_efficiency is None:
        out.append(RuleResult(img, iid, "lowest-efficiency", "SKIP", eff, None, "rule disabled"))
    else:
        t = rules.lowest_efficiency
        add("lowest-efficiency", eff < t, eff, t,
            f"image efficiency is too low (efficiency={eff:.6g} < threshold={t:g})",
            f"efficiency={eff:.6g} >= threshold={t:g}")
    if rules.highest_wasted_bytes is None:
        out.append(RuleResult(img, iid, "highest-wasted-bytes", "SKIP", wasted, None,
                              "rule disabled"))
    else:
        t = rules.highest_wasted_bytes
        add("highest-wasted-bytes", wasted > t, wasted, t,
            f"too many bytes wasted (wasted-bytes={wasted} > threshold={t})",
            f"wasted-bytes={wasted} <= threshold={t}")
    if rules.highest_user_wasted_percent is None:
        out.append(RuleResult(img, iid, "highest-user-wasted-percent", "SKIP", pct, None,
                              "rule disabled"))
    else:
        t = rules.highest_user_wasted_percent
        shown = "inf" if pct is None else f"{pct:.6g}"
        add("highest-user-wasted-percent", pct is None or pct > t, pct, t,
            "too many bytes wasted, relative to the user bytes added "
            f"(user-wasted-percent={shown} > threshold={t:g})",
            f"user-wasted-percent={shown} <= threshold={t:g}")
    return out


def check_images(image: str | None, rules: Rules, dive: bool = False,
                 catalog_root: str | None = None, platform: str | None = None,
                 catalog: Any = None) -> tuple[list[dict[str, Any]], list[RuleResult]]:
    """``efficiency`` of ``image`` (every image when None) and each one's rule results."""
    rows = efficiency(image, catalog_root=catalog_root, platform=platform, catalog=catalog)
    if not rows:
        raise ReportError("the catalog holds no image to check")
    return rows, [r for row in rows for r in check_rules(row, rules, dive)]


# Diff ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ImageDiff:
    """``diff`` rows between two images (a -> b) and totals per change kind:
    ``totals[kind] = (paths, bytes)`` with bytes the summed size_delta (``package added``,
    ``package removed``, ``package upgraded``, ``package downgraded`` only when present)."""

    a: str
    b: str
    a_id: str
    b_id: str
    columns: list[str]
    rows: list[tuple]
    totals: dict[str, tuple[int, int]]


def diff_images(a: str, b: str, catalog_root: str | None = None,
                platform: str | None = None, catalog: Any = None) -> ImageDiff:
    """Compare the merged filesystems of images ``a`` and ``b`` (refs, ids or prefixes)."""
    from .catalog import Catalog

    own = catalog is None
    cat = catalog or Catalog(catalog_root)
    try:
        ia, ib = cat.resolve_image(a, platform), cat.resolve_image(b, platform)
        cols, rows = run_report("diff", {"a": ia.id, "b": ib.id}, catalog=cat)
    finally:
        if own:
            cat.close()
    totals: dict[str, tuple[int, int]] = {k: (0, 0) for k in ("added", "removed", "changed")}
    ci, di = cols.index("change"), cols.index("size_delta")
    for r in rows:
        n, by = totals.get(r[ci], (0, 0))  # package changes (added, upgraded...) come last
        totals[r[ci]] = (n + 1, by + int(r[di] or 0))
    return ImageDiff(ia.name, ib.name, ia.id, ib.id, cols, rows, totals)


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
