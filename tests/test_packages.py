"""Packages captured at ingest (layerdb.packages): the formats, the per-image view after
whiteouts, the reports and the diff, on layers written with tarfile and on real package
databases made by pip, npm, go and rpm in the test (debootstrap: test_packages_debian.py)."""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import imagefactory as f
import pytest
from click.testing import CliRunner

import layerdb.packages
import layerdb.packages.scan
import layerdb.settings
from layerdb import diff, reports
from layerdb.catalog import Catalog
from layerdb.cli import cli
from layerdb.ingest import ingest

STATUS = b"""Package: libssl3
Status: install ok installed
Priority: optional
Architecture: amd64
Multi-Arch: same
Source: openssl (3.0.11-1~deb12u2)
Version: 3.0.11-1~deb12u2
Description: Secure Sockets Layer toolkit - shared libraries
 This package is part of the OpenSSL project's implementation.
 .
 More text.

Package: oldpkg
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: bash
Status: install ok installed
Essential: yes
Architecture: amd64
Version: 5.2.15-2+b2

Package: held
Status: hold ok installed
Architecture: all
Version: 1:2.0~rc1-3
"""
DISTROLESS = b"""Package: tzdata
Version: 2024a-0+deb12u1
Architecture: all
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>
"""
APK = b"""C:Q1Jx6b0Y4J0p4ki1GZx0H0ZLf1Fm8=
P:musl
V:1.2.4-r2
A:x86_64
S:383152
I:622592
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Ter\xc3\xa4s <timo.teras@iki.fi>
t:1698665813
c:b0d5b3a8b38e1b6e0bd14e8f63d3be3b5e26d0c5
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755
Z:Q1Jx6b0Y4J0p4ki1GZx0H0ZLf1Fm8=

C:Q1aoG3cl3DvW4fOxDZj1e7T1s2ntM=
P:busybox-binsh
V:1.36.1-r15
A:x86_64
o:busybox
F:bin
R:sh
"""
SITE = "usr/lib/python3/dist-packages"
NPM = "usr/lib/node_modules"


def _meta(name: str, version: str) -> bytes:
    return (f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\nSummary: x\n\n"
            f"Name: not-this\nVersion: 0\n").encode()


def _pkg_json(name: str, version: str, **extra: Any) -> bytes:
    return json.dumps({"name": name, "version": version, **extra}).encode()


BASE = [
    f.file("usr/lib/os-release", b'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nID=debian\n'
                                 b'VERSION_ID="12"\nVERSION_CODENAME=bookworm\n'),
    f.symlink("etc/os-release", "../usr/lib/os-release"),
    f.file("var/lib/dpkg/status", STATUS),
    f.file("var/lib/dpkg/status.d/tzdata", DISTROLESS),
    f.file("var/lib/dpkg/status.d/tzdata.md5sums", b"0123  usr/share/zoneinfo/UTC\n"),
    f.file("lib/apk/db/installed", APK),
    f.file(f"{SITE}/six-1.16.0.dist-info/METADATA", _meta("six", "1.16.0")),
    f.file(f"{SITE}/Jinja2-3.1.2.dist-info/METADATA", _meta("Jinja2", "3.1.2")),
    f.file(f"{SITE}/distro_info-1.5.egg-info/PKG-INFO", _meta("distro-info", "1.5")),
    f.file(f"{SITE}/old_style-0.9.egg-info", _meta("old_style", "0.9")),
    f.file("opt/src/notinstalled.dist-info/METADATA", _meta("notinstalled", "1")),
    f.file(f"{NPM}/left-pad/package.json", _pkg_json("left-pad", "1.3.0")),
    f.file(f"{NPM}/left-pad/test/package.json", _pkg_json("fixture", "0.0.1")),
    f.file(f"{NPM}/left-pad/node_modules/ms/package.json", _pkg_json("ms", "2.0.0")),
    f.file(f"{NPM}/@types/node/package.json", _pkg_json("@types/node", "20.1.0")),
    f.file(f"{NPM}/.package-lock.json", _pkg_json("lock", "1.0.0")),
    f.file(f"{NPM}/broken/package.json", b"{not json"),
    f.file(f"{NPM}/deep/package.json", b"[" * 100000 + b"]" * 100000),
    f.file(f"{NPM}/nover/package.json", json.dumps({"name": "nover"}).encode()),
]
UPPER = [  # apt upgraded libssl3 and removed bash; pip uninstalled six
    f.file("var/lib/dpkg/status", STATUS.replace(b"3.0.11-1~deb12u2", b"3.0.13-1~deb12u1")
           .split(b"\nPackage: bash")[0] + b"\n\nPackage: held\n" + STATUS.split(b"Package: held\n")[1]),
    f.whiteout(f"{SITE}/six-1.16.0.dist-info"),
]
A, B = "example.com/pk:1", "example.com/pk:2"


