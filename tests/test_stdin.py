"""Ingest from stdin, FIFOs and <(...): the same catalog rows as a file ingest (skopeo's
docker-archive puts manifest.json last, so the stream is spooled), bounded memory, and layers
the cache holds are hashed as they pass but cost no disk."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
import threading
import tracemalloc

import imagefactory as f
import pytest
from catalog_snapshot import snapshot, tmp_is_clean

from layerdb.catalog import Catalog
from layerdb.errors import DigestMismatch, SourceError
from layerdb.ingest import ingest
from layerdb.sources import SourceOptions, expand, open_source
from layerdb.sources._stream import StreamFiles

LAYERDB = [sys.executable, "-m", "layerdb.cli"]


def _rows(root) -> dict[str, list]:
    """Every catalog row an ingest writes, but where it came from and when."""
    with Catalog(str(root)) as cat:
        out = {}
        for name, sql in (
            ("images", "select * exclude (source, ingested_at) from images order by id"),
            ("layers", "select * from image_layers order by image_id, position"),
            ("blobs", "select * from layer_blobs order by digest"),
            ("fs", "select * from fs order by image_id, path"),
        ):
            out[name] = [tuple(map(repr, r)) for r in cat.query(sql)[1]]
    return out


def _ingest_cli(catalog, *args, stdin=None, shell=None):
    cmd = shell if shell else [*LAYERDB, "ingest", "-q", "-j", "1", "--catalog", str(catalog), *args]
    return subprocess.run(cmd, stdin=stdin, capture_output=True, text=True, shell=bool(shell),
                          executable="/bin/bash" if shell else None,
                          env={**os.environ, "LAYERDB_CATALOG": str(catalog)})


@pytest.mark.parametrize("variant", ["docker-archive", "oci-archive", "docker-archive-gz"])
def test_pipe_equals_file_ingest(umoci_images, tmp_path, variant):
    path = umoci_images[variant]
    rep = ingest([path], catalog_root=str(tmp_path / "file"), jobs=1)
    assert not rep.failed
    with open(path, "rb") as src:
        cat = subprocess.Popen(["cat"], stdin=src, stdout=subprocess.PIPE)
        out = _ingest_cli(tmp_path / "pipe", "-", stdin=cat.stdout)
        cat.wait()
    assert out.returncode == 0, out.stderr
    assert _rows(tmp_path / "pipe") == _rows(tmp_path / "file")
    with Catalog(str(tmp_path / "pipe")) as c:
        assert c.query("select distinct source from images")[1] == [("-",)]
    assert tmp_is_clean(tmp_path / "pipe")


def test_fifo_dev_stdin_and_process_substitution(umoci_images, tmp_path):
    path = umoci_images["docker-archive"]
    ingest([path], catalog_root=str(tmp_path / "file"), jobs=1)
    want = _rows(tmp_path / "file")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)

    def feed() -> None:
        with open(fifo, "wb") as w, open(path, "rb") as r:
            while chunk := r.read(1 << 16):
                w.write(chunk)

    t = threading.Thread(target=feed)
    t.start()
    out = _ingest_cli(tmp_path / "fifo-cat", str(fifo))
    t.join(30)
    assert out.returncode == 0, out.stderr
    assert _rows(tmp_path / "fifo-cat") == want
    with open(path, "rb") as src:
        out = _ingest_cli(tmp_path / "devstdin", "/dev/stdin", stdin=src)
    # /dev/stdin on a regular file is that file: ingested like one
    assert out.returncode == 0, out.stderr
    assert _rows(tmp_path / "devstdin") == want
    sub = tmp_path / "subst"
    out = _ingest_cli(sub, shell=f"{' '.join(LAYERDB)} ingest -q -j 1 --catalog {sub} <(cat {path})")
    assert out.returncode == 0, out.stderr
    assert _rows(sub) == want


def test_truncated_stream_is_one_line_and_changes_nothing(umoci_images, tmp_path):
    ingest([umoci_images["oci-archive"]], catalog_root=str(tmp_path), jobs=1)
    before = snapshot(tmp_path)
    data = open(umoci_images["docker-archive"], "rb").read()
    for cut in (len(data) // 2, len(data) - 1024):  # mid-member, and the end marker missing
        out = subprocess.run(
            [*LAYERDB, "ingest", "-q", "-j", "1", "--catalog", str(tmp_path), "-"], input=data[:cut],
            capture_output=True)
        err = out.stderr.decode()
        assert out.returncode == 1 and err.count("\n") == 1, err
        assert err.startswith("layerdb: error: -: truncated or corrupt archive"), err
        assert snapshot(tmp_path) == before and tmp_is_clean(tmp_path)


class _Zeros(io.RawIOBase):
    """A tar stream made on the fly: one ``size``-byte member of zeros, then the end marker."""

    def __init__(self, name: str, size: int) -> None:
        ti = tarfile.TarInfo(name)
        ti.size = size
        self._parts = [ti.tobuf(format=tarfile.PAX_FORMAT), size, b"\0" * (-size % 512) + b"\0" * 1024]

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:  # type: ignore[no-untyped-def]
        while self._parts:
            head = self._parts[0]
            if isinstance(head, int):
                n = min(len(b), head, 1 << 20)
                if n == 0:
                    self._parts.pop(0)
                    continue
                b[:n] = bytes(n)
                self._parts[0] = head - n
                return n
            n = min(len(b), len(head))
            b[:n] = head[:n]
            self._parts[0] = head[n:]
            if not self._parts[0]:
                self._parts.pop(0)
            return n
        return 0


def test_stream_memory_is_bounded_and_cached_layers_cost_no_disk(tmp_path):
    size = 96 << 20
    tracemalloc.start()
    files = StreamFiles(io.BufferedReader(_Zeros("big.bin", size)), "-", str(tmp_path))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert peak < 12 << 20, peak  # a few 1 MiB chunks, never the member
    assert files.spooled == size and os.path.getsize(files.archive) == size
    os.unlink(files.archive)
    # named by its digest and held by the cache: hashed, not kept
    digest = "sha256:" + f.sha256_hex(bytes(size))
    files = StreamFiles(io.BufferedReader(_Zeros(f"blobs/sha256/{digest[7:]}", size)), "-",
                        str(tmp_path), cached={digest})
    assert files.spooled == 0 and os.path.getsize(files.archive) == 0
    seg = files.segment(f"blobs/sha256/{digest[7:]}")
    assert seg is not None and seg.size() == size
    os.unlink(files.archive)
    # a name that lies about the bytes is refused
    with pytest.raises(DigestMismatch):
        StreamFiles(io.BufferedReader(_Zeros(f"blobs/sha256/{'0' * 64}", 10)), "-",
                    str(tmp_path), cached={"sha256:" + "0" * 64})


def test_cached_layers_of_a_real_archive_are_not_spooled(umoci_images, tmp_path, scratch):
    path = umoci_images["docker-archive"]
    ingest([path], catalog_root=str(tmp_path), jobs=1)
    from layerdb.ingest import _cached_blobs

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    t = threading.Thread(target=lambda: open(fifo, "wb").write(open(path, "rb").read()))
    t.start()
    src = open_source(str(fifo), str(scratch), SourceOptions(
        cached_blobs=lambda: _cached_blobs(str(tmp_path))))
    t.join(30)
    try:
        assert src.files.spooled < 8192  # the JSON members only
        assert len(src.files.skipped) == 5
        images = list(src.images())
    finally:
        src.close()
    assert not os.listdir(scratch)
    assert len(images) == 1 and len(images[0].layers) == 5
    # and the whole ingest from a pipe records the same image again, reading no layer
    before = snapshot(tmp_path)
    with open(path, "rb") as r:
        out = subprocess.run([*LAYERDB, "ingest", "-q", "-j", "1", "--catalog", str(tmp_path), "-"], stdin=r,
                             capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert snapshot(tmp_path)[0] == before[0]


def test_a_terminal_or_nothing_is_refused(tmp_path):
    out = subprocess.run([*LAYERDB, "ingest", "-q", "-j", "1", "--catalog", str(tmp_path), "-"],
                         stdin=subprocess.DEVNULL, capture_output=True, text=True)
    assert out.returncode == 1 and "layerdb: error: -:" in out.stderr
    with pytest.raises(SourceError, match="not an image archive"):
        StreamFiles(io.BufferedReader(io.BytesIO(b"")), "-", str(tmp_path))
    (_, first), (_, second) = expand(["-", "-"])
    assert first is None and "only once" in str(second)
