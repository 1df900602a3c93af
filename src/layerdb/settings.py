"""Settings from the environment, read once into one object (``settings()``).

A bad value is a ``UsageError`` naming the variable when it is first needed, never an error
at import. Values reach SQL as parameters or quoted literals, never pasted.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import UsageError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)


def _memory(name: str, default: str) -> str:
    """A DuckDB memory limit such as ``1GB`` or ``700MiB`` ('' or 'off': none)."""
    v = os.environ.get(name, default).strip()
    if v.lower() in ("", "off", "none"):
        return ""
    if not _SIZE.match(v):
        raise UsageError(f"{name}={v!r}: not a size (e.g. 512MB, 1GB, or off)")
    return v.replace(" ", "")


def default_home() -> str:
    """``$LAYERDB_HOME``, else ``$XDG_DATA_HOME/layerdb``, else ``~/.local/share/layerdb``."""
    if os.environ.get("LAYERDB_HOME"):
        return os.environ["LAYERDB_HOME"]
    xdg = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(xdg, "layerdb")


@dataclass(frozen=True)
class Settings:
    home: str
    # DuckDB's memory for queries and reports: it spills to disk past it
    query_memory: str
    zstd_level: int
    debug: bool


@lru_cache(maxsize=1)
def settings() -> Settings:
    level = os.environ.get("LAYERDB_ZSTD_LEVEL", "1")
    try:
        zstd_level = int(level)
        if not 1 <= zstd_level <= 19:
            raise ValueError
    except ValueError:
        raise UsageError(f"LAYERDB_ZSTD_LEVEL={level!r}: not a zstd level from 1 to 19") from None
    return Settings(
        home=default_home(),
        query_memory=_memory("LAYERDB_QUERY_MEMORY", "700MB"),
        zstd_level=zstd_level,
        debug=bool(os.environ.get("LAYERDB_DEBUG")),
    )
