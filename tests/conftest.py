"""Shared fixtures. Images are generated (tests/imagefactory.py), never committed."""
from __future__ import annotations

import os
from pathlib import Path

import imagefactory
import pytest


@pytest.fixture(scope="session")
def umoci_images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Variant name -> path of the umoci-built image in every format skopeo writes, plus
    ``rootfs`` (see ``imagefactory.build_umoci_image``). Built once per session."""
    if not imagefactory.have_tools():
        if os.environ.get("CI"):  # CI installs them (scripts/setup.sh): missing is a failure
            pytest.fail("umoci and skopeo are missing; scripts/setup.sh installs them")
        pytest.skip("umoci and skopeo are needed for the real-tool fixtures")
    return imagefactory.build_umoci_image(tmp_path_factory.mktemp("umoci"))


@pytest.fixture()
def scratch(tmp_path: Path) -> Path:
    """An empty directory for a source's temporary files (``open_source(path, tmpdir)``)."""
    d = tmp_path / "scratch"
    d.mkdir()
    return d
