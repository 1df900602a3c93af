"""Package URLs (https://github.com/package-url/purl-spec): ``pkg:type/namespace/name@version
?qualifiers``, percent-encoded as the reference implementation (packageurl-python) does:
everything but unreserved characters and ``:``; qualifiers sorted by key, empty ones left out."""
from __future__ import annotations

from urllib.parse import quote


def _q(s: str) -> str:
    return quote(s, safe="").replace("%3A", ":")


def purl(type_: str, namespace: str | None, name: str, version: str | None,
         qualifiers: dict[str, str | None] | None = None) -> str:
    out = "pkg:" + type_ + "/"
    if namespace:
        out += "/".join(_q(seg) for seg in namespace.strip("/").split("/") if seg) + "/"
    out += _q(name)
    if version:
        out += "@" + _q(version)
    q = sorted((k, v) for k, v in (qualifiers or {}).items() if v)
    if q:
        out += "?" + "&".join(f"{k}={_q(v)}" for k, v in q)  # type: ignore[arg-type]
    return out
