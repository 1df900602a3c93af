"""GNU sparse files: the stored data regions of a member in, the expanded file out.

A sparse member stores only its data regions, one after another; ``sparse`` lists each
region's ``(offset, length)`` in the expanded file, in stored order (the ``sparse`` column of
``files``). The expanded file is ``size`` bytes long, zeros wherever no region is. Pure: no
I/O, no imports beyond the errors.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence

from .errors import CorruptLayer

_ZEROS = bytes(1 << 20)


def zeros(n: int) -> Iterator[bytes]:
    """``n`` zero bytes, in pieces of at most 1 MiB."""
    full = len(_ZEROS)
    while n >= full:
        yield _ZEROS
        n -= full
    if n > 0:
        yield _ZEROS[:n]


def check(sparse: Sequence[tuple[int, int]], size: int) -> int:
    """Validate a sparse map as Go's archive/tar does (regions in order, not overlapping, not
    negative, inside ``size``); return the stored bytes it needs (the sum of the lengths).
    Raises ``ValueError`` naming the problem."""
    if size < 0:
        raise ValueError("negative sparse size")
    end = 0
    total = 0
    for off, length in sparse:
        if off < 0 or length < 0:
            raise ValueError("negative sparse region")
        if off < end:
            raise ValueError("sparse regions out of order or overlapping")
        end = off + length
        if end > size:
            raise ValueError("sparse region beyond the file size")
        total += length
    return total


def expand(chunks: Iterable[bytes], sparse: Sequence[tuple[int, int]], size: int) -> Iterator[bytes]:
    """The ``size`` bytes of the expanded file, in order, from ``chunks``: the stored bytes of
    the member (its regions one after another, exactly ``sum(length)`` bytes, cut anywhere).
    Holes come out as zeros in pieces of at most 1 MiB; data pieces are slices of the chunks.
    Raises ``CorruptLayer`` when the map is invalid or the stored bytes are too few or too many.
    """
    try:
        check(sparse, size)
    except ValueError as e:
        raise CorruptLayer(f"sparse file: {e}") from e
    it = iter(chunks)
    cur: bytes = b""
    ci = 0
    pos = 0
    for off, length in sparse:
        yield from zeros(off - pos)
        need = length
        while need:
            if ci >= len(cur):
                nxt = next(it, None)
                if nxt is None:
                    raise CorruptLayer("sparse file: stored data shorter than its sparse map")
                cur, ci = nxt, 0
                continue
            k = min(need, len(cur) - ci)
            yield cur if (ci == 0 and k == len(cur)) else cur[ci:ci + k]
            ci += k
            need -= k
        pos = off + length
    yield from zeros(size - pos)
    if ci < len(cur) or any(len(c) for c in it):
        raise CorruptLayer("sparse file: stored data longer than its sparse map")
