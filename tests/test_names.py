"""Names (issue 9): bare OCI tags qualified by the archive's name, retags said at ingest, twins
(one image as docker-archive and as OCI) and what ``--image`` matches, in what order; and
``ls --layer`` marks read from the member fates.

The archives are real: ``umoci`` builds the layouts, ``skopeo copy`` writes the oci-archives
(with a bare ``v1`` tag, as ``skopeo copy ... oci-archive:app.tar:v1`` does)."""
from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
from dataclasses import dataclass

import imagefactory as f
import pytest

from layerdb.cli import main
from layerdb.errors import ImageNotFound
from layerdb.selection import ImageRow, choose_image, matching
from layerdb.sources._images import archive_name, qualify_ref


@dataclass
class Result:
    returncode: int
    stdout: bytes
    stderr: bytes


@pytest.fixture()
def cli(capfdbinary: pytest.CaptureFixture[bytes], tmp_path: pathlib.Path):
    """``layerdb --catalog HOME ARGS...`` run in this process (a subprocess per call would
    cost half a second of start-up each): its exit status and captured output."""
    home = tmp_path / "home"

    def run(*args: str) -> Result:
        capfdbinary.readouterr()
        try:
            main(["--catalog", str(home), *args])
            code = 0
        except SystemExit as e:
            code = int(e.code or 0)
        out, err = capfdbinary.readouterr()
        return Result(code, out, err)

    run.home = home  # type: ignore[attr-defined]
    return run


def _ok(cli, *args: str) -> Result:
    r = cli(*args)
    assert r.returncode == 0, (args, r.stderr.decode())
    return r


def _images(cli) -> list[dict]:
    return json.loads(_ok(cli, "images", "--format", "json").stdout)


def _db_stat(home: pathlib.Path) -> tuple[int, int, int]:
    st = os.stat(home / "catalog.duckdb")
    return st.st_ino, st.st_size, st.st_mtime_ns


