"""npm: ``package.json`` of a package directly under a ``node_modules/`` (or
``node_modules/@scope/``); deeper ``package.json`` files (tests, fixtures, dist/) are not
packages. Files over ``LIMIT`` bytes, or that are not a JSON object with string ``name`` and
``version``, are skipped."""
from __future__ import annotations

import json

from .purl import purl
from .records import Blob, Package

LIMIT = 1 << 20


def parse(blob: Blob) -> list[Package]:
    if blob.size > LIMIT:
        return []
    try:
        doc = json.loads(b"".join(blob.chunks()))
    except (ValueError, RecursionError):
        return []
    if not isinstance(doc, dict):
        return []
    name, version = doc.get("name"), doc.get("version")
    if not isinstance(name, str) or not isinstance(version, str) or not name or not version:
        return []
    ns, _, base = name.rpartition("/")
    return [Package("npm", name, version, blob.path, None, None,
                    purl("npm", ns or None, base, version))]
