"""``layerdb inspect`` and ``layerdb ls`` on the umoci-built image (five layers: a modified
file, deleted files and directories, a recreated directory, an opaque directory, a whiteout),
checked against the archive's own documents and against ``umoci unpack``."""
from __future__ import annotations

import hashlib
import json
import os
import pathlib
import subprocess
import sys

import imagefactory as f
import pytest

REF = f.SKOPEO_REF


def _run(*args: str, home: pathlib.Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                          text=True, env={**os.environ, "LAYERDB_HOME": str(home)}, timeout=120)


def _ok(*args: str, home: pathlib.Path) -> str:
    r = _run(*args, home=home)
    assert r.returncode == 0, (args, r.stderr)
    return r.stdout


@pytest.fixture(scope="module")
def home(umoci_images, tmp_path_factory) -> pathlib.Path:
    h = tmp_path_factory.mktemp("inspect") / "home"
    _ok("ingest", "-q", umoci_images["docker-archive"], home=h)
    return h


def test_inspect_gives_the_config_and_manifest_as_stored(home):
    doc = json.loads(_ok("inspect", REF, home=home))
    assert doc["Cmd"] == ["./app"] and doc["WorkingDir"] == "/home/app/"
    assert "APP_MODE=test" in doc["Env"] and doc["Entrypoint"] is None
    assert doc["RepoTags"] == [REF, f.SKOPEO_REF2] and doc["Platform"] == "linux/amd64"
    assert [h["created_by"] for h in doc["History"] if not h.get("empty_layer")] == list(f.UMOCI_LAYERS)
    assert len(doc["Manifest"]["layers"]) == 5 == len(doc["RootFS"]["diff_ids"])
    # --raw: the exact documents, so their digests are the config digest and the image id
    config = _run("inspect", REF, "--config", "--raw", home=home).stdout.encode()
    manifest = _run("inspect", REF, "--manifest", "--raw", home=home).stdout.encode()
    assert "sha256:" + hashlib.sha256(config).hexdigest() == doc["ConfigDigest"]
    assert "sha256:" + hashlib.sha256(manifest).hexdigest() == doc["Id"]
    assert json.loads(_ok("inspect", REF, "--config", home=home)) == json.loads(config)
    table = _ok("inspect", REF, "--format", "table", home=home).splitlines()
    assert "Cmd:          ./app" in table and "Env:          APP_MODE=test" in table
    r = _run("inspect", REF, "--raw", home=home)
    assert r.returncode == 2 and r.stderr == "layerdb: error: --raw goes with --config or --manifest\n"


def test_ls_lists_the_merged_directory_as_umoci_unpacks_it(home, umoci_images):
    root = pathlib.Path(umoci_images["rootfs"])
    for d in ("/", "/etc", "/opt/data", "/usr/share/doc/pkg"):
        got = _ok("ls", REF, d, home=home).splitlines()
        want = sorted(os.listdir(root / d.lstrip("/")))
        names = [line.split(" -> ")[0] for line in got]
        assert names == want, d
    # relative to WorkingDir (/home/app/); a file lists itself
    assert _ok("ls", REF, "app", home=home) == "/home/app/app\n"
    r = _run("ls", REF, "/etc/remove.me", home=home)
    assert r.returncode == 2 and r.stderr.endswith(": /etc/remove.me: no such file or directory\n")


def test_ls_long_shows_mode_owner_size_and_link_target(home):
    lines = _ok("ls", REF, "/usr/bin", "-l", home=home).splitlines()
    suid = next(line for line in lines if line.endswith("  suid"))
    assert suid.startswith("-rwsr-xr-x  ") and "  7 B  2020-09-13 12:26  suid" in suid
    tool = next(line for line in lines if line.endswith("  tool"))
    assert "196.6 kB" in tool  # 6,144 x 32 bytes
    link = [line for line in _ok("ls", REF, "/home/app", "-l", home=home).splitlines()
            if "hello-link" in line]
    assert link and link[0].startswith("lrwxrwxrwx") and link[0].endswith("hello-link -> ../../etc/hello.txt")
    tmp = next(line for line in _ok("ls", REF, "/", "-l", home=home).splitlines() if line.endswith(" tmp"))
    assert tmp.startswith("drwxrwxrwt")


def test_ls_tree_json_is_every_path_umoci_unpacks(home, umoci_images):
    want = f.tree_listing(umoci_images["rootfs"])
    rows = json.loads(_ok("ls", REF, "/", "--tree", "--format", "json", home=home))
    got = {r["path"]: (r["type"] if r["type"] != "hardlink" else "file", int(r["mode"], 8))
           for r in rows}
    assert got == {p: (e[0], e[2]) for p, e in want.items() if p != "/"}
    drawing = _ok("ls", REF, "/opt/data", "--tree", home=home).splitlines()
    assert drawing == ["/opt/data", "└── three"]


def test_ls_layer_marks_added_modified_removed(home):
    def marks(n: int) -> dict[str, str]:
        rows = json.loads(_ok("ls", REF, "--layer", str(n), "--format", "json", home=home))
        return {r["path"]: r["status"] for r in rows}

    base = marks(0)
    assert set(base.values()) == {"added"} and base["/etc/remove.me"] == "added"
    one = marks(1)
    assert one["/home/app/app"] == "modified"
    assert one["/etc/remove.me"] == "removed" and one["/var/cache/old"] == "removed"
    two = marks(2)
    assert two["/opt/data/one"] == "removed" and two["/opt/data/sub"] == "removed"
    assert two["/opt/data/three"] == "added"
    assert marks(3)["/usr/share/doc"] == "opaque"
    assert marks(4) == {"/etc/obsolete.conf": "removed"}
    assert _ok("ls", REF, "--layer", "4", home=home) == "D /etc/obsolete.conf\n"
    long = _ok("ls", REF, "--layer", "1", "/home", "-l", home=home).splitlines()
    assert any(line.startswith("M  -rwxr-xr-x") and line.endswith("/home/app/app") for line in long)
    r = _run("ls", REF, "--layer", "5", home=home)
    assert r.returncode == 2 and "has 5 layer(s): --layer takes 0 to 4" in r.stderr


def test_ls_shows_directories_no_layer_has_an_entry_for(tmp_path):
    arc = tmp_path / "implied.tar"
    f.write_oci_archive(arc, [f.ImageSpec([f.Layer([f.file("d7/sub/x", b"x"), f.file("top", b"t"),
                                                    f.file("e\x1b[31m", b"esc")])],
                                          tags=("implied:1",))])
    h = tmp_path / "home"
    _ok("ingest", "-q", str(arc), home=h)
    assert _ok("ls", "implied:1", home=h).splitlines() == ["d7", "e\\x1b[31m", "top"]
    assert _ok("ls", "implied:1", "/d7", home=h) == "sub\n"
    assert _ok("ls", "implied:1", "/", "--tree", home=h).splitlines() == [
        "/", "├── d7", "│   └── sub", "│       └── x", "├── e\\x1b[31m", "└── top"]
