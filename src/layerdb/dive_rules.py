"""dive's CI rules (``.dive-ci``) judged on the ``efficiency`` report: the library side of
``layerdb check``. Returns plain data and never prints.

- ``efficiency(image)``: the ``efficiency`` report (``queries/efficiency.sql``) as one dict per
  image;
- ``parse_bytes(text)``: a size as dive (go-humanize) reads it;
- ``parse_dive_ci(text)``: the rules of a ``.dive-ci`` file, a small subset of YAML read here
  (no YAML library);
- ``load_rules(...)``: the defaults, then a ``.dive-ci`` file, then overrides, as ``Rules``;
- ``check_rules(summary, rules)`` / ``check_images(image, rules)``: each rule's verdict.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

from .errors import ReportError, UsageError
from .reports import run_report


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

    def skip(rule: str, value: Any) -> None:
        out.append(RuleResult(img, iid, rule, "SKIP", value, None, "rule disabled"))

    if rules.lowest_efficiency is None:
        skip("lowest-efficiency", eff)
    else:
        t = rules.lowest_efficiency
        add("lowest-efficiency", eff < t, eff, t,
            f"image efficiency is too low (efficiency={eff:.6g} < threshold={t:g})",
            f"efficiency={eff:.6g} >= threshold={t:g}")
    if rules.highest_wasted_bytes is None:
        skip("highest-wasted-bytes", wasted)
    else:
        t = rules.highest_wasted_bytes
        add("highest-wasted-bytes", wasted > t, wasted, t,
            f"too many bytes wasted (wasted-bytes={wasted} > threshold={t})",
            f"wasted-bytes={wasted} <= threshold={t}")
    if rules.highest_user_wasted_percent is None:
        skip("highest-user-wasted-percent", pct)
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
