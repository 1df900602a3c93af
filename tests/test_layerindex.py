"""The layer index (``files/<diff_id>.idx``, read by extract without DuckDB): every member's
row equals its Parquet row, sections that hold only defaults are left out, indexes in the
previous format (LDBIDX02) still read, and a damaged one is refused when opened."""
from __future__ import annotations

import io
import json
import struct
import tarfile

import imagefactory as f
import numpy as np
import pyarrow as pa
import pytest

from layerdb.catalog.layerindex import Builder, LayerIndex
from layerdb.tarindex import SCHEMA, index_layer


def _tar(devices: bool, owners: bool) -> bytes:
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.PAX_FORMAT) as tf:
        def add(ti: tarfile.TarInfo, data: bytes | None = None) -> None:
            ti.mtime = 1_700_000_000
            if not owners:
                ti.uname = ti.gname = ""
            tf.addfile(ti, io.BytesIO(data) if data is not None else None)

        d = tarfile.TarInfo("etc")
        d.type, d.mode = tarfile.DIRTYPE, 0o755
        add(d)
        for i in range(40):
            t = tarfile.TarInfo(f"etc/f{i}")
            t.size, t.uid = i * 7, i % 3
            if owners:
                t.uname, t.gname = f"user{i % 2}", "staff"
            add(t, bytes([i]) * (i * 7))
        s = tarfile.TarInfo("etc/link")
        s.type, s.linkname = tarfile.SYMTYPE, "f1"
        add(s)
        h = tarfile.TarInfo("etc/hard")
        h.type, h.linkname = tarfile.LNKTYPE, "etc/f2"
        add(h)
        if devices:
            c = tarfile.TarInfo("dev/null")
            c.type, c.devmajor, c.devminor = tarfile.CHRTYPE, 1, 3
            add(c)
        w = tarfile.TarInfo("opt/.wh.gone")
        add(w, b"")
    return b.getvalue()


def _build(tmp_path, data: bytes, name: str = "l.idx"):  # type: ignore[no-untyped-def]
    batches = list(index_layer(io.BytesIO(data), "sha256:" + "0" * 64, batch_rows=16))
    b = Builder(str(tmp_path / name))
    for batch in batches:
        b.add(batch)
    b.finish()
    return tmp_path / name, pa.Table.from_batches(batches, schema=SCHEMA).to_pylist()


def _expected(r: dict) -> dict:
    return {"raw": (r["raw_path"] or r["path"].encode()), "type": r["type"], "whiteout": r["whiteout"],
            "size": r["size"], "mtime": r["mtime"], "offset": r["offset_data"], "mode": r["mode"],
            "uid": r["uid"], "gid": r["gid"], "devmajor": r["devmajor"], "devminor": r["devminor"],
            "linkname": r["linkname"], "uname": r["uname"] or "", "gname": r["gname"] or "",
            "sha256": r["sha256"], "sparse": ()}


def _sections(path) -> tuple[bytes, dict, int]:  # type: ignore[no-untyped-def]
    raw = path.read_bytes()
    (hlen,) = struct.unpack_from("<Q", raw, 8)
    return raw, json.loads(raw[16:16 + hlen])["sections"], 16 + hlen


@pytest.mark.parametrize("devices,owners", [(False, False), (True, True)])
def test_every_row_equals_its_parquet_row(tmp_path, devices, owners):
    path, rows = _build(tmp_path, _tar(devices, owners))
    li = LayerIndex(str(path))
    assert li.n == len(rows)
    for i, r in enumerate(rows):
        assert li.row(i) == _expected(r), r["path"]
        assert i in li.find(_expected(r)["raw"])
    assert sorted(li.below(b"/etc")) == sorted(i for i, r in enumerate(rows) if r["path"].startswith("/etc/"))
    names = set(_sections(path)[1])
    # left out when every member has the default; there when one does not
    assert ("devmajor" in names) == ("devminor" in names) == devices
    assert ("uname.off" in names) == ("gname" in names) == owners
    assert "sparse.off" not in names and "linkname.off" in names and "sha256.off" not in names
    li.close()