def _ingest(tmp: Path, specs: list[f.ImageSpec], name: str = "img.tar", jobs: int = 1) -> str:
    archive = tmp / name
    f.write_docker_archive(archive, specs)
    cat = str(tmp / "cat")
    res = ingest([str(archive)], catalog_root=cat, jobs=jobs)
    assert [a.error for a in res.archives] == [None]
    return cat


def _packages(cat: str, image: str, cols: str = "ecosystem, name, version") -> list[tuple]:
    with Catalog(cat) as c:
        iid = c.resolve_image(image).id
        return c.query(f"select {cols} from packages where image_id = $i "
                       "order by ecosystem, name, record_path", {"i": iid})[1]


@pytest.fixture(scope="module")
def cat(tmp_path_factory: pytest.TempPathFactory) -> str:
    tmp = tmp_path_factory.mktemp("pk")
    return _ingest(tmp, [f.ImageSpec([f.Layer(BASE, "gzip")], tags=[A]),
                         f.ImageSpec([f.Layer(BASE, "gzip"), f.Layer(UPPER)], tags=[B])], jobs=2)


def test_every_format_of_a_layer(cat: str) -> None:
    got = _packages(cat, A, "ecosystem, name, version, source, arch, record_path, purl")
    assert got == [
        ("apk", "busybox-binsh", "1.36.1-r15", "busybox", "x86_64", "/lib/apk/db/installed",
         "pkg:apk/debian/busybox-binsh@1.36.1-r15?arch=x86_64&distro=debian-12"),
        ("apk", "musl", "1.2.4-r2", "musl", "x86_64", "/lib/apk/db/installed",
         "pkg:apk/debian/musl@1.2.4-r2?arch=x86_64&distro=debian-12"),
        ("deb", "bash", "5.2.15-2+b2", None, "amd64", "/var/lib/dpkg/status",
         "pkg:deb/debian/bash@5.2.15-2%2Bb2?arch=amd64&distro=debian-12"),
        ("deb", "held", "1:2.0~rc1-3", None, "all", "/var/lib/dpkg/status",
         "pkg:deb/debian/held@1:2.0~rc1-3?arch=all&distro=debian-12"),
        ("deb", "libssl3", "3.0.11-1~deb12u2", "openssl", "amd64", "/var/lib/dpkg/status",
         "pkg:deb/debian/libssl3@3.0.11-1~deb12u2?arch=amd64&distro=debian-12"),
        ("deb", "tzdata", "2024a-0+deb12u1", None, "all", "/var/lib/dpkg/status.d/tzdata",
         "pkg:deb/debian/tzdata@2024a-0%2Bdeb12u1?arch=all&distro=debian-12"),
        ("npm", "@types/node", "20.1.0", None, None, f"/{NPM}/@types/node/package.json",
         "pkg:npm/%40types/node@20.1.0"),
        ("npm", "left-pad", "1.3.0", None, None, f"/{NPM}/left-pad/package.json",
         "pkg:npm/left-pad@1.3.0"),
        ("npm", "ms", "2.0.0", None, None, f"/{NPM}/left-pad/node_modules/ms/package.json",
         "pkg:npm/ms@2.0.0"),
        ("python", "Jinja2", "3.1.2", None, None, f"/{SITE}/Jinja2-3.1.2.dist-info/METADATA",
         "pkg:pypi/jinja2@3.1.2"),
        ("python", "distro-info", "1.5", None, None, f"/{SITE}/distro_info-1.5.egg-info/PKG-INFO",
         "pkg:pypi/distro-info@1.5"),
        ("python", "old_style", "0.9", None, None, f"/{SITE}/old_style-0.9.egg-info",
         "pkg:pypi/old-style@0.9"),
        ("python", "six", "1.16.0", None, None, f"/{SITE}/six-1.16.0.dist-info/METADATA",
         "pkg:pypi/six@1.16.0"),
    ]
    assert {r[0] for r in _packages(cat, A, "distro")} == {"debian-12"}


