"""tarindex: one row per member, normalised paths, whiteouts, xattrs, offsets and hashes."""
from __future__ import annotations

import hashlib
import io
import tarfile

import pyarrow as pa
import pytest

from layerdb.catalog import FILE_COLUMNS
from layerdb.errors import CorruptLayer
from layerdb.tarindex import SCHEMA, index_layer, normalize


def _tar(members, fmt=tarfile.PAX_FORMAT) -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=fmt) as tf:
        for ti, data in members:
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)
    return b.getvalue()


def _ti(name, type=tarfile.REGTYPE, data=b"", **kw):
    ti = tarfile.TarInfo(name)
    ti.type = type
    ti.size = len(data) if type == tarfile.REGTYPE else 0
    ti.mtime = 1_600_000_000
    for k, v in kw.items():
        setattr(ti, k, v)
    return ti, (data if type == tarfile.REGTYPE else None)


def _rows(data: bytes):
    return pa.Table.from_batches(list(index_layer(io.BytesIO(data), "L")), schema=SCHEMA).to_pylist()


def test_schema_matches_catalog():
    # the catalog may not read `sparse` yet (the column is new): every other column it reads, in order
    names = [f.name for f in SCHEMA]
    assert names[-1] == "sparse"
    assert [n for n, _ in FILE_COLUMNS if n != "sparse"] == names[:-1]


@pytest.mark.parametrize("name,want", [
    ("./usr/bin/", "/usr/bin"), (".", "/"), ("./", "/"), ("a//b/./c", "/a/b/c"),
    ("../../etc/x", "/etc/x"), ("/abs/path", "/abs/path"), ("a/../../b", "/b"),
])
def test_normalize(name, want):
    assert normalize(name) == want


def test_rows_offsets_and_hashes():
    long = "d/" + "x" * 150 + "/file"
    data = _tar([
        _ti("./d/", tarfile.DIRTYPE, mode=0o755),
        _ti("./d/f", data=b"hello", mode=0o4755, uid=1, gid=2, uname="u", gname="g"),
        _ti(long, data=b"long" * 300),
        _ti("./d/s", tarfile.SYMTYPE, linkname="/etc/passwd"),
        _ti("./d/h", tarfile.LNKTYPE, linkname="./d/f"),
        _ti("./d/.wh.gone"),
        _ti("./e/.wh..wh..opq"),
        _ti("../../etc/evil", data=b"x"),
        _ti("dev", tarfile.CHRTYPE, devmajor=1, devminor=3),
        _ti("fifo", tarfile.FIFOTYPE),
    ])
    rows = _rows(data)
    by = {r["path"]: r for r in rows}
    assert [r["idx"] for r in rows] == list(range(10))
    f = by["/d/f"]
    assert (f["type"], f["size"], f["mode"], f["uid"], f["gid"], f["uname"]) == ("file", 5, 0o4755, 1, 2, "u")
    assert f["sha256"] == hashlib.sha256(b"hello").hexdigest()
    assert data[f["offset_data"] : f["offset_data"] + 5] == b"hello"
    lf = by["/" + long]
    assert data[lf["offset_data"] : lf["offset_data"] + lf["size"]] == b"long" * 300
    assert lf["parent"] == "/d/" + "x" * 150 and lf["name"] == "file"
    assert by["/d/s"]["type"] == "symlink" and by["/d/s"]["linkname"] == "/etc/passwd"
    assert by["/d/h"]["type"] == "hardlink" and by["/d/h"]["linkname"] == "/d/f"
    assert (by["/d/.wh.gone"]["whiteout"], by["/d/.wh.gone"]["hides"]) == ("whiteout", "/d/gone")
    assert (by["/e/.wh..wh..opq"]["whiteout"], by["/e/.wh..wh..opq"]["hides"]) == ("opaque", "/e")
    assert "/etc/evil" in by
    assert (by["/dev"]["type"], by["/dev"]["devmajor"], by["/dev"]["devminor"]) == ("char", 1, 3)
    assert by["/fifo"]["type"] == "fifo"
    assert by["/d"]["type"] == "dir" and by["/d"]["sha256"] is None


def test_gnu_long_names_and_non_utf8():
    raw = b"caf\xe9-latin1"
    name = raw.decode("utf-8", "surrogateescape")
    data = _tar([_ti("a" * 120 + "/b" * 20, data=b"1"), _ti(name, data=b"2")],
                fmt=tarfile.GNU_FORMAT)
    rows = _rows(data)
    assert rows[0]["path"] == "/" + "a" * 120 + "/b" * 20
    assert rows[1]["raw_path"] == b"/" + raw
    assert rows[1]["path"] == "/caf\\xe9-latin1"


def test_xattrs_binary():
    ti, d = _ti("cap", data=b"x")
    ti.pax_headers = {"SCHILY.xattr.security.capability":
                      b"\x01\x00\x00\x02\xff".decode("utf-8", "surrogateescape")}
    rows = _rows(_tar([(ti, d)]))
    assert rows[0]["xattrs"] == [("security.capability", b"\x01\x00\x00\x02\xff")]


def test_truncated_tar_is_refused():
    data = _tar([_ti("f", data=b"x" * 5000)])
    with pytest.raises(CorruptLayer, match="truncated or corrupt tar"):
        _rows(data[:2000])


def test_empty_layer():
    assert _rows(b"") == []
    assert _rows(_tar([])) == []
