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


# Index children, digest references, older catalogs' bare tags ----------------------------------

CHILD_NAMES = {"org.opencontainers.image.ref.name": "ubuntu", "org.opencontainers.image.version": "24.04",
               "io.containerd.image.name": "docker.io/library/ubuntu:24.04"}


def _annotated_index(root: pathlib.Path, tag: str, platforms: tuple[str, ...]) -> tuple[str, list[str]]:
    """An OCI layout at ``root`` whose ``index.json`` names one index, tagged ``tag``, of one
    image per platform (its ``/id`` holds ``PLATFORM #N``); each child descriptor carries ref
    annotations (CHILD_NAMES), which are no refs of an index blob's child. Returns the index
    digest and the children's manifest digests, in ``platforms`` order."""
    specs = [f.ImageSpec([f.Layer([f.file("id", f"{p} #{i}\n".encode())], "gzip")], platform=p)
             for i, p in enumerate(platforms)]
    [built] = f.write_oci_layout(root, [f.IndexSpec(specs, tags=[tag])])
    doc = json.loads(built.index)
    for m in doc["manifests"]:
        m["annotations"] = CHILD_NAMES
    raw = json.dumps(doc).encode()
    digest = f.digest_of(raw)
    (root / "blobs" / "sha256" / digest[7:]).write_bytes(raw)
    top = json.loads((root / "index.json").read_bytes())
    top["manifests"][0].update(digest=digest, size=len(raw))
    (root / "index.json").write_text(json.dumps(top))
    return digest, [m["digest"] for m in doc["manifests"]]


def _id_of(cli, *image_args: str) -> bytes:
    """What ``/id`` holds in the image ``--image ...`` selects (extract: the lookup index)."""
    return _ok(cli, "extract", "--path", "/id", "--image", *image_args).stdout


def _refused(cli, *image_args: str) -> str:
    """The one error line of a selection that names no single image (exit 2, nothing out)."""
    r = cli("inspect", *image_args)
    assert r.returncode == 2 and r.stdout == b"", (image_args, r.stderr)
    [line] = r.stderr.decode().splitlines()
    return line


def test_oci_index_children_carry_the_index_refs_only(cli, tmp_path):
    index, (amd, arm) = _annotated_index(tmp_path / "lay", "v1", ("linux/amd64", "linux/arm64"))
    r = _ok(cli, "ingest", str(tmp_path / "lay"))
    assert b"moved" not in r.stderr
    rows = {i["id"]: i for i in _images(cli)}
    assert set(rows) == {amd, arm}
    assert [rows[amd]["refs"], rows[arm]["refs"]] == [["lay:v1"], ["lay:v1"]]  # not lay:ubuntu, ubuntu:24.04
    assert (rows[amd]["platform"], rows[arm]["platform"]) == ("linux/amd64", "linux/arm64")
    assert _id_of(cli, "lay:v1", "--platform", "arm64") == b"linux/arm64 #1\n"
    assert _id_of(cli, "lay:v1") == b"linux/amd64 #0\n"  # the host's (the CI machines are amd64)
    # docker's digest reference: an index's digest is what docker would pull from it
    assert _id_of(cli, f"lay@{index}") == b"linux/amd64 #0\n"
    assert _id_of(cli, f"lay@{index}", "--platform", "linux/arm64") == b"linux/arm64 #1\n"
    assert _id_of(cli, f"anything:v9@{arm}") == b"linux/arm64 #1\n"  # the digest decides
    assert json.loads(_ok(cli, "inspect", f"lay@{arm}").stdout)["Id"] == arm  # the duckdb path too
    assert json.loads(_ok(cli, "inspect", f"lay@{index}", "--platform", "arm64").stdout)["Id"] == arm
    assert _refused(cli, "ubuntu:24.04").startswith("layerdb: error: no image matches 'ubuntu:24.04'")
    assert _refused(cli, f"lay@{index}", "--platform", "s390x") == (
        f"layerdb: error: no image matches 'lay@{index}' for platform linux/s390x; "
        "present: linux/amd64, linux/arm64")
    # a digest reference needs the whole digest, as docker's does
    assert _refused(cli, f"lay@{arm[:20]}").startswith("layerdb: error: no image matches")


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    """Debian's docker-registry on 127.0.0.1, holding app/multi:v1: an index (pushed by
    ``skopeo copy --all``) of an amd64 image and two arm64 images, children annotated as in
    ``_annotated_index``."""
    import registry_fixture as rf

    if not rf.have_registry():
        if os.environ.get("CI"):
            pytest.fail("docker-registry is missing; scripts/setup.sh installs it")
        pytest.skip("docker-registry and skopeo are needed")
    work = tmp_path_factory.mktemp("names-registry")
    index, children = _annotated_index(work / "multi", "v1", ("linux/amd64", "linux/arm64", "linux/arm64"))
    reg = rf.Registry(work / "reg")
    try:
        reg.push(f"oci:{work / 'multi'}:v1", "app/multi:v1", "--all")
        yield reg, index, children
    finally:
        reg.stop()