def test_upper_layer_removes_and_upgrades(cat: str) -> None:
    got = _packages(cat, B, "ecosystem, name, version, position, installed_position")
    deb = [g for g in got if g[0] == "deb"]
    # the status file of layer 1 is the visible one: bash is gone, libssl3 upgraded there,
    # held stayed the same version since layer 0
    assert deb == [("deb", "held", "1:2.0~rc1-3", 1, 0), ("deb", "libssl3", "3.0.13-1~deb12u1", 1, 1),
                   ("deb", "tzdata", "2024a-0+deb12u1", 0, 0)]
    assert [g[1] for g in got if g[0] == "python"] == ["Jinja2", "distro-info", "old_style"]
    assert len(got) == len(_packages(cat, A)) - 2  # bash and six
    with Catalog(cat) as c:  # every layer keeps its own rows
        n = c.query("select count(*) from package_records where name = 'bash'")[1]
    assert n == [(1,)]


def test_reports(cat: str) -> None:
    cols, rows = reports.run_report("package-where", {"name": "openssl", "below": "3.0.13"},
                                    catalog_root=cat)
    got = [dict(zip(cols, r)) for r in rows]
    assert [(g["image"], g["name"], g["version"], g["installed_position"]) for g in got] == [
        (A, "libssl3", "3.0.11-1~deb12u2", 0)]
    with Catalog(cat) as c:
        base = c.query("select diff_id from image_layers where image = $i and position = 0",
                       {"i": A})[1][0][0]
    assert got[0]["installed_layer"] == base
    # string order would keep both (3.0.13-1 < 3.0.13 as text is false, 3.0.11 < 3.0.9 true)
    _, rows = reports.run_report("package-where", {"name": "libssl3", "below": "3.0.9"}, catalog_root=cat)
    assert rows == []
    _, rows = reports.run_report("package-where", {"name": "six", "below": "1.16.1"}, catalog_root=cat)
    assert [r[0] for r in rows] == [A]
    cols, rows = reports.run_report("package-versions", {"min_versions": 2}, catalog_root=cat)
    assert [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows] == [
        ("deb", "libssl3", "3.0.11-1~deb12u2", 2, False, 1, [A]),
        ("deb", "libssl3", "3.0.13-1~deb12u1", 2, True, 1, [B])]
    cols, rows = reports.run_report("packages", {"ecosystem": "npm"}, image=B, catalog_root=cat)
    assert [r[2] for r in rows] == ["@types/node", "left-pad", "ms"]


def test_diff_lists_package_changes(cat: str) -> None:
    d = diff.diff_images(A, B, catalog_root=cat)
    pk = [(r[0], r[1], r[6], r[7]) for r in d.rows if r[2] == "package"]
    assert pk == [
        ("package removed", f"/{SITE}/six-1.16.0.dist-info/METADATA", "python", "six 1.16.0"),
        ("package removed", "/var/lib/dpkg/status", "deb", "bash 5.2.15-2+b2"),
        ("package upgraded", "/var/lib/dpkg/status", "deb",
         "libssl3 3.0.11-1~deb12u2 -> 3.0.13-1~deb12u1")]
    assert d.totals["package removed"] == (2, 0) and d.totals["package upgraded"] == (1, 0)
    assert d.rows[-len(pk) - 1][2] != "package"  # file rows first, as before
    back = diff.diff_images(B, A, catalog_root=cat)
    assert ("package downgraded", "libssl3 3.0.13-1~deb12u1 -> 3.0.11-1~deb12u2") in \
        [(r[0], r[7]) for r in back.rows]


