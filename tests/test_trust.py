"""Trust: what the catalog records under hostile input, and what `layerdb sql` may touch.
Also the housekeeping that repairs and cleans a catalog: rm, gc, verify."""
from __future__ import annotations

import hashlib
import io
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import imagefactory as f
import pytest
from catalog_snapshot import snapshot, tmp_is_clean

BASE = f.Layer([f.directory("etc"), f.file("etc/base", b"base" * 1000)], "gzip")
APP = f.Layer([f.directory("app"), f.file("app/run", b"#!/bin/sh\necho hi\n", 0o755)], "zstd")


def _layerdb(*args: str, home: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAYERDB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                          text=True, env=env, timeout=timeout)


def _ok(*args: str, home: Path) -> str:
    r = _layerdb(*args, home=home)
    assert r.returncode == 0, r.stderr
    return r.stdout


def _bytes_of(root: Path) -> dict[str, str]:
    out = {}
    for p in sorted(root.rglob("*")):
        if p.is_file() and "tmp" not in p.relative_to(root).parts and p.name != "catalog.lock":
            out[str(p.relative_to(root))] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


@pytest.fixture()
def home(tmp_path) -> Path:
    f.write_oci_archive(tmp_path / "a.tar", [f.ImageSpec([BASE, APP], tags=("app:1",))])
    h = tmp_path / "home"
    _ok("ingest", "-q", str(tmp_path / "a.tar"), home=h)
    return h


@pytest.fixture(scope="module")
def shared_home(tmp_path_factory) -> Path:
    """A catalog the read-only tests share (they assert it never changes)."""
    tmp = tmp_path_factory.mktemp("shared")
    f.write_oci_archive(tmp / "a.tar", [f.ImageSpec([BASE, APP], tags=("app:1",))])
    _ok("ingest", "-q", str(tmp / "a.tar"), home=tmp / "home")
    return tmp / "home"


@pytest.mark.parametrize("query", [
    "copy (select * from images) to '{out}/x.csv'",
    "copy (select 1) to '{home}/catalog.duckdb'",
    "export database '{out}/exp'",
    "install httpfs",
    "load httpfs",
    "attach '{out}/y.duckdb' as y",
    "create table t as select 1",
    "insert into image_refs values ('evil:1', 'x', 0)",
    "set enable_external_access = true",
    "select * from read_text('/etc/passwd')",
    "select * from read_csv('/etc/passwd')",
    "select * from read_parquet('{out}/*.parquet')",
    "select 1; drop table image_meta",
    "pragma database_size",
    "checkpoint",
])
def test_sql_only_reads_the_catalog(shared_home, tmp_path, query):
    home = shared_home
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.parquet").write_bytes(b"")
    before = _bytes_of(home)
    r = _layerdb("sql", query.format(out=out, home=home), home=home)
    assert r.returncode == 1, r.stdout
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("layerdb: error: ")
    assert _bytes_of(home) == before
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet"]
    # and the catalog still works
    assert "app:1" in _ok("sql", "select name from images", home=home)


def test_sql_reads_named_tables_and_writes_only_through_o(shared_home, tmp_path):
    home = shared_home
    cves = tmp_path / "cves.csv"
    sha = hashlib.sha256(b"#!/bin/sh\necho hi\n").hexdigest()
    cves.write_text(f"sha256,cve\n{sha},CVE-0000-1\n")
    got = _ok("sql", "select f.path, c.cve from fs f join cves c using (sha256)",
              "--table", f"cves={cves}", "--format", "csv", home=home)
    assert got.splitlines() == ["path,cve", "/app/run,CVE-0000-1"]
    r = _layerdb("sql", "select 1", "--table", "x=/nonexistent.csv", home=home)
    assert r.returncode == 2 and "no such file" in r.stderr
    _ok("sql", "select path, size from fs order by path", "-o", str(tmp_path / "o.parquet"), home=home)
    import pyarrow.parquet as pq

    assert pq.read_table(tmp_path / "o.parquet").column("path").to_pylist()[-1] == "/etc/base"


def test_a_fabricated_blob_of_a_known_layer_is_refused(home, tmp_path):
    """Bytes that a manifest names under a known diff_id are read and checked, never recorded
    unverified: the archive is refused, nothing changes."""
    known = hashlib.sha256(BASE.tar()).hexdigest()
    fake = f.Layer([f.file("etc/base", b"not the base layer")], "gzip")
    spec = f.ImageSpec([fake], tags=("fake:1",),
                       config_extra={"rootfs": {"type": "layers", "diff_ids": ["sha256:" + known]}})
    f.write_oci_archive(tmp_path / "fake.tar", [spec])
    before = snapshot(home)
    r = _layerdb("ingest", "-q", str(tmp_path / "fake.tar"), home=home)
    assert r.returncode == 1
    assert r.stderr.count("\n") == 1 and "unpacks to" in r.stderr and "not to the layer's diff_id" in r.stderr
    assert snapshot(home) == before
    assert tmp_is_clean(home)