def test_registry_index_children_are_named_as_asked(registry, cli, tmp_path):
    from layerdb.ingest import ingest
    from layerdb.sources import SourceOptions

    reg, index, (amd, arm1, arm2) = registry
    events: list[dict] = []
    opts = SourceOptions(tls_verify=False, all_platforms=True, cache_dir=str(tmp_path / "json"))
    rep = ingest([f"docker://{reg.host}/app/multi:v1"], catalog_root=str(cli.home), jobs=1,
                 options=opts, progress=events.append)
    assert not rep.failed, rep.failed[0].error
    assert [e for e in events if e["event"] == "moved"] == []  # two arm64 children share the ref
    ref = f"{reg.host}/app/multi:v1"
    rows = {i["id"]: i for i in _images(cli)}
    assert {k: v["refs"] for k, v in rows.items()} == {amd: [ref], arm1: [ref], arm2: [ref]}
    assert {rows[k]["source"] for k in rows} == {f"docker://{reg.host}/app/multi@{index}"}
    assert _id_of(cli, ref) == b"linux/amd64 #0\n"
    assert _id_of(cli, f"{reg.host}/app/multi@{index}") == b"linux/amd64 #0\n"
    assert _id_of(cli, f"{reg.host}/app/multi@{arm2}") == b"linux/arm64 #2\n"
    # two images of one platform: told apart by id, never a silent pick
    for asked, how in ((ref, "ref"), (f"{reg.host}/app/multi@{index}", "digest")):
        line = _refused(cli, asked, "--platform", "arm64")
        assert line.startswith(f"layerdb: error: 2 images match {asked} by {how}: "), line
        assert f"(id {min(arm1, arm2)[7:19]}, " in line and f"(id {max(arm1, arm2)[7:19]}, " in line
        assert line.count(f"{ref} (id ") == 2, line
    unknown = f"{reg.host}/app/multi@sha256:{'0' * 64}"
    assert _refused(cli, unknown) == f"layerdb: error: no image matches {unknown!r}"
    # skopeo's copy of the index to an OCI layout, tagged v2: the same images, one more name
    reg.pull("app/multi:v1", f"oci:{tmp_path / 'copy'}:v2", "--all")
    r = _ok(cli, "ingest", str(tmp_path / "copy"))
    assert b"moved" not in r.stderr
    rows = {i["id"]: i for i in _images(cli)}
    assert {k: v["refs"] for k, v in rows.items()} == {k: [ref, "copy:v2"] for k in (amd, arm1, arm2)}
    assert _id_of(cli, "copy:v2", "--platform", "amd64") == b"linux/amd64 #0\n"


