"""extract against hostile images (issue 7): the stdout tar stream holds only what -o DIR
writes (a naive reader stays inside its target), dangling hardlinks, NUL and 4,000-level
names, 255-byte names, raw non-UTF-8 --path; and --layer, terminals and closed pipes (issue 9)."""
from __future__ import annotations

import io
import os
import pty
import signal
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import imagefactory as f
import pytest

from layerdb.errors import LayerdbError, PathNotFound, UsageError
from layerdb.extract import extract
from layerdb.ingest import ingest


def _ingest(root: Path, *paths: Path) -> str:
    rep = ingest([str(p) for p in paths], catalog_root=str(root), jobs=1)
    assert not rep.failed, rep.failed[0].error
    return str(root)


def _image(tmp: Path, layers: list[list[f.Member]] | list[f.Layer], tag: str = "h:1") -> str:
    spec = f.ImageSpec([x if isinstance(x, f.Layer) else f.Layer(x) for x in layers], tags=(tag,))
    f.write_oci_archive(tmp / "img.tar", [spec])
    return _ingest(tmp / "cat", tmp / "img.tar")


def _stream(cat: str, path: str = "/", **kw) -> bytes:
    out = io.BytesIO()
    extract(path=path, image="h:1", catalog_root=cat, stdout=out, **kw)
    return out.getvalue()


def _files_under(p: Path) -> set[str]:
    out = set()
    for d, dirs, files in os.walk(p):  # never through a symlink
        out.update(os.path.relpath(os.path.join(d, n), p) for n in dirs + files)
    return out


def _naive_unpack(data: bytes, dest: Path) -> None:
    dest.mkdir()
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        tf.extractall(dest, filter="fully_trusted")  # a naive reader: follows what it is given


ESCAPES = {
    "symlink, one layer": [[
        f.symlink("evil", "/outside"), f.file("evil/pwn", b"pwned\n"),
        f.symlink("rel", "../../../../outside2"), f.file("rel/pwn", b"pwned\n"),
        f.file("ok", b"fine\n")]],
    "symlink, two layers": [
        [f.directory("evil"), f.file("evil/keep", b"lower\n"), f.file("ok", b"fine\n")],
        [f.symlink("evil2", "/outside"), f.directory("evil2/sub"), f.file("evil2/sub/pwn", b"x")]],
    "hardlink, one layer": [[
        f.file("ok", b"fine\n"), f.hardlink("hl", "../../../../etc/passwd"),
        f.hardlink("hl2", "/etc/shadow")]],
    "hardlink, two layers": [
        [f.symlink("lnk", "/etc"), f.file("ok", b"fine\n")],
        [f.hardlink("hl", "lnk/passwd"), f.hardlink("hl3", "ok")]],
}


@pytest.mark.parametrize("case", sorted(ESCAPES))
def test_tar_stream_is_safe_for_a_naive_reader(tmp_path, case):
    outside = tmp_path / "outside"
    cat = _image(tmp_path, ESCAPES[case])
    data = _stream(cat)
    dest = tmp_path / "x" / "dest"
    (tmp_path / "x").mkdir()
    before = _files_under(tmp_path)
    _naive_unpack(data, dest)
    new = _files_under(tmp_path) - before
    assert new and all(n.startswith("x/dest") for n in new), new
    assert not outside.exists() and not Path("/outside").exists()
    assert (dest / "ok").read_bytes() == b"fine\n"
    # the stream holds exactly what -o DIR writes
    odir = tmp_path / "odir"
    extract(path="/", image="h:1", catalog_root=cat, output=str(odir))
    assert f.tree_listing(dest) == f.tree_listing(odir) or \
        {k: v for k, v in f.tree_listing(dest).items() if k != "/"} == \
        {k: v for k, v in f.tree_listing(odir).items() if k != "/"}
    with tarfile.open(fileobj=io.BytesIO(data)) as tf:
        members = tf.getmembers()
    assert not any(m.islnk() for m in members)  # hardlinks go out as copies
    for m in members:
        assert not m.name.startswith("/") and ".." not in m.name.split("/")
        parent = m.name.rpartition("/")[0]
        assert not any(p.issym() and (parent + "/").startswith(p.name + "/")
                       for p in members if p is not m)


def test_tar_stream_keeps_hardlink_bytes_and_drops_setuid(tmp_path):
    cat = _image(tmp_path, [[f.file("bin/su", b"root shell\n", mode=0o4755),
                             f.hardlink("bin/su2", "bin/su", mode=0o4755),
                             f.file("bin/sg", b"group\n", mode=0o2711)]])
    with tarfile.open(fileobj=io.BytesIO(_stream(cat))) as tf:
        got = {m.name: (m.type, m.mode, tf.extractfile(m).read() if m.isreg() else None)
               for m in tf.getmembers()}
    assert got["./bin/su"] == (tarfile.REGTYPE, 0o755, b"root shell\n")
    assert got["./bin/su2"] == (tarfile.REGTYPE, 0o755, b"root shell\n")
    assert got["./bin/sg"] == (tarfile.REGTYPE, 0o711, b"group\n")
    with tarfile.open(fileobj=io.BytesIO(_stream(cat, keep_setuid=True))) as tf:
        assert tf.getmember("./bin/su").mode == 0o4755