def test_the_index_of_many_small_files_is_about_100_bytes_a_member(tmp_path):
    b = io.BytesIO()
    with tarfile.open(fileobj=b, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for i in range(2000):
            t = tarfile.TarInfo(f"data/{i // 100:02d}/f{i:07d}")
            t.size, t.uname, t.gname = 12, "", ""
            tf.addfile(t, io.BytesIO(b"%012d" % i))
    path, rows = _build(tmp_path, b.getvalue())
    per_member = path.stat().st_size / len(rows)
    # 8 key offset + 17 name + 4 order + 2 type/whiteout + 24 size/mtime/offset + 12 mode/uid/gid
    # + 32 sha256; no link, owner, device or sparse sections (the old format: ~180 bytes)
    assert 97 < per_member < 101, per_member


def _as_v2(path, out) -> None:  # type: ignore[no-untyped-def]
    """The same index in the previous format: every section present, sha256 as hex text."""
    raw, sections, base = _sections(path)
    n = json.loads(raw[16:16 + struct.unpack_from("<Q", raw, 8)[0]])["n"]

    def sec(name: str) -> bytes:
        off, length = sections[name]
        return raw[base + off:base + off + length]

    digests = np.frombuffer(sec("sha256"), np.uint8).reshape(n, 32)
    hexes = [bytes(d).hex().encode() if d.any() else b"" for d in digests]
    parts: dict[str, bytes] = {}
    for name in ("key.off", "key", "order", "type", "whiteout", "size", "mtime", "offset", "mode",
                 "uid", "gid", "devmajor", "devminor", "linkname.off", "linkname", "uname.off",
                 "uname", "gname.off", "gname", "sha256.off", "sha256", "sparse.off", "sparse"):
        if name == "sha256":
            parts[name] = b"".join(hexes)
        elif name == "sha256.off":
            parts[name] = np.concatenate([[0], np.cumsum([len(h) for h in hexes])]).astype(np.int64).tobytes()
        elif name in sections:
            parts[name] = sec(name)
        elif name.endswith(".off"):
            parts[name] = bytes(8 * (n + 1))
        elif name in ("devmajor", "devminor"):
            parts[name] = np.full(n, -1, np.int32).tobytes()
        else:
            parts[name] = b""
    header, offset = {"n": n, "sections": {}}, 0
    for name, data in parts.items():
        header["sections"][name] = [offset, len(data)]
        offset += len(data)
    head = json.dumps(header).encode()
    out.write_bytes(b"LDBIDX02" + struct.pack("<Q", len(head)) + head + b"".join(parts.values()))


def test_an_index_in_the_previous_format_reads_the_same(tmp_path):
    """Catalogs ingested before the format changed keep working for extract, ls and verify."""
    path, rows = _build(tmp_path, _tar(True, True))
    old = tmp_path / "old.idx"
    _as_v2(path, old)
    new_li, old_li = LayerIndex(str(path)), LayerIndex(str(old))
    assert old.stat().st_size > path.stat().st_size
    assert [old_li.row(i) for i in range(len(rows))] == [new_li.row(i) for i in range(len(rows))]
    assert old_li.find(b"/etc/f3") == new_li.find(b"/etc/f3") == [4]


@pytest.mark.parametrize("damage", ["cut", "section"])
def test_a_damaged_index_is_refused_when_opened(tmp_path, damage):
    path, rows = _build(tmp_path, _tar(False, True))
    raw, sections, base = _sections(path)
    if damage == "cut":
        path.write_bytes(raw[:-100])
        want = "section sha256"  # the last section
    else:  # the header says sha256 is shorter than 32 bytes a member
        hlen = struct.unpack_from("<Q", raw, 8)[0]
        head = json.loads(raw[16:16 + hlen])
        head["sections"]["sha256"][1] -= 32
        h = json.dumps(head).encode()
        path.write_bytes(raw[:8] + struct.pack("<Q", len(h)) + h + raw[16 + hlen:])
        want = "section sha256"
    with pytest.raises(ValueError) as e:
        LayerIndex(str(path))
    assert str(e.value) == f"{path}: damaged layer index ({want})"


def test_verify_names_a_damaged_index(tmp_path, capsys):
    from layerdb.cli import main

    arch = tmp_path / "a.tar"
    f.write_oci_archive(arch, [f.ImageSpec([f.Layer([f.file("etc/a", b"a" * 5000)], "gzip")],
                                           tags=("x:1",))])
    home = tmp_path / "home"
    with pytest.raises(SystemExit) as ok:
        main(["--catalog", str(home), "ingest", "-q", str(arch)])
    assert ok.value.code == 0
    idx = next((home / "files").glob("*.idx"))
    idx.write_bytes(idx.read_bytes()[:-10])
    capsys.readouterr()
    with pytest.raises(SystemExit) as bad:
        main(["--catalog", str(home), "verify"])
    out = capsys.readouterr()
    assert bad.value.code == 1
    assert f"{idx}: damaged layer index (section sha256)" in out.out + out.err


@pytest.mark.parametrize("damage", ["cut", "gone"])
def test_extract_and_ls_name_a_damaged_or_missing_index(tmp_path, capsys, damage):
    """One error line pointing at verify (it was 'internal error: ValueError', exit 3)."""
    from layerdb.cli import main

    arch = tmp_path / "a.tar"
    f.write_oci_archive(arch, [f.ImageSpec([f.Layer([f.file("etc/a", b"a" * 5000)], "gzip")],
                                           tags=("x:1",))])
    home = tmp_path / "home"
    with pytest.raises(SystemExit):
        main(["--catalog", str(home), "ingest", "-q", str(arch)])
    idx = next((home / "files").glob("*.idx"))
    if damage == "cut":
        idx.write_bytes(idx.read_bytes()[:-10])
        why = f"{idx}: damaged layer index (section sha256)"
    else:
        idx.unlink()
        why = f"[Errno 2] No such file or directory: '{idx}'"
    diff_id = "sha256:" + idx.stem
    for args in (["extract", "--path", "/etc/a", "--image", "x:1", "-o", str(tmp_path / "a")],
                 ["ls", "x:1", "/etc"]):
        capsys.readouterr()
        with pytest.raises(SystemExit) as e:
            main(["--catalog", str(home), *args])
        assert e.value.code == 1
        assert capsys.readouterr().err == (f"layerdb: error: layer {diff_id[:19]}: its index is "
                                           f"missing or damaged ({why}); run layerdb verify\n")
    assert not (tmp_path / "a").exists()