def test_older_catalogs_bare_tag_is_spelled_out_by_a_reingest(archives, cli, monkeypatch):
    """A catalog written before bare tags were qualified holds ``v1`` (made here by writing
    the row as that writer did). Reading it changes nothing; re-ingesting the archive replaces
    ``v1`` with ``alpha:v1`` in the one commit that records it, and says so once."""
    import duckdb

    from layerdb.catalog.layout import Layout
    from layerdb.catalog.writer import refresh_lookup

    _ok(cli, "ingest", str(archives["alpha"]))
    [row] = _images(cli)
    layout = Layout.at(str(cli.home))
    con = duckdb.connect(layout.db)
    con.execute("update image_refs set ref = 'v1'")
    refresh_lookup(layout, con)  # closes it
    before = _db_stat(cli.home)
    assert _images(cli)[0]["refs"] == ["v1"]
    assert _ok(cli, "extract", "--image", "v1", "--path", "/app/data").stdout == b"content A\n"
    assert _db_stat(cli.home) == before  # a read qualifies nothing
    # the rename is part of the commit: a commit that fails leaves the bare tag as it was
    from layerdb.catalog import writer

    real = writer._insert_image

    def failing(*args):
        real(*args)
        raise duckdb.IOException("IO Error: disk went away")

    monkeypatch.setattr(writer, "_insert_image", failing)
    r = cli("ingest", "-q", str(archives["alpha"]))
    assert r.returncode == 1 and b"disk went away" in r.stderr and len(r.stderr.splitlines()) == 1
    monkeypatch.undo()
    assert _images(cli)[0]["refs"] == ["v1"]
    r = _ok(cli, "ingest", "-q", str(archives["alpha"]))
    assert r.stderr.decode() == ""  # -q: the rename is not a retag; without -q it is said
    assert _images(cli)[0]["refs"] == ["alpha:v1"]
    con = duckdb.connect(layout.db)
    con.execute("update image_refs set ref = 'v1'")
    refresh_lookup(layout, con)
    r = _ok(cli, "ingest", str(archives["alpha"]))
    assert f"layerdb: ref v1 of {row['id'][:19]}… is now alpha:v1\n" in r.stderr.decode()
    assert b"moved" not in r.stderr
    assert [i["refs"] for i in _images(cli)] == [["alpha:v1"]]
    assert _ok(cli, "extract", "--image", "v1", "--path", "/app/data").stdout == b"content A\n"  # by tag
    before = _db_stat(cli.home)
    r = _ok(cli, "ingest", str(archives["alpha"]))  # nothing left to do: the shortcut
    assert b"is now" not in r.stderr and _db_stat(cli.home) == before


def test_lookup_index_of_an_older_writer_is_rebuilt(cli, tmp_path):
    """lookup.sqlite without ``index_digest`` (written before digest references): a reader
    rebuilds it rather than failing, and the digest reference finds the index's image."""
    import sqlite3

    index, (amd, _arm) = _annotated_index(tmp_path / "lay", "v1", ("linux/amd64", "linux/arm64"))
    _ok(cli, "ingest", "-q", str(tmp_path / "lay"))
    lookup = cli.home / "lookup.sqlite"
    con = sqlite3.connect(lookup)
    con.execute("alter table images drop column index_digest")
    con.commit()
    con.close()
    assert _id_of(cli, f"lay@{index}", "--platform", "amd64") == b"linux/amd64 #0\n"
    con = sqlite3.connect(lookup)
    assert con.execute("select index_digest from images where id = ?", [amd]).fetchone() == (index,)
    con.close()


def test_new_refs_replace_bare_tags_written_in_full():
    from layerdb.selection import new_refs, spelled_out

    assert spelled_out(["v1", "alpha:v1", "latest", "x/y:latest", "v2"]) == {"v1": "alpha:v1", "latest": "x/y:latest"}
    # an older catalog's bare tag: the archive's ingest adds alpha:v1 and drops v1
    assert new_refs(["alpha:v1"], {"v1"}) == (["alpha:v1"], [("v1", "alpha:v1")])
    # a tag from stdin is not added beside the full ref the image holds: nothing to do
    assert new_refs(["v1"], {"alpha:v1"}) == ([], [])
    assert new_refs(["docker.io/library/app:v1"], {"app:v1"}) == ([], [])
    assert new_refs(["v1"], set()) == (["v1"], [])
    assert new_refs(["example.com/app:v2"], {"v1"}) == (["example.com/app:v2"], [])


def test_digest_reference_selects_the_manifest_or_the_index_children():
    idx = "sha256:" + "9" * 64
    amd = _row("a", ["app:v1"], "c")
    arm = _row("b", ["app:v1"], "d", "linux/arm64")
    other = _row("e", ["other:v1"], "f")
    amd, arm = (ImageRow(**{**r.__dict__, "index_digest": idx}) for r in (amd, arm))
    rows = [amd, arm, other]
    assert matching(rows, f"app@{idx}") == ("digest", [amd, arm])
    assert choose_image(rows, f"app@{idx}", None) == amd  # the host's platform
    assert choose_image(rows, f"app@{idx}", "arm64") == arm
    assert choose_image(rows, f"app:v1@{other.id}", None) == other
    assert choose_image(rows, other.id, None) == other and choose_image(rows, "eeee", None) == other
    assert matching(rows, idx) == ("", [])  # an index digest alone is no image id
    with pytest.raises(ImageNotFound, match=r"^2 images match app@sha256:9{64} by digest: app:v1 \(id a{12}, "
                       r"config c{12}, linux/amd64\), app:v1 \(id b{12}, config d{12}, linux/arm64\); name one"):
        choose_image([amd, arm], f"app@{idx}", "linux")
