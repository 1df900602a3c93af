"""Housekeeping of a catalog directory: ``remove`` images (or untag them), ``collect`` what no
image uses (gc), ``verify`` what is stored against what the catalog says it is.

All three go through the ``Writer`` (its lock: no ingest runs meanwhile) except ``verify``,
which only reads. Nothing here deletes a file a catalog row still names.
"""
from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from ..digest import Digest
from ..errors import DigestMismatch, ImageNotFound, LayerdbError, StoreError
from ..model import ref_matches
from ..processes import pid_alive
from ..selection import choose_image, matching
from .db import image_rows
from .layout import Layout
from .writer import Writer


@dataclass
class Removal:
    untagged: list[str] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)


def remove(root: str | None, names: Sequence[str], platform: str | None = None,
           wait: float = 600.0) -> Removal:
    """``layerdb rm``: a ref that names an image with other refs is untagged (as ``docker
    rmi``); an image's last ref, or its id, forgets the image. Files go at the next ``gc``."""
    out = Removal()
    with Writer.open(root, wait=wait) as w:
        with w.db() as con:
            from .db import VIEWS

            con.execute(VIEWS)
            rows = image_rows(con)
        untag: list[str] = []
        forget: list[str] = []
        for name in names:
            img = choose_image(rows, name, platform)
            # twins (one config digest) are one image: the name acts on each it names
            named = {r.id for r in matching(rows, name)[1]}
            for twin in [r for r in rows if r.id == img.id or (
                    r.id in named and r.config_digest == img.config_digest
                    and r.platform == img.platform)]:
                refs = [r for r in twin.refs if ref_matches(name, r)]
                left = [r for r in twin.refs if r not in refs and r not in untag]
                if refs and left:
                    untag.extend(r for r in refs if r not in untag)
                    out.untagged.extend(r for r in refs if r not in out.untagged)
                elif twin.id not in forget:
                    forget.append(twin.id)
                    out.untagged.extend(r for r in twin.refs if r not in untag and r not in out.untagged)
                    out.deleted.append(twin.id)
        if untag:
            w.untag(untag)
        if forget:
            w.remove_images(forget)
    return out


