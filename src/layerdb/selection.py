"""Choosing one image: by ref, id or config digest, and platform (``choose_image``).

Every ``--image`` of every command goes through here, whichever backend lists the images.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .errors import ImageNotFound
from .model import Platform, ref_matches


@dataclass(frozen=True)
class ImageRow:
    id: str
    name: str
    refs: list[str]
    platform: str
    entrypoint: list[str]
    cmd: list[str]
    working_dir: str
    env: list[str]
    config_digest: str = ""


def choose_image(rows: Sequence[ImageRow], ref: str | None, platform: str | None) -> ImageRow:
    """Pick one image by ref (``repo:tag``; ``repo`` means ``repo:latest``), id or config
    digest (full or a prefix of at least 4 hex digits). Without ``ref`` there must be exactly
    one image (per platform). Raises ``ImageNotFound`` naming the candidates."""
    want = Platform.parse(platform) if platform else None
    found = list(rows)
    if ref:
        ref = ref.strip()
        hexpart = ref[7:] if ref.startswith("sha256:") else ref
        is_hex = len(hexpart) >= 4 and all(c in "0123456789abcdef" for c in hexpart)

        def hit(r: ImageRow) -> bool:
            if any(ref_matches(ref, x) for x in r.refs):
                return True
            return is_hex and (r.id[7:].startswith(hexpart) or r.config_digest[7:].startswith(hexpart))

        found = [r for r in found if hit(r)]
    if want:
        found = [r for r in found if Platform.parse(r.platform).matches(want)]
    if len(found) > 1 and not want:
        host = [r for r in found if r.platform.startswith(host_platform())]
        if len(host) == 1:
            found = host
    if not found:
        what = f"no image matches {ref!r}" if ref else "the catalog holds no image"
        if platform:
            what += f" for platform {platform}"
        raise ImageNotFound(what)
    if len(found) > 1:
        names = ", ".join(f"{r.name} ({r.id[:19]}, {r.platform})" for r in found[:10])
        raise ImageNotFound(
            f"{len(found)} images match {ref or 'no --image'}: {names}; name one with --image"
            + ("" if want else " or --platform"))
    return found[0]


def host_platform() -> str:
    import platform as _p

    m = _p.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)
    return f"linux/{arch}"
