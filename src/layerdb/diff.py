"""Image diff, the library side of ``layerdb diff``: the ``diff`` report
(``queries/diff.sql``) between two images, resolved the way every ``--image`` is, with totals
per change kind. Returns plain data and never prints."""
from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from .reports import iter_report


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
    d = stream_diff(a, b, catalog_root, platform, catalog)
    rows = list(d.rows)
    return ImageDiff(d.a, d.b, d.columns, rows, d.totals)


def stream_diff(a: str, b: str, catalog_root: str | None = None,
                platform: str | None = None, catalog: Any = None) -> ImageDiff:
    """``diff_images`` with ``rows`` an iterator, fetched as it is read, and ``totals`` filled
    in as the rows go by (complete once they are all read): a diff of a million paths is not
    held in memory. A catalog it opens is closed when the rows end."""
    from .catalog import Catalog

    own = catalog is None
    cat = catalog or Catalog(catalog_root)
    try:
        ia, ib = cat.resolve_image(a, platform), cat.resolve_image(b, platform)
        cols, rows = iter_report("diff", {"a": ia.id, "b": ib.id}, cat)
    except BaseException:
        if own:
            cat.close()
        raise
    totals: dict[str, tuple[int, int]] = {k: (0, 0) for k in ("added", "removed", "changed")}

    def counted() -> Iterator[tuple]:
        ci, di = cols.index("change"), cols.index("size_delta")
        try:
            for r in rows:
                n, by = totals.get(r[ci], (0, 0))  # package changes (added, upgraded...) come last
                totals[r[ci]] = (n + 1, by + int(r[di] or 0))
                yield r
        finally:
            if own:
                cat.close()

    return ImageDiff(ia.name, ib.name, cols, counted(), totals)  # type: ignore[arg-type]