def test_a_new_blob_of_a_known_layer_is_checked_then_recorded(home, tmp_path):
    """The same layer compressed otherwise (a new blob digest) is verified, not re-read
    into the cache, and its digest then recorded."""
    again = f.Layer(BASE.content, "zstd")
    f.write_oci_archive(tmp_path / "b.tar", [f.ImageSpec([again], tags=("base:zstd",))])
    _ok("ingest", "-q", str(tmp_path / "b.tar"), home=home)
    n = _ok("sql", "select len(digests) from layers where diff_id = :d", "-p", "d",
            "sha256:" + hashlib.sha256(BASE.tar()).hexdigest(), "--format", "csv", home=home)
    assert n.splitlines()[1] == "2"


def test_verify_flag_reads_known_blobs(home, tmp_path):
    """A corrupt copy of a layer whose blob digest is already known goes unnoticed without
    --verify (nothing of it is read or recorded); --verify reads it and refuses the archive."""
    f.write_oci_layout(tmp_path / "lay", [f.ImageSpec([BASE, APP], tags=("app:1",))])
    blobs = tmp_path / "lay" / "blobs" / "sha256"
    target = blobs / hashlib.sha256(f.compress(BASE.tar(), "gzip")).hexdigest()  # the base layer
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    assert _layerdb("ingest", "-q", str(tmp_path / "lay"), home=home).returncode == 0
    before = snapshot(home)
    r = _layerdb("ingest", "-q", "--verify", str(tmp_path / "lay"), home=home)
    assert r.returncode == 1 and r.stderr.count("\n") == 1
    assert snapshot(home) == before


