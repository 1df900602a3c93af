"""Bad input: one clear error line naming the file and the problem, a non-zero exit, and the
catalog and cache exactly as they were. Also: an ingest killed with SIGKILL at any moment never
leaves part of an image visible, and the next ingest completes."""
from __future__ import annotations

import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import imagefactory as f
import pytest
import zstandard
from catalog_snapshot import snapshot, tmp_is_clean

GOOD_LAYERS = [f.Layer([f.directory("etc"), f.file("etc/a", b"a" * 5000)], "gzip"),
               f.Layer([f.file("etc/b", b"b" * 7000)], "zstd")]
GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
ZST = "application/vnd.oci.image.layer.v1.tar+zstd"


def _layerdb(*args: str, home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "LAYERDB_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                          text=True, env=env, timeout=120)


@pytest.fixture()
def home(tmp_path) -> Path:
    """A catalog that already holds one good image."""
    good = tmp_path / "good.tar"
    f.write_oci_archive(good, [f.ImageSpec(GOOD_LAYERS, tags=("good:1",))])
    h = tmp_path / "home"
    r = _layerdb("ingest", "-q", str(good), home=h)
    assert r.returncode == 0, r.stderr
    return h


def _one_layer(tmp_path: Path, name: str, layer: f.Layer, **kw) -> Path:
    p = tmp_path / name
    f.write_oci_archive(p, [f.ImageSpec([GOOD_LAYERS[0], layer], tags=("bad:1",), **kw)])
    return p


def _tar_layer(data: bytes) -> bytes:
    return f.tar_bytes([f.file("x", data)])


def _layout_with(tmp_path: Path, mutate) -> Path:  # type: ignore[no-untyped-def]
    d = tmp_path / "layout"
    built = f.write_oci_layout(d, [f.ImageSpec(GOOD_LAYERS + [f.Layer([f.file("c", b"c")])],
                                               tags=("bad:1",))])
    mutate(d, built[0])
    return d


def _blob(d: Path, digest: str) -> Path:
    return d / "blobs" / "sha256" / digest[7:]


def corrupt_gzip(tmp_path):
    data = bytearray(gzip.compress(_tar_layer(os.urandom(20000)), mtime=0))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\xff" * 16
    return _one_layer(tmp_path, "cgz.tar", f.Layer(bytes(data), "none", GZ)), "truncated or corrupt"


def truncated_gzip(tmp_path):
    data = gzip.compress(_tar_layer(os.urandom(20000)), mtime=0)
    return _one_layer(tmp_path, "tgz.tar", f.Layer(data[:-100], "none", GZ)), "truncated or corrupt"


def corrupt_zstd(tmp_path):
    data = bytearray(zstandard.ZstdCompressor().compress(_tar_layer(os.urandom(20000))))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\x00" * 16
    # zstd frames carry no checksum by default: the damage shows as a diff_id mismatch
    return _one_layer(tmp_path, "czst.tar", f.Layer(bytes(data), "none", ZST)), "hashes to"


def not_a_tar_layer(tmp_path):
    data = gzip.compress(b"this is not a tar stream at all" * 100, mtime=0)
    return _one_layer(tmp_path, "notar.tar", f.Layer(data, "none", GZ)), "not a tar stream"


def diff_id_mismatch(tmp_path):
    d = tmp_path / "dm.tar"
    wrong = "sha256:" + "1" * 64
    spec = f.ImageSpec(GOOD_LAYERS, tags=("bad:1",), config_extra={
        "rootfs": {"type": "layers", "diff_ids": [f.digest_of(GOOD_LAYERS[0].tar()), wrong]}})
    f.write_oci_archive(d, [spec])
    return d, "uncompressed content hashes to"


def blob_digest_mismatch(tmp_path):
    def mutate(d, b):
        p = _blob(d, b.layer_digests[2])
        data = bytearray(p.read_bytes())
        data[-1] ^= 1  # same size, other bytes
        p.write_bytes(bytes(data))
    return _layout_with(tmp_path, mutate), "digest mismatch"


def missing_blob(tmp_path):
    return _layout_with(tmp_path, lambda d, b: _blob(d, b.layer_digests[1]).unlink()), "missing"


def malformed_json(tmp_path):
    return _layout_with(tmp_path, lambda d, b: (d / "index.json").write_text("{not json")), \
        "malformed json"


def truncated_archive(tmp_path):
    p = tmp_path / "full.tar"
    f.write_docker_archive(p, [f.ImageSpec(GOOD_LAYERS + [f.Layer([f.file("big", os.urandom(50000))])],
                                           tags=("bad:1",))])
    size = p.stat().st_size
    return f.truncate_copy(p, tmp_path / "trunc.tar", size // 2), "truncated"


def not_an_image(tmp_path):
    p = tmp_path / "notes.txt"
    p.write_text("hello, I am not an image\n")
    return p, "not an image archive"


def plain_tar(tmp_path):
    p = tmp_path / "plain.tar"
    f._write_tar(p, [("some/file.txt", b"data")])
    return p, "not an image archive"


def unknown_media_type(tmp_path):
    layer = f.Layer([f.file("x", b"x")], "none", "application/vnd.example.weird.layer")
    return _one_layer(tmp_path, "mt.tar", layer), "media type"


def missing_file(tmp_path):
    return tmp_path / "does-not-exist.tar", "no such file"


def _config(tmp_path: Path, name: str, extra: dict) -> Path:
    p = tmp_path / name
    f.write_oci_archive(p, [f.ImageSpec(GOOD_LAYERS, tags=("bad:1",), config_extra=extra)])
    return p


# Config fields of the wrong JSON type: docker and containerd (Go's encoding/json) refuse them.
def env_not_a_list(tmp_path):
    return _config(tmp_path, "env.tar", {"config": {"Env": 5}}), \
        "config.env is a number, not an array of strings"


def deep_config(tmp_path):  # json.loads raises RecursionError at ~1,000 levels
    deep: object = 1
    for _ in range(2000):
        deep = [deep]
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(10000)  # for the factory's json.dumps
    try:
        return _config(tmp_path, "deep.tar", {"x": deep}), "nested more than 100 levels"
    finally:
        sys.setrecursionlimit(limit)


def deep_index(tmp_path):
    return _layout_with(tmp_path, lambda d, b: (d / "index.json").write_text("[" * 2000 + "]" * 2000)), \
        "index.json: json nested more than 100 levels"


def huge_index(tmp_path):  # refused before it is read, let alone parsed
    def mutate(d, b):
        doc = json.loads((d / "index.json").read_text())
        (d / "index.json").write_text(json.dumps(doc) + " " * (5 << 20))
    return _layout_with(tmp_path, mutate), "more than the 4 mib allowed for a json document"


def archive_bomb(tmp_path):
    """A 100 MiB tar of zeros gzipped as a whole (~100 KB): past 100x its size + 64 MiB."""
    import tarfile
    import zlib

    p = tmp_path / "bomb.tar.gz"
    head = tarfile.TarInfo("zeros")
    head.size = 100 << 20
    z = zlib.compressobj(6, zlib.DEFLATED, 31)
    with open(p, "wb") as out:
        out.write(z.compress(head.tobuf()))
        zero = bytes(1 << 20)
        for _ in range(100):
            out.write(z.compress(zero))
        out.write(z.compress(bytes(1024)) + z.flush())
    assert p.stat().st_size < 1 << 20
    return p, "refused as a likely compression bomb"


CASES = [corrupt_gzip, truncated_gzip, corrupt_zstd, not_a_tar_layer, diff_id_mismatch,
         blob_digest_mismatch, missing_blob, malformed_json, truncated_archive, not_an_image,
         plain_tar, unknown_media_type, missing_file, env_not_a_list, deep_config, deep_index,
         huge_index, archive_bomb]

# The same checks in-process (each end-to-end case above costs an ingest): field, JSON, message.
CONFIG_FIELDS = [
    ({"history": 7}, "history is a number, not an array"),
    ({"config": "oops"}, "config is a string, not an object"),
    ({"config": {"Labels": {"a": "1", "b": 2}}}, "config.Labels['b'] is a number, not a string"),
    ({"config": {"Cmd": ["sh", ["x"]]}}, "config.Cmd[1] is an array, not a string"),
    ({"config": {"Entrypoint": {"a": 1}}}, "config.Entrypoint is an object, not an array of strings"),
    ({"config": {"WorkingDir": 1}}, "config.WorkingDir is a number, not a string"),
    ({"config": {"User": False}}, "config.User is a boolean, not a string"),
    ({"config": {"ExposedPorts": ["80/tcp"]}}, "config.ExposedPorts is an array, not an object"),
    ({"history": [{"created_by": 3}]}, "history[0].created_by is a number, not a string"),
    ({"history": [{"empty_layer": "yes"}]}, "history[0].empty_layer is a string, not a boolean"),
    ({"history": ["x"]}, "history[0] is a string, not an object"),
    ({"rootfs": {"type": "layers", "diff_ids": [1]}}, "rootfs.diff_ids[0] is a number, not a string"),
    # a malformed digest is named with where it is (it was a bare "invalid digest ..."), and
    # a huge one is cut
    ({"rootfs": {"type": "layers", "diff_ids": ["sha256:" + "0" * 64, "sha256:zz"]}},
     "rootfs.diff_ids[1]: invalid digest 'sha256:zz'"),
    ({"rootfs": {"type": "layers", "diff_ids": ["x" * 5000]}},
     "rootfs.diff_ids[0]: invalid digest '" + "x" * 80 + "'... (5000 characters)"),
    ({"rootfs": []}, "rootfs is an array, not an object"),
    ({"os": 5}, "os is a number, not a string"),
]


@pytest.mark.parametrize("extra,message", CONFIG_FIELDS,
                         ids=[m.split(" is ")[0].split(":")[0] + str(i) for i, (_, m) in enumerate(CONFIG_FIELDS)])
def test_config_field_of_the_wrong_type(extra, message):
    from layerdb.errors import SourceError
    from layerdb.model import parse_config

    doc = {"architecture": "amd64", "os": "linux", "config": {"Env": ["A=1"], "Cmd": "sh"},
           "rootfs": {"type": "layers", "diff_ids": []}, **extra}
    with pytest.raises(SourceError) as e:
        parse_config(json.dumps(doc).encode(), "img.tar: config sha256:ab")
    assert str(e.value) == f"img.tar: config sha256:ab: {message}"


def test_config_fields_docker_accepts_still_parse():
    """null anywhere, a string Cmd/Entrypoint (docker's StrSlice), container_config alone."""
    from layerdb.model import parse_config

    c = parse_config(json.dumps({"config": None, "container_config": {"Cmd": "sh -c x", "Env": None},
                                 "history": None, "rootfs": {"diff_ids": None}, "os": None}).encode())
    assert (c.cmd, c.env, c.history, c.diff_ids, c.os) == (("sh -c x",), (), (), (), "")


@pytest.mark.parametrize("raw,message", [
    (b"[" * 101 + b"]" * 101, "x: JSON nested more than 100 levels deep"),
    (b'{"a": "[[[[' + b"[" * 200 + b'"}', None),  # brackets inside a string do not count
    (b'{"a": "\\"' + b"[" * 200 + b'"}', None),  # nor after an escaped quote
    (b"{" * 5, "x: malformed JSON"),
    (b" " * ((4 << 20) + 1), "x: 4194305 bytes is more than the 4 MiB allowed for a JSON document"),
])
def test_json_limits(raw, message):
    from layerdb.errors import SourceError
    from layerdb.model import decode_json

    if message is None:
        assert isinstance(decode_json(raw, "x"), dict)
        return
    with pytest.raises(SourceError) as e:
        decode_json(raw, "x")
    assert str(e.value).startswith(message)


@pytest.mark.parametrize("case", CASES, ids=[c.__name__ for c in CASES])
def test_bad_input_refused_cleanly(case, home, tmp_path):
    bad, problem = case(tmp_path)
    before = snapshot(home)
    r = _layerdb("ingest", "-q", str(bad), home=home)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("layerdb: error: ")
    assert bad.name in lines[0] and problem in lines[0].lower(), lines[0]
    assert "Traceback" not in r.stderr
    assert snapshot(home) == before
    assert tmp_is_clean(home)


def test_good_archives_still_go_in_beside_a_bad_one(home, tmp_path):
    bad, _ = corrupt_gzip(tmp_path)
    other = tmp_path / "other.tar"
    f.write_oci_archive(other, [f.ImageSpec([f.Layer([f.file("o", b"other")])], tags=("other:1",))])
    r = _layerdb("ingest", "-q", str(bad), str(other), home=home)
    assert r.returncode == 1 and len(r.stderr.strip().splitlines()) == 1
    r = _layerdb("images", "--format", "json", home=home)
    names = sorted(i["name"] for i in json.loads(r.stdout))
    assert names == ["good:1", "other:1"]


def test_cli_errors_are_one_line(home):
    for args, code in ((["extract", "--path", "/nope", "--image", "good:1"], 2),
                       (["extract", "--path", "/etc/a", "--image", "missing:1"], 2),
                       (["layers", "missing:1"], 2)):
        r = _layerdb(*args, home=home)
        assert r.returncode == code, (args, r.stderr)
        assert len(r.stderr.strip().splitlines()) == 1 and r.stderr.startswith("layerdb: error: ")


def test_sql_error_keeps_duckdbs_hint(home):
    """One error line with DuckDB's "Did you mean" hint (the echo of the query is dropped),
    never a traceback."""
    r = _layerdb("sql", "select * from fss", home=home)
    assert r.returncode == 1 and "Traceback" not in r.stderr
    assert r.stderr.splitlines() == ['layerdb: error: query failed: Catalog Error: Table with name '
                                     'fss does not exist! Did you mean "fs"?']


def _visible_state(home: Path) -> list:
    """Images visible in the catalog, each checked to be whole."""
    from layerdb.catalog import Catalog

    with Catalog(str(home)) as cat:
        _, imgs = cat.query("select id, layer_count from images")
        for image_id, n in imgs:
            _, layers = cat.query("select l.diff_id from image_layers l join layers m using (diff_id) "
                                  "where image_id = $i", {"i": image_id})
            assert len(layers) == n
            for (d,) in layers:
                assert (home / "blobs" / "sha256" / (d[7:] + ".zst")).exists()
                assert (home / "files" / (d[7:] + ".parquet")).exists()
                assert (home / "files" / (d[7:] + ".idx")).exists()
            assert (home / "members" / (image_id[7:] + ".parquet")).exists()
            assert (home / "members" / (image_id[7:] + ".fate")).exists()
            cat.query("select count(*) from fs where image_id = $i", {"i": image_id})
        return sorted(i for i, _ in imgs)


def test_kill_9_never_leaves_half_an_image(tmp_path):
    big = tmp_path / "big.tar"
    rnd = lambda n: os.urandom(n)  # noqa: E731
    layers = [f.Layer([f.file(f"l{i}/f{j}", rnd(400_000)) for j in range(12)], c)
              for i, c in enumerate(("gzip", "zstd", "none", "gzip"))]
    f.write_oci_archive(big, [f.ImageSpec(layers, tags=("big:1",))])
    home = tmp_path / "home"
    env = {**os.environ, "LAYERDB_HOME": str(home)}
    outcomes = set()
    for delay in (0.05, 0.3, 0.6, 0.9, 1.2, 1.6, 2.5):
        p = subprocess.Popen([sys.executable, "-m", "layerdb.cli", "ingest", "-q", "-j", "2", str(big)],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                             start_new_session=True)
        time.sleep(delay)
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()
        if (home / "catalog.duckdb").exists():
            state = _visible_state(home)
            assert len(state) in (0, 1)
            outcomes.add(len(state))
            if state:
                break
    r = subprocess.run([sys.executable, "-m", "layerdb.cli", "ingest", "-q", str(big)], env=env,
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert len(_visible_state(home)) == 1
    assert tmp_is_clean(home)
    r = subprocess.run([sys.executable, "-m", "layerdb.cli", "extract", "--path", "/l3/f11",
                        "--image", "big:1"], env=env, capture_output=True)
    assert r.returncode == 0 and len(r.stdout) == 400_000
    assert 0 in outcomes  # at least one kill landed mid-ingest
    # and no worker or forkserver of the killed ingests lives on
    deadline = time.monotonic() + 10
    while _processes_with(f"LAYERDB_HOME={home}") and time.monotonic() < deadline:
        time.sleep(0.2)
    assert _processes_with(f"LAYERDB_HOME={home}") == []


def _processes_with(env_entry: str) -> list[int]:
    """Processes (other than this one) whose environment holds ``env_entry``."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as fh:
                env = fh.read().split(b"\0")
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    continue
        except OSError:
            continue
        if env_entry.encode() in env:
            found.append(int(pid))
    return found


def test_shared_layer_corrupt_in_one_archive_only(home, tmp_path):
    """Two archives carry the same diff_id; the first copy is damaged. The second archive
    reads its own copy and goes in; the first is refused."""
    layer = f.Layer([f.file("shared", b"s" * 20000)], "gzip")
    good_layout = tmp_path / "ok"
    f.write_oci_layout(good_layout, [f.ImageSpec([layer], tags=("ok:1",))])
    bad_layout = tmp_path / "damaged"
    built = f.write_oci_layout(bad_layout, [f.ImageSpec([layer], tags=("damaged:1",))])
    p = _blob(bad_layout, built[0].layer_digests[0])
    data = bytearray(p.read_bytes())
    data[-1] ^= 1
    p.write_bytes(bytes(data))
    r = _layerdb("ingest", "-q", "-j", "2", str(bad_layout), str(good_layout), home=home)
    assert r.returncode == 1
    assert "damaged" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    r = _layerdb("extract", "--path", "/shared", "--image", "ok:1", home=home)
    assert r.returncode == 0 and r.stdout == "s" * 20000


def test_reingest_after_a_kill_cleans_staging(tmp_path):
    """A re-ingest that finds everything known (and so never opens the catalog) still clears
    the staging a killed ingest left."""
    arch = tmp_path / "a.tar"
    f.write_oci_archive(arch, [f.ImageSpec(GOOD_LAYERS, tags=("good:1",))])
    home = tmp_path / "home"
    assert _layerdb("ingest", "-q", str(arch), home=home).returncode == 0
    dead = subprocess.Popen(["true"])
    dead.wait()
    stale = home / "tmp" / f"ingest-{dead.pid}-x"
    stale.mkdir(parents=True)
    (stale / "leftover.zst.tmp").write_bytes(b"x")
    assert _layerdb("ingest", "-q", str(arch), home=home).returncode == 0
    assert tmp_is_clean(home)


def test_a_10kb_name_in_an_error_is_one_bounded_line(tmp_path):
    """A name past NAME_MAX (extract writes raw names) is skipped with one printable warning
    line of bounded length; the rest is extracted."""
    arc = tmp_path / "long.tar"
    f.write_oci_archive(arc, [f.ImageSpec([f.Layer([f.file("etc/ok", b"ok"),
                                                    f.file("d/" + "x" * 10000 + "\x1b[2J", b"l")])],
                                          tags=("long:1",))])
    home = tmp_path / "home"
    assert _layerdb("ingest", "-q", str(arc), home=home).returncode == 0
    r = _layerdb("extract", "--path", "/", "--image", "long:1", "-o", str(tmp_path / "out"), home=home)
    assert r.returncode == 0 and "Traceback" not in r.stderr and "internal error" not in r.stderr
    warn = [ln for ln in r.stderr.splitlines() if ln.startswith("layerdb: warning: ")]
    assert len(warn) == 1 and "longer than 255 bytes" in warn[0] and len(warn[0]) < 1100
    assert "\x1b" not in r.stderr
    assert (tmp_path / "out" / "etc" / "ok").read_bytes() == b"ok"


def test_disk_full_while_decompressing_an_archive(tmp_path, monkeypatch):
    """ENOSPC writing the decompressed copy reads as a full disk, not as corrupt data."""
    from layerdb.errors import NoSpace
    from layerdb.sources import _open

    arc = tmp_path / "a.tar.gz"
    arc.write_bytes(gzip.compress(os.urandom(3 << 20)))
    victim = tmp_path / "tmp" / "victim.tar"
    victim.parent.mkdir()
    victim.write_bytes(b"")
    monkeypatch.setattr(_open.tempfile, "mkstemp",
                        lambda **kw: (os.open("/dev/full", os.O_WRONLY), str(victim)))
    with pytest.raises(NoSpace, match=r"a\.tar\.gz: decompressing into .*: no space left on device$"):
        _open.decompress_to_temp(str(arc), "gzip", str(tmp_path / "tmp"))
    assert not victim.exists()  # the partial copy is gone


@pytest.fixture()
def tiny_fs(tmp_path):
    """A 4 MiB tmpfs (root only): a disk that really fills."""
    d = tmp_path / "tiny"
    d.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(d)],
                       capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
    yield d
    subprocess.run(["umount", "-l", str(d)], check=False)


def test_disk_full_during_ingest_says_so(tiny_fs, tmp_path):
    """A layer bigger than the disk: `no space left on device`, not `corrupt gzip data`; the
    catalog is as it was and staging is cleaned."""
    good = tmp_path / "good.tar"
    f.write_oci_archive(good, [f.ImageSpec(GOOD_LAYERS, tags=("good:1",))])
    home = tiny_fs / "home"
    assert _layerdb("ingest", "-q", str(good), home=home).returncode == 0
    before = snapshot(home)
    big = tmp_path / "big.tar"
    f.write_oci_archive(big, [f.ImageSpec([f.Layer([f.file("r", os.urandom(6 << 20))], "gzip")],
                                          tags=("big:1",))])
    r = _layerdb("ingest", "-q", "-j", "1", str(big), home=home)
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.splitlines()) == 1 and r.stderr.rstrip().endswith("no space left on device"), r.stderr
    assert "corrupt" not in r.stderr
    assert snapshot(home) == before
    assert tmp_is_clean(home)
