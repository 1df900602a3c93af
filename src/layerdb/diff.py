"""Image diff, the library side of ``layerdb diff``: the ``diff`` report
(``queries/diff.sql``) between two images, resolved the way every ``--image`` is, with totals
per change kind. Returns plain data and never prints."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .reports import run_report


@dataclass(frozen=True)
class ImageDiff:
    """``diff`` rows between two images (a -> b) and totals per change kind:
    ``totals[kind] = (paths, bytes)`` with bytes the summed size_delta (``package added``,
    ``package removed``, ``package upgraded``, ``package downgraded`` only when present)."""

    a: str
    b: str
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
    return ImageDiff(ia.name, ib.name, cols, rows, totals)