def test_dangling_hardlink_is_skipped_with_one_warning_in_both_modes(tmp_path):
    cat = _image(tmp_path, [[f.file("a", b"A"), f.hardlink("dangling", "nowhere"),
                             f.file("z", b"Z")]])
    out = tmp_path / "o"
    res = extract(path="/", image="h:1", catalog_root=cat, output=str(out))
    assert sorted(os.listdir(out)) == ["a", "z"]
    assert res.warnings == ["skipped /dangling: hardlink to /nowhere, which has no content in "
                            "the image"]
    buf = io.BytesIO()
    res2 = extract(path="/", image="h:1", catalog_root=cat, stdout=buf)
    with tarfile.open(fileobj=io.BytesIO(buf.getvalue())) as tf:
        assert sorted(tf.getnames()) == [".", "./a", "./z"]
    assert res2.warnings == res.warnings
    with pytest.raises(LayerdbError, match="hardlink to /nowhere, which has no content"):
        _stream(cat, "/dangling")


def _raw_layer(names: list[bytes]) -> f.Layer:
    """A layer whose member names are raw bytes (NUL, non-UTF-8, very long): written with a
    GNU long-name header, which carries any bytes."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT,
                      encoding="utf-8", errors="surrogateescape") as tf:
        for n in names:
            ti = tarfile.TarInfo(n.decode("utf-8", "surrogateescape"))
            ti.size, ti.mtime = len(n), f.FIXED_MTIME
            tf.addfile(ti, io.BytesIO(n))
    return f.Layer(buf.getvalue())


def test_nul_deep_long_and_non_utf8_names(tmp_path):
    deep = b"/".join([b"d"] * 4000) + b"/deepfile"
    long_name = b"n" * 250
    raw = b"caf\xe9"
    cat = _image(tmp_path, [_raw_layer([b"ok", b"bad\x00name", deep, long_name, raw,
                                        b"x" * 300])])
    out = tmp_path / "o"
    res = extract(path="/", image="h:1", catalog_root=cat, output=str(out))
    assert (out / "ok").read_bytes() == b"ok"
    # a GNU long name ends at its first NUL (as Go's archive/tar reads it): the file is /bad
    assert (out / "bad").read_bytes() == b"bad\x00name"
    assert (out / long_name.decode()).read_bytes() == long_name  # a 250-byte name is legal
    assert (out / os.fsdecode(raw)).read_bytes() == raw
    fd = os.open(out, os.O_RDONLY)
    try:  # walk 4,000 levels down without PATH_MAX trouble
        for _ in range(4000):
            nfd = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
            os.close(fd)
            fd = nfd
        with os.fdopen(os.open("deepfile", os.O_RDONLY, dir_fd=fd), "rb") as fh:
            assert fh.read() == deep
    finally:
        os.close(fd)
    assert res.warnings == [f"skipped /{'x' * 300}: a name longer than 255 bytes"]
    # single files: a 250-byte name into a directory (the temporary name stays short)
    d2 = tmp_path / "single"
    d2.mkdir()
    extract(path="/" + long_name.decode(), image="h:1", catalog_root=cat, output=str(d2) + "/")
    assert (d2 / long_name.decode()).read_bytes() == long_name
    # raw non-UTF-8 --path, as click hands it over (surrogate escapes)
    assert _stream(cat, "/" + os.fsdecode(raw)) == raw
    assert _stream(cat, "/" + deep.decode()) == deep
    with pytest.raises(PathNotFound, match="no such file"):  # one line, no traceback
        _stream(cat, "/bad\x00name")


def test_layer_reads_a_deleted_member(umoci_images, tmp_path):
    cat = _ingest(tmp_path / "cat", Path(umoci_images["oci-umoci"]))
    with pytest.raises(PathNotFound, match=r"deleted in an upper layer .*layer 0.*--layer 0"):
        extract(path="/etc/remove.me", image="v1", catalog_root=cat, stdout=io.BytesIO())
    out = io.BytesIO()
    res = extract(path="/etc/remove.me", image="v1", catalog_root=cat, stdout=out, layer=0)
    assert out.getvalue() == b"to be deleted\n" and res.layer == 0
    out = io.BytesIO()  # the version of layer 0, not the one the merged view shows
    extract(path="/home/app/app", image="v1", catalog_root=cat, stdout=out, layer=0)
    assert out.getvalue() == b"#!/bin/sh\necho app\n"
    out = io.BytesIO()  # a hardlink gets its target's bytes as stored
    extract(path="/etc/hello-hard.txt", image="v1", catalog_root=cat, stdout=out, layer=0)
    assert out.getvalue() == b"hello\n"
    with pytest.raises(PathNotFound, match="not in layer 1"):
        extract(path="/etc/remove.me", image="v1", catalog_root=cat, stdout=io.BytesIO(), layer=1)
    with pytest.raises(UsageError, match="no layer 9: the image has 5 layer"):
        extract(path="/etc/remove.me", image="v1", catalog_root=cat, stdout=io.BytesIO(), layer=9)


def test_terminal_gets_no_tar_stream_and_no_binary(tmp_path):
    cat = _image(tmp_path, [[f.directory("d"), f.file("d/text", b"hello\nworld\n"),
                             f.file("d/bin", b"\x7fELF\x00\x01"), f.file("d/esc", b"hi\x1b]0;x\x07")]])
    master, slave = pty.openpty()
    try:
        with os.fdopen(os.dup(slave), "wb", buffering=0) as tty:
            with pytest.raises(UsageError, match="refusing to write a tar stream to a terminal"):
                extract(path="/d", image="h:1", catalog_root=cat, stdout=tty)
            for p in ("/d/bin", "/d/esc"):
                with pytest.raises(UsageError, match="refusing to write binary content"):
                    extract(path=p, image="h:1", catalog_root=cat, stdout=tty)
            extract(path="/d/text", image="h:1", catalog_root=cat, stdout=tty)
        assert os.read(master, 100).replace(b"\r\n", b"\n") == b"hello\nworld\n"
    finally:
        os.close(master)
        os.close(slave)


def test_closed_pipe_ends_like_cat(tmp_path):
    big = os.urandom(1 << 20)
    cat = _image(tmp_path, [[f.file("big", big * 4), f.directory("d"), f.file("d/x", big)]])
    env = {**os.environ, "LAYERDB_HOME": cat}
    for args in (["extract", "--path", "/big", "--image", "h:1"],
                 ["extract", "--path", "/", "--image", "h:1"],
                 ["sql", "select * from range(200000)"]):
        cmd = [sys.executable, "-m", "layerdb.cli", *args]
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        assert p.stdout is not None
        p.stdout.read(10)
        p.stdout.close()
        err = p.stderr.read() if p.stderr else b""
        assert p.wait() == -signal.SIGPIPE, (args, err)
        assert err == b"", (args, err)


def test_cli_warning_and_error_lines_escape_controls(tmp_path):
    cat = _image(tmp_path, [[f.file("ok", b"x"), f.hardlink("evil\x1b[2Jname", "gone")]])
    env = {**os.environ, "LAYERDB_HOME": cat}
    p = subprocess.run([sys.executable, "-m", "layerdb.cli", "extract", "--path", "/",
                        "--image", "h:1", "-o", str(tmp_path / "o")], capture_output=True, env=env)
    assert p.returncode == 0
    assert b"\x1b" not in p.stderr and b"evil\\x1b[2Jname" in p.stderr
    p = subprocess.run([sys.executable, "-m", "layerdb.cli", "extract", "--path",
                        "/no\x1b[31mpe", "--image", "h:1"], capture_output=True, env=env)
    assert p.returncode == 2 and p.stderr.count(b"\n") == 1
    assert b"\x1b" not in p.stderr and b"/no\\x1b[31mpe" in p.stderr
    assert stat.S_ISDIR(os.stat(tmp_path / "o").st_mode)


def test_extract_over_an_existing_tree_never_follows_its_links(tmp_path):
    cat = _image(tmp_path, [[f.directory("d"), f.file("d/x", b"new\n"), f.symlink("l", "d/x"),
                             f.file("f", b"file\n")]])
    out, victim = tmp_path / "o", tmp_path / "victim"
    victim.mkdir()
    out.mkdir()
    os.symlink(victim, out / "d")  # a planted link where the image has a directory
    os.symlink(victim / "f", out / "f")  # and where it has a file
    (out / "l").write_bytes(b"old")
    res = extract(path="/", image="h:1", catalog_root=cat, output=str(out))
    assert res.warnings == [] and os.listdir(victim) == []
    assert not (out / "d").is_symlink() and (out / "d" / "x").read_bytes() == b"new\n"
    assert not (out / "f").is_symlink() and (out / "f").read_bytes() == b"file\n"
    assert os.readlink(out / "l") == "d/x"
    extract(path="/", image="h:1", catalog_root=cat, output=str(out))  # again: same tree
    assert f.tree_listing(out)["/d/x"][4] == f.sha256_hex(b"new\n")


def test_tar_stream_keeps_raw_names(tmp_path):
    raw = b"caf\xe9"
    cat = _image(tmp_path, [_raw_layer([raw, b"ok"])])
    dest = tmp_path / "d"
    _naive_unpack(_stream(cat), dest)
    assert sorted(os.listdir(os.fsencode(dest))) == [raw, b"ok"]
    assert (dest / os.fsdecode(raw)).read_bytes() == raw


def test_raw_path_never_matches_a_name_that_only_displays_the_same(tmp_path):
    # the literal name `su\xff` (backslash, x, f, f) displays as the raw byte 0xff does
    cat = _image(tmp_path, [[f.file("bin/su\\xff", b"literal\n")]])
    assert _stream(cat, "/bin/su\\xff") == b"literal\n"
    with pytest.raises(PathNotFound, match="no such file or directory"):
        _stream(cat, "/bin/su" + os.fsdecode(b"\xff"))