def test_raw_byte_names_do_not_collide_end_to_end(tmp_path):
    """A setuid file under a raw non-UTF-8 name next to a harmless file whose name prints
    the same: both are in fs and the setuid report finds the raw one."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.GNU_FORMAT, encoding="utf-8",
                      errors="surrogateescape") as tf:
        tf.addfile(f.directory("bin")[0])
        raw = tarfile.TarInfo("bin/su\udcff")
        raw.mode, raw.size = 0o4755, 3
        tf.addfile(raw, io.BytesIO(b"su!"))
        lit = tarfile.TarInfo("bin/su\\xff")
        lit.mode, lit.size = 0o644, 3
        tf.addfile(lit, io.BytesIO(b"lit"))
    f.write_oci_archive(tmp_path / "c.tar", [f.ImageSpec([f.Layer(buf.getvalue())], tags=("c:1",))])
    h = tmp_path / "home"
    _ok("ingest", "-q", str(tmp_path / "c.tar"), home=h)
    rows = _ok("sql", "select path, raw_path is not null as raw, mode from fs where parent = '/bin' "
               "order by raw", "--format", "json", home=h)
    assert json.loads(rows) == [{"path": "/bin/su\\xff", "raw": False, "mode": 0o644},
                                {"path": "/bin/su\\xff", "raw": True, "mode": 0o4755}]
    setuid = _ok("report", "setuid", "--format", "csv", home=h)
    assert setuid.count("/bin/su") == 1 and "4755" in setuid
    # both extract: the raw one by its bytes, the literal one by its name
    env = {**os.environ, "LAYERDB_HOME": str(h)}
    got = subprocess.run([sys.executable, "-m", "layerdb.cli", "extract", "--image", "c:1",
                          "--path", os.fsdecode(b"/bin/su\xff")], env=env, capture_output=True)
    assert got.stdout == b"su!"
    got = subprocess.run([sys.executable, "-m", "layerdb.cli", "extract", "--image", "c:1",
                          "--path", "/bin/su\\xff"], env=env, capture_output=True)
    assert got.stdout == b"lit"


def test_implied_directory_extracts(tmp_path):
    f.write_oci_archive(tmp_path / "d.tar", [f.ImageSpec([f.Layer([f.file("d7/x", b"x7")])],
                                                         tags=("d:1",))])
    h = tmp_path / "home"
    _ok("ingest", "-q", str(tmp_path / "d.tar"), home=h)
    _ok("extract", "--image", "d:1", "--path", "/d7", "-o", str(tmp_path / "out"), home=h)
    assert (tmp_path / "out" / "x").read_bytes() == b"x7"
    rows = _ok("sql", "select path, type, idx from fs order by path", "--format", "csv", home=h)
    assert rows.splitlines() == ["path,type,idx", "/d7,dir,-1", "/d7/x,file,0"]


def test_rm_untags_then_forgets_and_gc_frees(home, tmp_path):
    f.write_oci_archive(tmp_path / "b.tar", [f.ImageSpec([BASE], tags=("base:1", "base:stable"))])
    _ok("ingest", "-q", str(tmp_path / "b.tar"), home=home)
    assert _ok("rm", "base:stable", home=home) == "Untagged: base:stable\n"
    out = _ok("rm", "base:1", home=home)
    assert out.startswith("Untagged: base:1\nDeleted: sha256:")
    assert _ok("images", "--format", "csv", home=home).count("\n") == 2  # header + app:1
    # the base layer is still used by app:1: gc keeps it, and frees only the image's tables
    files_before = sorted(p.name for p in (home / "files").iterdir())
    gc = _ok("gc", home=home)
    assert gc.startswith("0 unused layer(s), 2 file(s)")
    assert sorted(p.name for p in (home / "files").iterdir()) == files_before
    _ok("rm", "app:1", home=home)
    assert _ok("gc", "--dry-run", home=home).startswith("2 unused layer(s)")
    assert len(list((home / "files").iterdir())) == 4
    _ok("gc", home=home)
    for d in ("files", "members", "blobs/sha256"):
        assert list((home / d).iterdir()) == [], d
    assert _ok("sql", "select count(*) from layers", "--format", "csv", home=home).splitlines()[1] == "0"
    r = _layerdb("rm", "nope:1", home=home)
    assert r.returncode == 2 and r.stderr.count("\n") == 1


def test_verify_names_damage_and_the_repair(home, tmp_path):
    assert _layerdb("verify", home=home).returncode == 0
    blob = next((home / "blobs" / "sha256").iterdir())
    data = bytearray(blob.read_bytes())
    data[20] ^= 0xFF
    blob.write_bytes(bytes(data))
    members = next((home / "members").glob("*.parquet"))
    members.write_bytes(members.read_bytes()[:100])
    r = _layerdb("verify", "--format", "csv", home=home)
    assert r.returncode == 1
    lines = r.stdout.splitlines()
    assert len(lines) == 3 and all("re-ingest " in ln for ln in lines[1:]), r.stderr
    assert any(blob.name in ln for ln in lines) and any(members.name in ln for ln in lines)
    assert r.stderr == "layerdb: error: 2 problem(s) in 3 checked item(s)\n"
    # images still lists; a query over the damaged table names the file and verify
    assert "app:1" in _ok("images", home=home)
    r = _layerdb("sql", "select count(*) from fs", home=home)
    assert r.returncode == 1 and r.stderr.count("\n") == 1 and "layerdb verify" in r.stderr


def test_second_writer_waits_then_gives_up(home, tmp_path):
    import fcntl

    fd = os.open(home / "catalog.lock", os.O_RDWR)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        f.write_oci_archive(tmp_path / "b.tar", [f.ImageSpec([BASE], tags=("base:1",))])
        t = time.monotonic()
        r = _layerdb("ingest", "--wait", "1", str(tmp_path / "b.tar"), home=home)
        assert 0.9 < time.monotonic() - t < 30
        assert r.returncode == 1
        assert r.stderr.splitlines()[0].startswith("layerdb: waiting for another ingest to finish")
        assert "gave up after 1s" in r.stderr.splitlines()[-1]
        # readers are not blocked by a writer's lock
        assert "app:1" in _ok("images", home=home)
    finally:
        os.close(fd)


def test_a_stale_or_foreign_lookup_index_is_never_believed(home, tmp_path):
    """The re-ingest shortcut and extract trust lookup.sqlite only for the database it was
    written for: a copy from another catalog makes ingest do the real work."""
    other = tmp_path / "other"
    f.write_oci_archive(tmp_path / "b.tar", [f.ImageSpec([APP], tags=("b:1",))])
    _ok("ingest", "-q", str(tmp_path / "b.tar"), home=other)
    (home / "lookup.sqlite").write_bytes((other / "lookup.sqlite").read_bytes())
    _ok("ingest", "-q", str(tmp_path / "b.tar"), home=home)
    assert "b:1" in _ok("images", home=home)
    assert _ok("extract", "--image", "b:1", "--path", "/app/run", home=home) == "#!/bin/sh\necho hi\n"


def test_gc_after_kill_9_leaves_only_what_images_name(tmp_path):
    big = tmp_path / "big.tar"
    layers = [f.Layer([f.file(f"l{i}/f{j}", os.urandom(300_000)) for j in range(10)], "gzip")
              for i in range(3)]
    f.write_oci_archive(big, [f.ImageSpec(layers, tags=("big:1",))])
    home = tmp_path / "home"
    env = {**os.environ, "LAYERDB_HOME": str(home)}
    p = subprocess.Popen([sys.executable, "-m", "layerdb.cli", "ingest", "-q", "-j", "2", str(big)],
                         env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not list((home / "files").glob("*.idx")) \
            if (home / "files").exists() else time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    time.sleep(0.5)  # the workers notice their parent is gone
    if (home / "catalog.duckdb").exists() and "big:1" in _ok("images", home=home):
        pytest.skip("the ingest finished before the kill")
    _ok("gc", home=home)
    assert tmp_is_clean(home)
    for d in ("files", "members"):
        assert list((home / d).iterdir()) == [], d
    _ok("ingest", "-q", str(big), home=home)
    assert _layerdb("verify", home=home).returncode == 0
