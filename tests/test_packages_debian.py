"""A real Debian: ``debootstrap --variant=minbase bookworm`` packed as an image with umoci,
then ``dpkg -r apt`` in an upper layer; the ``packages`` view must list exactly what
``dpkg-query --admindir`` lists as installed, before and after.

The rootfs tarball is built once and cached in ``$LAYERDB_TEST_CACHE`` (default
``<tmp>/layerdb-test-cache``), keyed by suite, variant and architecture only. Without
debootstrap or the Debian mirror, this machine's own ``/var/lib/dpkg`` stands in (one layer,
no removal), and the test says so in its output."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess
import tempfile
from pathlib import Path

import imagefactory as f
import pytest

from layerdb.catalog import Catalog
from layerdb.ingest import ingest

pytestmark = pytest.mark.slow
SUITE, VARIANT = "bookworm", "minbase"
MIRROR = "http://deb.debian.org/debian"
CACHE = Path(os.environ.get("LAYERDB_TEST_CACHE") or Path(tempfile.gettempdir()) / "layerdb-test-cache")
REMOVED = "apt"  # nothing in minbase depends on it; it has conffiles, so it stays as config-files


def _run(*args: str, **kw: object) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout  # type: ignore[call-overload]


def _rootfs_tarball() -> Path | None:
    """The cached minbase rootfs as a tar, built with debootstrap when missing (None: cannot)."""
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    tar = CACHE / f"debootstrap-{SUITE}-{VARIANT}-{arch}.tar"
    if tar.is_file():
        return tar
    if not shutil.which("debootstrap") or os.geteuid() != 0:
        return None
    CACHE.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=CACHE) as work:
        root = Path(work) / "rootfs"
        try:
            _run("debootstrap", f"--variant={VARIANT}", f"--arch={arch}", SUITE, str(root), MIRROR,
                 timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired):
            return None
        tmp = Path(work) / "rootfs.tar"
        _run("tar", "-C", str(root), "--numeric-owner", "-cf", str(tmp), ".")
        os.replace(tmp, tar)
    return tar


def _installed(admindir: Path) -> set[tuple[str, str, str]]:
    out = _run("dpkg-query", f"--admindir={admindir}", "-W",
               "-f=${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\n")
    return {tuple(l.split("\t")[1:]) for l in out.splitlines() if l.split("\t")[0] == "installed"}  # type: ignore[misc]


def _status(admindir: Path) -> dict[str, str]:
    out = _run("dpkg-query", f"--admindir={admindir}", "-W", "-f=${Package}\t${db:Status-Abbrev}\n")
    return dict(l.split("\t") for l in out.splitlines())  # type: ignore[misc]


@pytest.fixture(scope="module")
def debian(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """{"cat", "expected": {ref: installed set}, "real": bool} for the images built here."""
    work = tmp_path_factory.mktemp("debian")
    tar = _rootfs_tarball()
    if tar is None or not imagefactory_tools():
        print("debootstrap or the Debian mirror is unavailable: using this machine's /var/lib/dpkg")
        layer = [f.file("var/lib/dpkg/status", Path("/var/lib/dpkg/status").read_bytes())]
        if Path("/etc/os-release").exists():
            layer.append(f.file("etc/os-release", Path("/etc/os-release").read_bytes()))
        f.write_docker_archive(work / "host.tar", [f.ImageSpec([f.Layer(layer)], tags=["host:1"])])
        cat = str(work / "cat")
        assert not ingest([str(work / "host.tar")], catalog_root=cat).failed
        return {"cat": cat, "expected": {"host:1": _installed(Path("/var/lib/dpkg"))}, "real": False}
    layout, bundle = work / "layout", work / "bundle"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", f"{layout}:v1")
    _run("umoci", "unpack", "--image", f"{layout}:v1", str(bundle))
    rootfs = bundle / "rootfs"
    _run("tar", "-C", str(rootfs), "--numeric-owner", "-xpf", str(tar))
    _run("umoci", "repack", "--refresh-bundle", "--image", f"{layout}:v1", str(bundle))
    v1 = _installed(rootfs / "var/lib/dpkg")
    _run("chroot", str(rootfs), "dpkg", "--remove", REMOVED)
    assert _status(rootfs / "var/lib/dpkg")[REMOVED] == "rc "  # removed, configuration kept
    _run("umoci", "repack", "--image", f"{layout}:v2", str(bundle))
    v2 = _installed(rootfs / "var/lib/dpkg")
    cat = str(work / "cat")
    res = ingest([str(layout)], catalog_root=cat, jobs=2)
    assert [a.error for a in res.archives] == [None]
    return {"cat": cat, "expected": {"v1": v1, "v2": v2}, "real": True}


def imagefactory_tools() -> bool:
    return f.have_tools() and shutil.which("dpkg-query") is not None and shutil.which("chroot") is not None


def test_debian_packages_match_dpkg_query(debian: dict) -> None:
    with Catalog(debian["cat"]) as c:
        for ref, want in debian["expected"].items():
            iid = c.resolve_image(ref).id
            got = set(c.query("select name, version, arch from packages where image_id = $i "
                              "and ecosystem = 'deb'", {"i": iid})[1])
            assert got == want, ref
            assert len(want) > 50
    if not debian["real"]:
        pytest.skip("checked against this machine's dpkg database only (no debootstrap rootfs)")
    v1, v2 = debian["expected"]["v1"], debian["expected"]["v2"]
    assert {p[0] for p in v1 - v2} == {REMOVED} and v2 < v1
    with Catalog(debian["cat"]) as c:
        # every package of v2 was installed by the base layer; purls name the distro
        rows = c.query("select distinct installed_position, distro from packages where image = 'layout:v2'")[1]
        assert rows == [(0, "debian-12")]
        purl = c.query("select purl from packages where image = 'layout:v1' and name = 'libc6'")[1][0][0]
        arch = _run("dpkg", "--print-architecture").strip()
        assert purl.startswith("pkg:deb/debian/libc6@") and purl.endswith(f"?arch={arch}&distro=debian-12")
        where = c.query("select image from packages where name = $n order by image", {"n": REMOVED})[1]
        assert where == [("layout:v1",)]  # umoci's bare tag v1, qualified by the layout's name
