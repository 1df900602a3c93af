"""The blob store: seekable zstd frames, verified atomic writes, bounded random reads."""
from __future__ import annotations

import hashlib
import os

import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from layerdb.digest import Digest
from layerdb.errors import DigestMismatch, StoreError
from layerdb.store import BlobStore, LayerWriter

FRAME = 4096


def _put(tmp_path, data: bytes, frame: int = FRAME) -> tuple[BlobStore, Digest]:
    store = BlobStore(str(tmp_path / "blobs"))
    w = LayerWriter(str(tmp_path / "tmp"), frame_size=frame)
    for i in range(0, len(data), 1000):
        w.write(data[i : i + 1000])
    d = w.finish(Digest.of_bytes(data))
    store.adopt(w.tmp_path, d)
    return store, d


DATA = os.urandom(3 * FRAME + 123) + b"a" * (2 * FRAME)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, len(DATA)), st.integers(0, len(DATA)))
def test_read_any_range(tmp_path_factory, a, b):
    tmp = tmp_path_factory.mktemp("s")
    store, d = _put(tmp, DATA)
    lo, hi = min(a, b), max(a, b)
    with store.open(d) as layer:
        assert layer.size == len(DATA)
        assert layer.read_at(lo, hi - lo) == DATA[lo:hi]


def test_reads_only_frames_it_needs(tmp_path, monkeypatch):
    store, d = _put(tmp_path, DATA)
    with store.open(d) as layer:
        decoded = []
        orig = layer._frame
        monkeypatch.setattr(layer, "_frame", lambda i: decoded.append(i) or orig(i))
        assert layer.read_at(FRAME + 10, 20) == DATA[FRAME + 10 : FRAME + 30]
        assert decoded == [1]
        decoded.clear()
        assert layer.read_at(2 * FRAME - 5, 10) == DATA[2 * FRAME - 5 : 2 * FRAME + 5]
        assert decoded == [1, 2]


def test_file_is_plain_zstd_too(tmp_path):
    store, d = _put(tmp_path, DATA)
    with open(store.path(d), "rb") as f:
        out = zstandard.ZstdDecompressor().stream_reader(f, read_across_frames=True).read()
    assert hashlib.sha256(out).hexdigest() == d.hex


def test_mismatch_refused_and_nothing_left(tmp_path):
    w = LayerWriter(str(tmp_path / "tmp"), frame_size=FRAME)
    w.write(b"hello")
    with pytest.raises(DigestMismatch, match="uncompressed content hashes to"):
        w.finish(Digest.of_bytes(b"other"))
    assert os.listdir(tmp_path / "tmp") == []


def test_verify_detects_damage(tmp_path):
    store, d = _put(tmp_path, DATA)
    store.verify(d)
    p = store.path(d)
    with open(p, "r+b") as f:
        f.seek(10)
        f.write(b"\x00\x00\x00\x00")
    with pytest.raises((StoreError, DigestMismatch)):
        store.verify(d)


def test_missing_layer(tmp_path):
    store = BlobStore(str(tmp_path))
    with pytest.raises(StoreError, match="not in the cache"):
        store.open(Digest.of_bytes(b"x"))


def test_empty_layer(tmp_path):
    store, d = _put(tmp_path, b"")
    with store.open(d) as layer:
        assert layer.size == 0
        assert layer.read_at(0, 0) == b""
