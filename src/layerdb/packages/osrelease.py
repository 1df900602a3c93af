"""``/etc/os-release`` and ``/usr/lib/os-release``: the distribution (``ID``, ``VERSION_ID``),
kept as an ``os`` row so the ``packages`` view can name the distro in OS packages' purls."""
from __future__ import annotations

from .records import Blob, Package, lines, text

LIMIT = 64 << 10


def _unquote(v: str) -> str:
    v = v.strip()
    if len(v) >= 2 and v[0] == v[-1] and v[0] in "\"'":
        v = v[1:-1]
    return v


def parse(blob: Blob) -> list[Package]:
    fields: dict[str, str] = {}
    for line in lines(blob.chunks(LIMIT), max_line=LIMIT):
        k, sep, v = text(line).partition("=")
        if sep and k in ("ID", "VERSION_ID", "VERSION_CODENAME"):
            fields[k] = _unquote(v)
    if not fields.get("ID"):
        return []
    return [Package("os", fields["ID"].lower(), fields.get("VERSION_ID", ""), blob.path,
                    fields.get("VERSION_CODENAME") or None)]
