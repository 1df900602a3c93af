"""Python: a ``*.dist-info/METADATA`` or ``*.egg-info/PKG-INFO`` (or a ``*.egg-info`` file)
directly in a ``site-packages`` or ``dist-packages`` directory. ``Name`` and ``Version`` come
from the header (the part before the first blank line), read up to ``HEADER_LIMIT`` bytes."""
from __future__ import annotations

import re

from .purl import purl
from .records import Blob, Package, lines, text

HEADER_LIMIT = 256 << 10
_NORMALIZE = re.compile(r"[-_.]+")


def normalize(name: str) -> str:
    """PEP 503's normalised project name (what pip and the purl spec use)."""
    return _NORMALIZE.sub("-", name).lower()


def parse(blob: Blob) -> list[Package]:
    name = version = None
    for line in lines(blob.chunks(HEADER_LIMIT), max_line=HEADER_LIMIT):
        if not line.strip():
            break
        key, sep, value = line.partition(b":")
        k = key.strip().lower()
        if not sep or line[:1] in (b" ", b"\t"):
            continue
        if k == b"name" and name is None:
            name = text(value)
        elif k == b"version" and version is None:
            version = text(value)
    if not name or not version:
        return []
    return [Package("python", name, version, blob.path, None, None,
                    purl("pypi", None, normalize(name), version))]