def test_package_where_command(cat: str) -> None:
    res = CliRunner().invoke(cli, ["report", "package-where", "-p", "name", "openssl", "-p", "below",
                                   "3.0.13", "--format", "json", "--catalog", cat])
    assert res.exit_code == 0, res.output
    assert [(r["image"], r["version"]) for r in json.loads(res.stdout)] == [(A, "3.0.11-1~deb12u2")]
    res = CliRunner().invoke(cli, ["report", "package-where", "--catalog", cat])
    assert res.exit_code != 0 and "needs -p name" in str(res.exception)


def test_known_layers_are_not_read_again(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = layerdb.packages.scan.scan_layer

    def counting(parquet: str, store: str, diff_id: Any, staging: str, *rest: Any) -> str | None:
        calls.append(str(diff_id))
        return real(parquet, store, diff_id, staging, *rest)

    monkeypatch.setattr(layerdb.packages.scan, "scan_layer", counting)
    base = f.Layer(BASE)
    cat = _ingest(tmp_path, [f.ImageSpec([base], tags=[A])], "a.tar")
    assert len(calls) == 1
    f.write_docker_archive(tmp_path / "b.tar", [f.ImageSpec([base, f.Layer(UPPER)], tags=[B])])
    assert ingest([str(tmp_path / "a.tar"), str(tmp_path / "b.tar")], catalog_root=cat,
                  jobs=1).failed == []
    assert len(calls) == 2  # only the new upper layer
    assert [r[1] for r in _packages(cat, B) if r[0] == "deb"] == ["held", "libssl3", "tzdata"]


def test_capture_off_and_no_packages(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    off = layerdb.settings.Settings({**os.environ, "LAYERDB_PACKAGES": "0"})
    monkeypatch.setattr(layerdb.settings, "settings", lambda: off)
    cat = _ingest(tmp_path, [f.ImageSpec([f.Layer(BASE)], tags=[A])])
    assert _packages(cat, A) == []
    assert not (Path(cat) / "packages").exists()
    # an empty catalog still has the views and functions
    with Catalog(str(tmp_path / "nothing"), missing_ok=True) as c:
        assert c.query("select count(*), version_lt('deb', '1', '2') from packages")[1] == [(0, True)]


def test_hostile_records_give_no_rows_and_no_error(tmp_path: Path) -> None:
    elf = bytearray(b"\x7fELF\x02\x01\x01" + b"\x00" * 9) + bytes(700 << 10)
    elf[0x20:0x28] = (1 << 40).to_bytes(8, "little")  # program headers far past the end
    elf[0x36:0x3A] = b"\x38\x00\xff\xff"
    layer = [
        f.file("var/lib/dpkg/status", b"Package: x\nVersion: 1\nStatus: install ok installed\n"
               + b"Description: " + b"A" * (3 << 20) + b"\n\x00\xff\xfe\n"),
        f.file("lib/apk/db/installed", os.urandom(4096)),
        f.file("var/lib/rpm/rpmdb.sqlite", b"SQLite format 3\x00" + os.urandom(8192)),
        f.file(f"{SITE}/x-1.dist-info/METADATA", b"Name: " + b"x" * (1 << 20)),
        f.file("usr/bin/fake", bytes(elf), 0o755),
        f.file("usr/bin/gobait", b"\x7fELF" + b"\xff Go buildinf:" * 50000, 0o755),
        f.file("etc/os-release", b"\xff\xfe" * 100),
    ]
    cat = _ingest(tmp_path, [f.ImageSpec([f.Layer(layer)], tags=[A])])
    # the dpkg stanza survives its 3 MiB description line; nothing else makes sense
    assert _packages(cat, A) == [("deb", "x", "1")]


# Real package databases ------------------------------------------------------------------------

def _tree_layer(root: Path, arcname: str) -> f.Layer:
    """A layer holding the directory ``root`` at ``arcname`` (as the build put it there)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        tf.add(root, arcname=arcname)
    return f.Layer(buf.getvalue(), "gzip")


def _run(*args: str, **kw: Any) -> str:
    return subprocess.run(args, check=True, capture_output=True, text=True, **kw).stdout


def _wheel(where: Path, name: str, version: str) -> Path:
    """A minimal valid wheel (built here: installing it needs no build backend, no network)."""
    import base64
    import hashlib
    import zipfile

    mod, dist = name.replace("-", "_"), f"{name.replace('-', '_')}-{version}.dist-info"
    files = {f"{mod}/__init__.py": b"",
             f"{dist}/METADATA": f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n".encode(),
             f"{dist}/WHEEL": b"Wheel-Version: 1.0\nGenerator: layerdb-test\nRoot-Is-Purelib: true\n"
                              b"Tag: py3-none-any\n"}
    record = "".join(f"{p},sha256={base64.urlsafe_b64encode(hashlib.sha256(b).digest()).rstrip(b'=').decode()},"
                     f"{len(b)}\n" for p, b in files.items()) + f"{dist}/RECORD,,\n"
    path = where / f"{mod}-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as z:
        for p, b in files.items():
            z.writestr(p, b)
        z.writestr(f"{dist}/RECORD", record)
    return path


def test_pip_virtualenv_matches_pip_list(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    _run(sys.executable, "-m", "venv", "--without-pip", str(venv))  # ensurepip takes ~15 s
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--python", str(venv / "bin" / "python")]
    wheels = [_wheel(tmp_path, n, v) for n, v in (("layerdb-probe-a", "1.2.3"), ("layerdb-probe-b", "0.1.dev4"))]
    _run(*pip, "install", "-q", "--no-index", *map(str, wheels))
    site = next(venv.glob("lib/python3*/site-packages"))
    listed = json.loads(_run(*pip, "list", "--path", str(site), "--format", "json"))
    cat = _ingest(tmp_path, [f.ImageSpec([_tree_layer(venv, "opt/venv")], tags=[A])])
    got = {(n, v) for _, n, v in _packages(cat, A)}
    assert got == {(d["name"], d["version"]) for d in listed}
    assert {("layerdb-probe-a", "1.2.3"), ("layerdb-probe-b", "0.1.dev4")} <= got


def test_npm_tree_matches_package_lock(tmp_path: Path) -> None:
    if not shutil.which("npm"):
        pytest.skip("npm is not installed")
    app = tmp_path / "app"
    app.mkdir()
    try:  # debug@2.6.9 needs ms@2.0.0, which nests under it beside the top-level ms@2.1.3
        _run("npm", "install", "--no-audit", "--no-fund", "--prefix", str(app), "debug@2.6.9",
             "ms@2.1.3", timeout=120)
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
        pytest.skip(f"npm install needs the npm registry: {e}")
    lock = json.loads((app / "node_modules" / ".package-lock.json").read_text())
    want = {(v.get("name") or k.rsplit("node_modules/", 1)[1], v["version"], "/srv/app/" + k + "/package.json")
            for k, v in lock["packages"].items() if k}
    assert ("ms", "2.0.0", "/srv/app/node_modules/debug/node_modules/ms/package.json") in want
    cat = _ingest(tmp_path, [f.ImageSpec([_tree_layer(app, "srv/app")], tags=[A])])
    assert set(_packages(cat, A, "name, version, record_path")) == want


GO_MOD = """module example.com/app

go 1.19

require example.com/lib v1.2.3

replace example.com/lib => ./lib
"""


def test_go_binary_matches_go_version_m(tmp_path: Path) -> None:
    if not shutil.which("go"):
        pytest.skip("go is not installed (apt-get install golang-go)")
    src = tmp_path / "src"
    (src / "lib").mkdir(parents=True)
    (src / "go.mod").write_text(GO_MOD)
    (src / "lib" / "go.mod").write_text("module example.com/lib\n\ngo 1.19\n")
    (src / "lib" / "lib.go").write_text('package lib\n\nfunc Hello() string { return "hi" }\n')
    (src / "main.go").write_text('package main\n\nimport (\n\t"fmt"\n\n\t"example.com/lib"\n)\n\n'
                                 'func main() { fmt.Println(lib.Hello()) }\n')
    env = {**os.environ, "GOFLAGS": "-mod=mod", "GOPROXY": "off", "CGO_ENABLED": "0",
           "GOCACHE": str(tmp_path / "gocache"), "GOPATH": str(tmp_path / "gopath")}
    out = tmp_path / "bin"
    _run("go", "build", "-o", str(out / "app"), ".", cwd=src, env=env)
    _run("go", "build", "-ldflags=-s -w", "-o", str(out / "app-stripped"), ".", cwd=src, env=env)
    os.link(out / "app", out / "app-link")
    (out / "script").write_text("#!/bin/sh\n")
    os.chmod(out / "script", 0o755)
    shown = _run("go", "version", "-m", str(out / "app"), env=env)
    lines = [l.strip().split("\t") for l in shown.splitlines()[1:]]
    go_version = shown.split(": ", 1)[1].splitlines()[0]
    main = next(l for l in lines if l[0] == "mod")
    assert ["dep", "example.com/lib", "v1.2.3"] == next(l for l in lines if l[0] == "dep")[:3]
    want = {("stdlib", go_version), (main[1], main[2]), ("example.com/lib", "(devel)")}  # => ./lib
    cat = _ingest(tmp_path, [f.ImageSpec([_tree_layer(out, "usr/local/bin")], tags=[A])])
    got = _packages(cat, A, "name, version, record_path, source")
    for binary in ("app", "app-stripped", "app-link"):  # the hard link reads its target's bytes
        assert {(n, v) for n, v, p, _ in got if p == f"/usr/local/bin/{binary}"} == want
    assert {p for _, _, p, _ in got} == {f"/usr/local/bin/{b}" for b in ("app", "app-stripped", "app-link")}
    assert {s for n, _, _, s in got if n == "example.com/lib"} == {"example.com/app"}


SPEC = """Name: layerdb-probe
Version: 2.4.1
Release: 3.fc39
Epoch: 1
Summary: probe
License: MIT
BuildArch: noarch
%description
probe
%files
"""


def test_rpm_sqlite_database_matches_rpm_qa(tmp_path: Path) -> None:
    if not (shutil.which("rpm") and shutil.which("rpmbuild")):
        pytest.skip("rpm and rpmbuild are not installed (apt-get install rpm)")
    top = tmp_path / "rpmbuild"
    (top / "SPECS").mkdir(parents=True)
    (top / "SPECS" / "p.spec").write_text(SPEC)
    (top / "SPECS" / "q.spec").write_text(SPEC.replace("layerdb-probe", "layerdb-other")
                                          .replace("Epoch: 1\n", "").replace("2.4.1", "0.9~rc1"))
    for s in ("p", "q"):
        _run("rpmbuild", "-bb", "--define", f"_topdir {top}", str(top / "SPECS" / f"{s}.spec"))
    root = tmp_path / "root"
    dbpath = root / "var/lib/rpm"
    dbpath.mkdir(parents=True)
    opts = ["--dbpath", str(dbpath), "--define", "_db_backend sqlite"]
    _run("rpm", *opts, "--initdb")
    _run("rpm", *opts, "-i", "--justdb", "--nodeps", "--ignoreos", "--ignorearch",
         *map(str, (top / "RPMS").rglob("*.rpm")))
    assert (dbpath / "rpmdb.sqlite").is_file()
    qa = _run("rpm", *opts, "-qa", "--qf", "%{NAME} %{EPOCH}:%{VERSION}-%{RELEASE} %{ARCH} %{SOURCERPM}\n")
    want = {tuple(l.replace("(none):", "").split()) for l in qa.splitlines()}
    assert ("layerdb-probe", "1:2.4.1-3.fc39", "noarch", "layerdb-probe-2.4.1-3.fc39.src.rpm") in want
    layer = [f.file("var/lib/rpm/rpmdb.sqlite", (dbpath / "rpmdb.sqlite").read_bytes()),
             f.file("etc/os-release", b'ID="fedora"\nVERSION_ID=39\n')]
    cat = _ingest(tmp_path, [f.ImageSpec([f.Layer(layer)], tags=[A])])
    got = _packages(cat, A, "name, version, arch, source, purl")
    assert {g[:4] for g in got} == want
    assert ("pkg:rpm/fedora/layerdb-probe@2.4.1-3.fc39?arch=noarch&distro=fedora-39&epoch=1"
            in {g[4] for g in got})
    with Catalog(cat) as c:  # rpm's order: 0.9~rc1 is older than 0.9
        assert c.query("select version_lt('rpm', version, '0.9') from packages "
                       "where name = 'layerdb-other'")[1] == [(True,)]