def _sh(*args: str, env: dict[str, str]) -> None:
    r = subprocess.run(args, capture_output=True, env=env)
    assert r.returncode == 0, (args, r.stderr.decode())


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Two umoci images (``/app/data`` is ``content A`` / ``content B``), each written by
    skopeo as an oci-archive tagged bare ``v1`` (alpha.tar, beta.tar) and as one tagged
    ``example.com/myapp:latest`` (rel-1.tar, rel-2.tar)."""
    if not f.have_tools():
        if os.environ.get("CI"):
            pytest.fail("umoci and skopeo are missing; scripts/setup.sh installs them")
        pytest.skip("umoci and skopeo are needed")
    work = tmp_path_factory.mktemp("names")
    env = {**os.environ, "TMPDIR": str(work)}
    out: dict[str, pathlib.Path] = {}
    for name, content, rel in (("alpha", b"content A\n", "rel-1"), ("beta", b"content B\n", "rel-2")):
        layout, bundle = work / f"{name}-layout", work / f"{name}-bundle"
        img = f"{layout}:v1"
        _sh("umoci", "init", "--layout", str(layout), env=env)
        _sh("umoci", "new", "--image", img, env=env)
        _sh("umoci", "unpack", "--rootless", "--image", img, str(bundle), env=env)
        (bundle / "rootfs" / "app").mkdir()
        (bundle / "rootfs" / "app" / "data").write_bytes(content)
        _sh("umoci", "repack", "--image", img, str(bundle), env=env)
        shutil.rmtree(bundle)
        sk = ["skopeo", "--insecure-policy", "--tmpdir", str(work), "copy", "-q", f"oci:{img}"]
        out[name] = work / f"{name}.tar"
        _sh(*sk, f"oci-archive:{out[name]}:v1", env=env)
        out[rel] = work / f"{rel}.tar"
        _sh(*sk, f"oci-archive:{out[rel]}:example.com/myapp:latest", env=env)
    index = json.loads(subprocess.run(["tar", "-xOf", str(out["alpha"]), "index.json"],
                                      capture_output=True, check=True).stdout)
    assert index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"] == "v1"
    return out


def test_bare_tags_of_two_archives_keep_two_names(archives, cli):
    for name in ("alpha", "beta"):
        r = _ok(cli, "ingest", str(archives[name]))
        assert b"moved" not in r.stderr
    rows = {r["name"]: r for r in _images(cli)}
    assert set(rows) == {"alpha:v1", "beta:v1"}  # the first image was not left nameless
    assert rows["alpha:v1"]["refs"] == ["alpha:v1"] and rows["beta:v1"]["refs"] == ["beta:v1"]
    for name, content in (("alpha", b"content A\n"), ("beta", b"content B\n")):
        assert _ok(cli, "extract", "--image", f"{name}:v1", "--path", "/app/data").stdout == content
    # skopeo's own way to pick the tag out of an archive still finds it
    r = _ok(cli, "ingest", f"oci-archive:{archives['alpha']}:v1")
    assert b"moved" not in r.stderr
    # a bare tag on its own names both: one error line naming them, not a silent pick
    r = cli("extract", "--image", "v1", "--path", "/app/data")
    assert r.returncode == 2 and r.stdout == b""
    [line] = r.stderr.decode().splitlines()
    assert "2 images match v1" in line and "alpha:v1" in line and "beta:v1" in line
    # a re-ingest of known archives takes the shortcut (the database is not even opened)
    before = _db_stat(cli.home)
    r = _ok(cli, "ingest", str(archives["alpha"]), str(archives["beta"]))
    assert b"moved" not in r.stderr and b"0 new" in r.stderr
    assert _db_stat(cli.home) == before


def test_retag_is_said_once_and_the_ref_names_the_new_image(archives, cli):
    _ok(cli, "ingest", str(archives["rel-1"]))
    [old] = _images(cli)
    r = _ok(cli, "ingest", "-q", str(archives["rel-2"]))
    new = next(i for i in _images(cli) if i["id"] != old["id"])
    assert r.stderr.decode() == (f"layerdb: ref example.com/myapp:latest moved from "
                                 f"{old['id'][:19]}… to {new['id'][:19]}…\n")
    rows = {i["id"]: i for i in _images(cli)}
    assert rows[new["id"]]["refs"] == ["example.com/myapp:latest"] and rows[old["id"]]["refs"] == []
    for asked in ("example.com/myapp:latest", "example.com/myapp"):
        got = _ok(cli, "extract", "--image", asked, "--path", "/app/data").stdout
        assert got == b"content B\n"
    # the old image is still there by its id
    got = _ok(cli, "extract", "--image", old["id"][7:19], "--path", "/app/data").stdout
    assert got == b"content A\n"
    before = _db_stat(cli.home)
    r = _ok(cli, "ingest", str(archives["rel-2"]))
    assert b"moved" not in r.stderr and _db_stat(cli.home) == before


def test_twins_are_one_image_by_config_digest(umoci_images, cli):
    r = _ok(cli, "ingest", umoci_images["docker-archive"], umoci_images["oci-archive"])
    assert b"moved" not in r.stderr  # twins share their refs: nothing moves
    rows = _images(cli)
    assert len(rows) == 2 and rows[0]["id"] != rows[1]["id"]
    config = rows[0]["config_digest"]
    assert config == rows[1]["config_digest"] and len(config) == 71
    assert all(f.SKOPEO_REF in row["refs"] for row in rows)
    table = _ok(cli, "images").stdout.decode().splitlines()
    assert table[0].split()[2] == "CONFIG_DIGEST"
    assert [line.split()[2] for line in table[1:]] == [config[7:19]] * 2
    for asked in (config[7:15], "sha256:" + config[7:15], config, f.SKOPEO_REF):
        got = _ok(cli, "extract", "--image", asked, "--path", "/etc/hello.txt").stdout
        assert got == b"hello\n", asked
        doc = json.loads(_ok(cli, "inspect", asked).stdout)
        assert doc["ConfigDigest"] == config
    # each twin by its own id
    for row in rows:
        assert json.loads(_ok(cli, "inspect", row["id"][7:19]).stdout)["Id"] == row["id"]


def _colliding_specs() -> tuple[f.ImageSpec, f.ImageSpec, str]:
    """Two images whose digests (image id or config digest) share their first 4 hex digits:
    a prefix that names both."""
    seen: dict[str, int] = {}
    layer = f.Layer([f.file("x", b"x\n")])
    for n in range(20000):
        b = f.build_image(f.ImageSpec([layer], tags=(f"example.com/amb:{n}",), labels={"n": str(n)}))
        for d in (b.manifest_digest, b.config_digest):
            p = d[7:11]
            if p in seen and seen[p] != n:
                m = seen[p]
                spec = f.ImageSpec([layer], tags=(f"example.com/amb:{m}",), labels={"n": str(m)})
                return spec, b.spec, p
            seen[p] = n
    raise AssertionError("no collision")


def test_ambiguous_prefix_is_one_error_line_with_the_candidates(cli, tmp_path):
    a, b, prefix = _colliding_specs()
    for i, spec in enumerate((a, b)):
        f.write_oci_archive(tmp_path / f"{i}.tar", [spec])
        _ok(cli, "ingest", "-q", str(tmp_path / f"{i}.tar"))
    for args in (("extract", "--image", prefix, "--path", "/x"), ("ls", prefix), ("inspect", prefix)):
        r = cli(*args)
        assert r.returncode == 2 and r.stdout == b"", args
        [line] = r.stderr.decode().splitlines()
        assert line.startswith(f"layerdb: error: 2 images match {prefix} by digest: "), line
        assert all(t in line for t in (a.tags[0], b.tags[0])), line
    # a longer prefix, or a ref, names one
    ids = {row["name"]: row["id"] for row in _images(cli)}
    for name, full in ids.items():
        assert json.loads(_ok(cli, "inspect", full[:23]).stdout)["Id"] == full
        assert json.loads(_ok(cli, "inspect", name).stdout)["Id"] == full


def test_ls_layer_marks_come_from_member_fates(cli, tmp_path):
    """/a/b of layer 0 leaves the stack at layer 1 (a file replaces its directory): the /a/b
    of layer 2 is added, not modified; /a itself was visible below each layer."""
    spec = f.ImageSpec([
        f.Layer([f.directory("a"), f.file("a/b", b"one\n"), f.file("c", b"c\n")]),
        f.Layer([f.file("a", b"now a file\n")]),
        f.Layer([f.directory("a"), f.file("a/b", b"two\n"), f.whiteout("c"), f.file("c", b"c2\n")]),
    ], tags=("example.com/fates:1",))
    arc = tmp_path / "fates.tar"
    f.write_oci_archive(arc, [spec])
    _ok(cli, "ingest", "-q", str(arc))

    def marks(n: int) -> list[tuple[str, str]]:
        rows = json.loads(_ok(cli, "ls", "example.com/fates:1", "--layer", str(n),
                              "--format", "json").stdout)
        return [(r["path"], r["status"]) for r in rows]

    assert marks(1) == [("/a", "modified")]
    # the whiteout of /c and the /c after it in one layer: the last member of a name speaks
    assert marks(2) == [("/a", "modified"), ("/a/b", "added"), ("/c", "modified")]
    assert _ok(cli, "extract", "--image", "example.com/fates:1", "--path", "/a/b").stdout == b"two\n"


# --image resolution and archive names, without a catalog --------------------------------------

def _row(i: str, refs: list[str], config: str = "", platform: str = "linux/amd64") -> ImageRow:
    return ImageRow("sha256:" + i * 64, refs[0] if refs else i * 12, refs, platform, [], [], "",
                    [], "sha256:" + (config or i) * 64)


def test_image_matching_order_and_twins():
    a = _row("a", ["example.com/app:v1"], "c")
    b = _row("b", ["example.com/app:v2", "beta:v1"], "d")
    twin = _row("e", ["example.com/app:v1"], "c")  # a's twin: one config digest
    rows = [a, b, twin]
    assert matching(rows, "example.com/app:v1") == ("ref", [a, twin])
    assert choose_image(rows, "example.com/app:v1", None) is a  # twins: the lowest id
    assert choose_image(rows, "cccc", None) is a and choose_image(rows, "sha256:bbbb", None) is b
    assert choose_image(rows, "beta", None) is b  # a repository without its tag
    assert matching(rows, "v1")[0] == "tag"
    with pytest.raises(ImageNotFound, match=r"^2 images match v1 by tag: example\.com/app:v1 \(id a{12}, config c{12}, "
                       r"linux/amd64, 2 twins\), beta:v1 \(id b{12}"):
        choose_image(rows, "v1", None)
    with pytest.raises(ImageNotFound, match="2 images match example.com/app by repository"):
        choose_image(rows, "example.com/app", None)
    with pytest.raises(ImageNotFound, match="no image matches 'abc'"):
        choose_image(rows, "abc", None)  # too short for a digest prefix
    arm = _row("f", ["example.com/app:v2"], "g", "linux/arm64")
    assert choose_image([b, arm], "example.com/app:v2", "arm64") is arm


@pytest.mark.parametrize(("path", "name"), [
    ("/x/app.tar", "app"), ("oci-archive:/x/My App.oci.tar.gz:v1", "my-app"), ("oci:/x/lay/", "lay"),
    ("docker-archive:/x/a:b.tar", "a-b"), ("-", None), ("/dev/fd/63", None), ("/x/.tar", "tar"),
])
def test_archive_name(path, name):
    assert archive_name(path) == name
    assert qualify_ref("v1", path) == (f"{name}:v1" if name else "v1")
    assert qualify_ref("example.com/app:v1", path) == "example.com/app:v1"
