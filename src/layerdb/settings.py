"""Settings from the environment, read once into one object (``settings()``).

Nothing else reads a ``LAYERDB_…`` variable. The environment is read when ``settings()`` is
first called; each value is parsed when it is first used, so a bad value is one
``UsageError`` naming the variable where it is needed (``LAYERDB_ZSTD_LEVEL=x`` fails an
ingest, not ``layerdb images``), never an error at import. Values reach SQL as parameters or
quoted literals, never pasted (``catalog.db`` quotes the memory limit).

The variables, their meaning and defaults: docs/catalog.md, *Environment*.
"""
from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping
from functools import cached_property, lru_cache
from typing import TypeVar

from .errors import UsageError

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]i?B|B)?\s*$", re.IGNORECASE)
_T = TypeVar("_T")

#: what is read from the environment: every LAYERDB_ variable, and the XDG base directories
_XDG = ("XDG_DATA_HOME", "XDG_CACHE_HOME")


class Settings:
    """The environment as read once (``env``), each value parsed on first use."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = {k: v for k, v in env.items() if k.startswith("LAYERDB_") or k in _XDG}

    def _number(self, name: str, conv: Callable[[str], _T], default: _T, what: str,
                ok: Callable[[_T], bool] = lambda v: True) -> _T:
        text = self.env.get(name, "").strip()
        if not text:
            return default
        try:
            v = conv(text)
        except ValueError:
            v = None
        if v is None or v != v or not ok(v):  # v != v: NaN
            raise UsageError(f"{name}={text!r}: not {what}")
        return v

    @cached_property
    def home(self) -> str:
        """``$LAYERDB_HOME``, else ``$XDG_DATA_HOME/layerdb``, else ``~/.local/share/layerdb``."""
        if self.env.get("LAYERDB_HOME"):
            return self.env["LAYERDB_HOME"]
        xdg = self.env.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
        return os.path.join(xdg, "layerdb")

    @cached_property
    def query_memory(self) -> str:
        """DuckDB's memory for queries and reports (it spills to disk past it); '' for none."""
        v = self.env.get("LAYERDB_QUERY_MEMORY", "700MB").strip()
        if v.lower() in ("", "off", "none"):
            return ""
        if not _SIZE.match(v):
            raise UsageError(f"LAYERDB_QUERY_MEMORY={v!r}: not a size (e.g. 512MB, 1GB, or off)")
        return v.replace(" ", "")

    @cached_property
    def zstd_level(self) -> int:
        """The layer cache's zstd level: level 1 on 1 MiB frames is ~370 MB/s a core, and
        within ~6% of gzip -6's size."""
        return self._number("LAYERDB_ZSTD_LEVEL", int, 1, "a zstd level from 1 to 19",
                            lambda v: 1 <= v <= 19)

    @cached_property
    def debug(self) -> bool:
        return bool(self.env.get("LAYERDB_DEBUG"))

    @cached_property
    def packages(self) -> bool:
        """Whether ingest captures package databases (``LAYERDB_PACKAGES=0``: no)."""
        return self.env.get("LAYERDB_PACKAGES", "1").strip() != "0"

    @cached_property
    def max_archive_ratio(self) -> float:
        return self._number("LAYERDB_MAX_ARCHIVE_RATIO", float, 100.0, "a ratio above 0 (e.g. 200)",
                            lambda v: 0 < v < float("inf"))

    @cached_property
    def queries_dir(self) -> str | None:
        return self.env.get("LAYERDB_QUERIES") or None

    @cached_property
    def cache_dir(self) -> str:
        """Where registry manifests and configs are kept (``registry/`` below it)."""
        return self.env.get("LAYERDB_CACHE_DIR") or os.path.join(
            self.env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"),
            "layerdb")

    @cached_property
    def registry_retries(self) -> int:
        return self._number("LAYERDB_REGISTRY_RETRIES", int, 5, "a whole number of attempts",
                            lambda v: v >= 0)

    @cached_property
    def registry_backoff(self) -> float:
        return self._number("LAYERDB_REGISTRY_BACKOFF", float, 0.5, "a number of seconds",
                            lambda v: 0 <= v < float("inf"))

    @cached_property
    def registry_timeout(self) -> float:
        return self._number("LAYERDB_REGISTRY_TIMEOUT", float, 60.0, "a number of seconds",
                            lambda v: 0 < v < float("inf"))

    @cached_property
    def registry_page(self) -> int:
        return self._number("LAYERDB_REGISTRY_PAGE", int, 100, "a page size above 0",
                            lambda v: v > 0)


@lru_cache(maxsize=1)
def settings() -> Settings:
    """The process's settings, read from the environment on the first call
    (``settings.cache_clear()`` reads it again)."""
    return Settings(os.environ)
