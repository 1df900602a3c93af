"""Choosing one image: by ref, id, config digest, repository or tag, and platform
(``choose_image``).

Every ``--image`` of every command goes through here, whichever backend lists the images.

What ``--image X`` matches, in this order (the first kind that matches anything decides):

1. a ref (``repo:tag``; ``repo`` alone means ``repo:latest``; docker's defaults filled in:
   ``docker.io/library/x:t`` is ``x:t``);
2. a digest: an image id (manifest digest) or a config digest (docker's IMAGE ID), full or a
   prefix of at least 4 hex digits, with or without ``sha256:``; or a digest reference as
   docker takes it, ``repo@sha256:<64 hex>`` (``repo:tag@...`` too): the image whose manifest
   digest that is, or, for an index's digest, that index's images (``--platform`` and the
   host's platform then choose among them, as ``docker pull`` would). Its repository is not
   checked: the digest names the content, whatever name it was ingested under;
3. a repository name without a tag (``app`` names ``app:v1`` when no ``app:latest`` exists);
4. a tag alone (``v1`` names ``app:v1``).

Twins (images with one config digest: the same image saved as docker-archive and as OCI) are
one image here: they have the same config and the same layers, so any of them answers every
read alike, and the one with the lowest id is taken. Candidates left that are not twins of
each other (after ``--platform``, or the host's platform when that leaves one) are an
``ImageNotFound`` listing them: never a silent pick.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .errors import ImageNotFound
from .model import Platform, familiar_ref, ref_matches


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
    index_digest: str = ""  # the index the image was found through ("" when none)


_HEX = frozenset("0123456789abcdef")


def _hex_prefix(text: str) -> str | None:
    """The hex digits ``text`` gives as a digest or digest prefix (``sha256:`` optional), or
    None when it is not one (fewer than 4 hex digits, more than 64, anything else)."""
    h = text[7:] if text.startswith("sha256:") else text
    return h if 4 <= len(h) <= 64 and set(h) <= _HEX else None


def digest_of_reference(text: str) -> str | None:
    """``sha256:<64 hex>`` of a docker digest reference (``repo@sha256:...``,
    ``repo:tag@sha256:...``), or None when ``text`` is not one."""
    name, at, digest = text.partition("@")
    if not (at and name) or not digest.startswith("sha256:"):
        return None
    h = digest[7:]
    return digest if len(h) == 64 and set(h) <= _HEX else None


def repository(ref: str) -> str:
    """``repo`` of ``repo:tag`` / ``repo@digest`` (docker's defaults dropped: ``docker.io/
    library/x:t`` -> ``x``; podman's ``localhost/`` too)."""
    r = familiar_ref(ref.split("@", 1)[0])
    if r.startswith("localhost/"):
        r = r[len("localhost/"):]
    head, _, last = r.rpartition("/")
    last = last.split(":", 1)[0]
    return f"{head}/{last}" if head else last


def _tag(ref: str) -> str:
    last = ref.split("@", 1)[0].rsplit("/", 1)[-1]
    return last.split(":", 1)[1] if ":" in last else ""


def spelled_out(refs: Iterable[str]) -> dict[str, str]:
    """The bare tags among an image's ``refs`` that another of them writes in full, each with
    the first such ref: ``{"v1": "alpha:v1"}``. The full ref replaces the bare one: a catalog
    written before bare tags were qualified (``ARCHIVE:TAG``), or a tag read from stdin, holds
    ``v1``; an ingest that names the image ``alpha:v1`` keeps that alone (``--image v1`` still
    finds it, by tag)."""
    refs = list(refs)
    full = [r for r in refs if not _bare(r)]
    out: dict[str, str] = {}
    for r in refs:
        if _bare(r) and r not in out:
            to = next((f for f in full if _tag(f) == r), None)
            if to is not None:
                out[r] = to
    return out


def new_refs(brought: Sequence[str], held: set[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """What an ingest that gives an image the refs ``brought`` changes for it, when the catalog
    holds ``held`` (familiar forms, as ``image_refs`` stores them): the refs to add, and the
    held bare tags that a ref now writes in full, each with it (``("v1", "alpha:v1")``, see
    ``spelled_out``). A bare tag is never added beside its full form."""
    refs = list(dict.fromkeys(familiar_ref(r) for r in brought))
    full = spelled_out([*refs, *sorted(held)])
    return ([r for r in refs if r not in held and r not in full],
            [(b, full[b]) for b in sorted(held) if b in full])


def _bare(ref: str) -> bool:
    return bool(ref) and not any(c in ref for c in "/:@")


def _names(how: str, asked: str, ref: str) -> bool:
    """Whether ``ref`` (one of an image's refs) is named by ``asked`` the ``how`` way."""
    if how == "ref":
        return ref_matches(asked, ref)
    if how == "repository":
        return repository(ref) == repository(asked)
    return how == "tag" and _tag(ref) == asked


def matching(rows: Sequence[ImageRow], ref: str) -> tuple[str, list[ImageRow]]:
    """The images ``ref`` names, and how: ``ref``, ``digest``, ``repository`` or ``tag`` (the
    first of those that names any; see the module's docstring). ``("", [])`` when none."""
    ref = ref.strip()
    hexpart = _hex_prefix(ref)
    pinned = digest_of_reference(ref)
    bare = bool(ref) and "@" not in ref and ":" not in ref.rsplit("/", 1)[-1]
    for how in ("ref", "digest", "repository", "tag"):
        if how == "digest" and pinned is not None:  # repo@sha256:...: a manifest or an index
            found = [r for r in rows if pinned in (r.id, r.index_digest)]
        elif how == "digest":
            if hexpart is None:
                continue
            found = [r for r in rows if r.id[7:].startswith(hexpart)
                     or r.config_digest[7:].startswith(hexpart)]
        elif how == "ref" or (bare and (how == "repository" or "/" not in ref)):
            found = [r for r in rows if any(_names(how, ref, x) for x in r.refs)]
        else:
            continue
        if found:
            return how, found
    return "", []


def group_twins(rows: Sequence[ImageRow]) -> list[list[ImageRow]]:
    """``rows`` grouped into images: twins (one config digest and platform) together, lowest
    id first."""
    groups: dict[tuple[str, str], list[ImageRow]] = {}
    for r in sorted(rows, key=lambda r: r.id):
        groups.setdefault((r.config_digest or r.id, r.platform), []).append(r)
    return list(groups.values())


def choose_image(rows: Sequence[ImageRow], ref: str | None, platform: str | None) -> ImageRow:
    """Pick one image by ``ref`` (see the module's docstring for what it matches, in what
    order) and ``platform``. Without ``ref`` there must be exactly one image (twins count as
    one; per platform). Raises ``ImageNotFound`` naming the candidates when several match."""
    want = Platform.parse(platform) if platform else None
    found = list(rows)
    how = ""
    if ref and ref.strip():
        how, found = matching(rows, ref)
    if want:
        found = [r for r in found if Platform.parse(r.platform).matches(want)]
    groups = group_twins(found)
    if len(groups) > 1 and not want:
        host = [g for g in groups if g[0].platform.startswith(host_platform())]
        if len(host) == 1:
            groups = host
    if not groups:
        what = f"no image matches {ref!r}" if ref else "the catalog holds no image"
        if platform:
            what += f" for platform {platform}"
        raise ImageNotFound(what)
    if len(groups) > 1:
        names = ", ".join(_candidate(g, how, ref or "") for g in groups[:10])
        more = f" and {len(groups) - 10} more" if len(groups) > 10 else ""
        by = f" by {how}" if how else ""
        raise ImageNotFound(
            f"{len(groups)} images match {ref or 'no --image'}{by}: {names}{more}; name one with "
            "--image (a ref or a longer id)" + ("" if want else " or --platform"))
    return groups[0][0]


def _candidate(group: Sequence[ImageRow], how: str, asked: str) -> str:
    """One candidate of an ambiguous ``--image``: the ref that matched (else its name), its
    id and config digest (12 hex digits each), platform, and how many twins it stands for."""
    r = group[0]
    name = next((x for g in group for x in g.refs if _names(how, asked.strip(), x)), r.name)
    twins = f", {len(group)} twins" if len(group) > 1 else ""
    cfg = f", config {r.config_digest[7:19]}" if r.config_digest else ""
    return f"{name} (id {r.id[7:19]}{cfg}, {r.platform}{twins})"


def host_platform() -> str:
    import platform as _p

    m = _p.machine().lower()
    arch = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(m, m)
    return f"linux/{arch}"