@dataclass
class Collected:
    layers: list[str] = field(default_factory=list)
    files: int = 0
    bytes: int = 0


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def collect(root: str | None, dry_run: bool = False, wait: float = 600.0) -> Collected:
    """``layerdb gc``: drop the layers no image uses (rows and files), and every file in the
    catalog directory that no row names: cache files, member tables, layer indexes, staging
    left by killed ingests. Safe while readers run; it holds the writer's lock."""
    out = Collected()
    with Writer.open(root, wait=wait) as w:
        lay = w.layout
        with w.db() as con:
            used = {r[0] for r in con.execute("select distinct diff_id from image_layer_rows").fetchall()}
            layers = {r[0] for r in con.execute("select diff_id from layer_meta").fetchall()}
            images = {r[0] for r in con.execute("select id from image_meta").fetchall()}
            unused = sorted(layers - used)
            if unused and not dry_run:
                con.execute("begin transaction")
                con.execute("delete from layer_blobs where list_contains(?, diff_id)", [unused])
                con.execute("delete from layer_meta where list_contains(?, diff_id)", [unused])
                con.execute("commit")
        out.layers = unused
        keep_layers = {d.split(":", 1)[1] for d in used}
        keep_images = {i.split(":", 1)[1] for i in images}
        doomed: list[str] = []
        for d, keep, suffixes in ((lay.files_dir, keep_layers, (".parquet", ".idx")),
                                  (os.path.join(lay.blobs_dir, "sha256"), keep_layers, (".zst",)),
                                  (lay.members_dir, keep_images, (".parquet", ".fate")),
                                  (os.path.join(lay.root, "packages"), keep_layers, (".parquet",))):
            with contextlib.suppress(FileNotFoundError):
                for name in os.listdir(d):
                    stem = name.split(".", 1)[0]
                    if stem not in keep or not name.endswith(suffixes):
                        doomed.append(os.path.join(d, name))
        for name in _stale_tmp(lay):
            doomed.append(name)
        for p in doomed:
            out.files += 1
            out.bytes += _tree_size(p)
            if not dry_run:
                if os.path.isdir(p):
                    shutil.rmtree(p, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(p)
        if not dry_run:
            w.refresh_lookup()
    return out


def _tree_size(p: str) -> int:
    if not os.path.isdir(p):
        return _size(p)
    total = 0
    for d, _, names in os.walk(p):
        total += sum(_size(os.path.join(d, n)) for n in names)
    return total


def _stale_tmp(lay: Layout) -> list[str]:
    """Staging of ingests whose process is gone."""
    out = []
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(lay.tmp_dir):
            if name.startswith("ingest-"):
                try:
                    pid = int(name.split("-")[1])
                except (IndexError, ValueError):
                    pid = -1
                if pid > 0 and (pid == os.getpid() or pid_alive(pid)):
                    continue
            out.append(os.path.join(lay.tmp_dir, name))
    return out


@dataclass(frozen=True)
class Problem:
    what: str  # layer | image
    id: str
    file: str
    problem: str
    repair: str


def verify(root: str | None, image: str | None = None, platform: str | None = None,
           progress: Callable[[str], None] | None = None) -> tuple[int, list[Problem]]:
    """``layerdb verify``: re-hash every cached layer (of ``image``, or all) against its
    diff_id, and check each layer's member table and index and each image's member table and
    fate file against the row counts the catalog recorded. Returns (items checked, problems)."""
    import pyarrow.parquet as pq

    from ..store import BlobStore
    from .db import Catalog
    from .layerindex import LayerIndex
    from .members import FateFile

    problems: list[Problem] = []
    with Catalog(root) as cat:
        lay = cat.layout
        if image:
            img = cat.resolve_image(image, platform)
            ids = [img.id]
        else:
            ids = [r[0] for r in cat.con.execute("select id from image_meta order by id").fetchall()]
        layer_rows = cat.con.execute(
            "select distinct m.diff_id, m.member_count, s.source from layer_meta m "
            "join image_layer_rows l on l.diff_id = m.diff_id join image_meta s on s.id = l.image_id "
            "where list_contains(?, l.image_id) order by m.diff_id", [ids]).fetchall()
        image_rows_ = cat.con.execute(
            "select id, member_count, source from image_meta where list_contains(?, id) order by id",
            [ids]).fetchall()
    if image and not ids:
        raise ImageNotFound(f"no image matches {image!r}")
    store = BlobStore(lay.blobs_dir)
    seen: set[str] = set()
    for d, count, source in layer_rows:
        if d in seen:
            continue
        seen.add(d)
        hint = f"re-ingest {source}"
        if progress:
            progress(d)
        try:
            store.verify(Digest(d))
        except (DigestMismatch, StoreError, LayerdbError) as e:
            problems.append(Problem("layer", d, store.path(Digest(d)), str(e), hint))
        except (OSError, ValueError, EOFError) as e:
            problems.append(Problem("layer", d, store.path(Digest(d)),
                                    f"unreadable cache file: {e}", hint))
        except Exception as e:  # noqa: BLE001 - zstd errors and the like: damage, said once
            problems.append(Problem("layer", d, store.path(Digest(d)),
                                    f"unreadable cache file: {type(e).__name__}: {e}", hint))
        try:
            n = pq.ParquetFile(lay.files(d)).metadata.num_rows
            if n != count:
                problems.append(Problem("layer", d, lay.files(d),
                                        f"{n} member rows, the catalog recorded {count}", hint))
        except Exception as e:  # noqa: BLE001 - any failure to read it is damage
            problems.append(Problem("layer", d, lay.files(d), f"unreadable: {e}", hint))
        try:
            li = LayerIndex(lay.layer_index(d))
            if li.n != count:
                problems.append(Problem("layer", d, lay.layer_index(d),
                                        f"{li.n} entries, the catalog recorded {count}", hint))
            li.close()
        except Exception as e:  # noqa: BLE001
            problems.append(Problem("layer", d, lay.layer_index(d), f"unreadable: {e}", hint))
    for i, count, source in image_rows_:
        hint = f"re-ingest {source}"
        try:
            n = pq.ParquetFile(lay.members(i)).metadata.num_rows
            if count is not None and n < count:
                problems.append(Problem("image", i, lay.members(i),
                                        f"{n} member rows, the catalog recorded {count}", hint))
        except Exception as e:  # noqa: BLE001
            problems.append(Problem("image", i, lay.members(i), f"unreadable: {e}", hint))
        try:
            FateFile(lay.fate(i))
        except Exception as e:  # noqa: BLE001
            problems.append(Problem("image", i, lay.fate(i), f"unreadable: {e}", hint))
    return len(seen) + len(image_rows_), problems
