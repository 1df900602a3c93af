"""StoredLayer.iter_ranges, what a whole-tree extract reads each layer with: every range's
bytes exactly, pieces in order, each needed frame decoded once (overlaps aside)."""
from __future__ import annotations

import os
from collections import defaultdict

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from layerdb.digest import Digest
from layerdb.errors import StoreError
from layerdb.store import BlobStore, LayerWriter

FRAME = 4096
DATA = os.urandom(5 * FRAME + 77)


@pytest.fixture(scope="module")
def layer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("r")
    store = BlobStore(str(tmp / "blobs"))
    w = LayerWriter(str(tmp / "tmp"), frame_size=FRAME)
    w.write(DATA)
    d = w.finish(Digest.of_bytes(DATA))
    store.adopt(w.tmp_path, d)
    with store.open(d) as s:
        yield s


_range = st.integers(0, len(DATA)).flatmap(
    lambda off: st.tuples(st.just(off), st.integers(0, min(len(DATA) - off, 3 * FRAME))))


@settings(max_examples=80, deadline=None)
@given(st.lists(_range, max_size=12))
def test_ranges_give_exact_bytes_in_offset_order(layer, ranges):
    decoded = []
    real = layer._decode
    layer._decode = lambda i: decoded.append(i) or real(i)
    try:
        got: dict[int, bytearray] = defaultdict(bytearray)
        seen: list[int] = []
        for k, piece in layer.iter_ranges(ranges):
            if not seen or seen[-1] != k:
                assert k not in seen  # a range's pieces are contiguous
                seen.append(k)
            got[k] += piece
    finally:
        layer._decode = real
    for k, (off, size) in enumerate(ranges):
        assert bytes(got.get(k, b"")) == DATA[off:off + size]
    offs = [ranges[k][0] for k in seen]
    assert offs == sorted(offs)
    spans = sorted((o, o + s) for o, s in ranges if s)
    if all(a[1] <= b[0] for a, b in zip(spans, spans[1:])):  # no overlaps: each frame once
        assert len(decoded) == len(set(decoded))


def test_range_past_the_end_is_refused(layer):
    with pytest.raises(StoreError, match="past its end"):
        list(layer.iter_ranges([(0, 10), (len(DATA) - 5, 10)]))
