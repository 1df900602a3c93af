"""Images built by buildah (no daemon: vfs storage in a temporary directory), written as an
``oci-archive`` and a ``docker-archive``: layerdb ingests both, shows the merged filesystem
buildah's layers make (a file removed in the upper layer is a whiteout there), and extracts
each file's exact bytes."""
from __future__ import annotations

import io
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from layerdb.errors import PathNotFound
from layerdb.extract import extract
from layerdb.ingest import ingest
from layerdb.merged import open_view

HELLO = b"hello from buildah\n"
DATA = bytes((i * 7 + 3) % 256 for i in range(3000))
NEW = b"added in the second layer\n"


def _buildah(store: Path, *args: str) -> str:
    cmd = ["buildah", "--root", str(store / "root"), "--runroot", str(store / "run"),
           "--storage-driver", "vfs", *args]
    r = subprocess.run(cmd, capture_output=True, text=True)
    assert r.returncode == 0, f"{' '.join(args)}: {r.stderr}"
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""


@pytest.fixture(scope="module")
def buildah_archives(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two images: ``one`` (a scratch image with /hello.txt and /data/bin.dat) and ``two``
    (``one`` plus /new.txt, with /data/bin.dat removed), each as oci-archive and
    docker-archive."""
    if not shutil.which("buildah"):
        if os.environ.get("CI"):  # CI installs it (scripts/setup.sh): missing is a failure
            pytest.fail("buildah is missing; scripts/setup.sh installs it")
        pytest.skip("buildah is needed to build the images")
    work = tmp_path_factory.mktemp("buildah")
    store = work / "store"
    (work / "hello.txt").write_bytes(HELLO)
    (work / "bin.dat").write_bytes(DATA)
    c = _buildah(store, "from", "scratch")
    _buildah(store, "copy", c, str(work / "hello.txt"), "/hello.txt")
    _buildah(store, "copy", c, str(work / "bin.dat"), "/data/bin.dat")
    _buildah(store, "config", "--cmd", "/hello.txt", "--workingdir", "/data", c)
    out = {"one-oci": work / "one-oci.tar", "one-docker": work / "one-docker.tar",
           "two-oci": work / "two-oci.tar", "two-docker": work / "two-docker.tar"}
    _buildah(store, "commit", c, "localhost/bh-one")
    _buildah(store, "push", "localhost/bh-one", f"oci-archive:{out['one-oci']}:bh/one:v1")
    _buildah(store, "push", "localhost/bh-one", f"docker-archive:{out['one-docker']}:bh/one:v1")
    c2 = _buildah(store, "from", "localhost/bh-one")
    root = Path(_buildah(store, "mount", c2))  # vfs: a plain directory, no mount needed
    (root / "data" / "bin.dat").unlink()
    (root / "new.txt").write_bytes(NEW)
    _buildah(store, "umount", c2)
    _buildah(store, "commit", c2, f"oci-archive:{out['two-oci']}:bh/two:v1")
    _buildah(store, "commit", c2, f"docker-archive:{out['two-docker']}:bh/two:v1")
    return out


def _read(cat: str, image: str, path: str) -> bytes:
    out = io.BytesIO()
    extract(path=path, image=image, catalog_root=cat, stdout=out)
    return out.getvalue()


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["oci", "docker"])
def test_buildah_images(buildah_archives: dict[str, Path], tmp_path: Path, fmt: str) -> None:
    cat = str(tmp_path / "cat")
    rep = ingest([str(buildah_archives[f"one-{fmt}"]), str(buildah_archives[f"two-{fmt}"])],
                 catalog_root=cat, jobs=1)
    assert not rep.failed, rep.failed[0].error
    view = open_view(cat)
    try:
        one, two = view.resolve_image("bh/one:v1"), view.resolve_image("bh/two:v1")
        files = {i: sorted(e.path for e in view.subtree(img.id, "/") if e.type == "file")
                 for i, img in (("one", one), ("two", two))}
        base = view.member(two.id, 0, "/data/bin.dat")  # still in the base layer, hidden
        upper = view.member(two.id, 1, "/new.txt")
    finally:
        view.close()
    assert base is not None and base.size == len(DATA)
    assert upper is not None and upper.size == len(NEW)
    assert files == {"one": ["/data/bin.dat", "/hello.txt"], "two": ["/hello.txt", "/new.txt"]}
    assert _read(cat, "bh/one:v1", "/hello.txt") == HELLO
    assert _read(cat, "bh/one:v1", "bin.dat") == DATA  # relative to WorkingDir /data
    assert _read(cat, "bh/two:v1", "/new.txt") == NEW
    assert _read(cat, "bh/two:v1", "/hello.txt") == HELLO
    with pytest.raises(PathNotFound, match="deleted in an upper layer"):
        _read(cat, "bh/two:v1", "/data/bin.dat")
