#!/usr/bin/env python3
"""Deterministic benchmark corpus for layerdb.

    python benchmarks/corpus.py --out benchmarks/corpus [--quick] [--jobs N]

Builds, from real directory trees on this machine (/usr/bin, /usr/lib/..., /usr/share):

* a fleet of 28 images (24 apps, 4 of them also tagged 2.0) that share base layers the way real
  fleets do: a 3-layer "debian" base (os, share, update) under 12 images, its older 2-layer
  variant under 6 more, a 1-layer "slim" base under 6; runtime layers (python, python-deps,
  java, gcc, postgres, llvm) shared by subsets; per-app layers that add, overwrite and delete
  files with real whiteouts (``.wh.NAME``) and opaque directories (``.wh..wh..opq``), hard
  links, symlinks, PAX long and non-ASCII names. Every app image's config has
  ``Cmd ["./app"]``, ``WorkingDir "/home/app/"`` and a ``/home/app/app`` executable.
  The first three images are written in all three forms, the rest cycle through
  docker-archive (legacy, uncompressed ``<id>/layer.tar``), oci-archive with gzip layers and
  oci-archive with zstd layers. ``fleet-layout/`` is one OCI layout holding every fleet image
  (hard links to the same blobs, so it costs no extra disk).
* ``bench/big:1.0``: one layer > 1 GiB (real files, repeated with small per-copy trailers),
  marker files as the first member, at the middle and as the last member, and one 288 MiB
  file; docker-archive, oci gzip and oci zstd. ``extras/large-file.bin.zst`` is that large file
  alone as one zstd stream (what a large-file extract is compared against).
* ``bench/many-files:1.0``: one layer of 1,000,000 small text files, docker-archive.

``layers/<name>.tar`` keeps every distinct uncompressed layer tar (for ``tar -xOf`` and
ratarmount baselines). ``MANIFEST.json`` describes everything, including for each image a set
of probe paths with the expected merged-filesystem result (present + sha256, or deleted),
computed by an independent whiteout simulator in this file.

Output is a pure function of (seed, mode, the machine's files): fixed uid/gid/mtime, sorted
walks, seeded choices, gzip with mtime 0, single-threaded zstd at a fixed level. Layers are
streamed to disk, never held whole in memory. Only the standard library plus isal and
zstandard are used.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import multiprocessing
import os
import random
import shutil
import stat
import sys
import tarfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import zstandard
from isal import isal_zlib

SEED = 20240611
EPOCH = 1700000000  # fixed mtime of every member
CREATED = "2023-11-14T22:13:20Z"
MiB = 1 << 20
GiB = 1 << 30
CHUNK = 1 << 20
GZIP_LEVEL = 3  # isal: 0..3; 3 is the closest to Go's gzip default ratio
ZSTD_LEVEL = 3

MT_OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MT_OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MT_OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
MT_LAYER = {
    "gzip": "application/vnd.oci.image.layer.v1.tar+gzip",
    "zstd": "application/vnd.oci.image.layer.v1.tar+zstd",
}
APP_UID = 1000
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def log(msg: str) -> None:
    print(f"[corpus {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------
# Mode: full or quick. Everything size-like goes through here.
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Mode:
    quick: bool
    scale: float  # multiplies every tree budget
    min_budget: int
    big_target: int  # uncompressed tar bytes of the big layer (lower bound)
    big_pool: int  # distinct real bytes read for the big layer
    big_large_file: int
    many_files: int
    max_file: int = 1 << 62  # cap on any sampled real file (quick mode keeps files small)

    def mb(self, megabytes: float) -> int:
        return max(int(megabytes * MiB * self.scale), self.min_budget)


FULL = Mode(False, 1.0, 0, big_target=GiB + 64 * MiB, big_pool=420 * MiB,
            big_large_file=288 * MiB, many_files=1_000_000)
QUICK = Mode(True, 1 / 96, 48 * 1024, big_target=8 * MiB, big_pool=3 * MiB,
             big_large_file=2 * MiB, many_files=2_000, max_file=48 * 1024)


# --------------------------------------------------------------------------------------------
# Member specs
# --------------------------------------------------------------------------------------------


@dataclass
class Entry:
    """One tar member to write. ``name`` has no leading slash and no trailing slash."""

    name: str
    kind: str  # file | dir | symlink | hardlink
    mode: int = 0o644
    uid: int = 0
    gid: int = 0
    size: int = 0
    src: str | None = None  # real file whose bytes are the content (then ``trailer``)
    trailer: bytes = b""
    data: bytes | None = None  # generated content
    gen: tuple | None = None  # ("concat", [paths], size) for the big layer's large file
    linkname: str = ""
    track: str | None = None  # record offset/sha256 of this member in the layer result
    target: Entry | None = None  # hardlink: the entry (same layer) it points to

    def open(self) -> ContentReader:
        return ContentReader(self)


class ContentReader:
    """Streams an Entry's content: src bytes + trailer, or data, or a generated concat."""

    def __init__(self, e: Entry, tee: Callable[[bytes], object] | None = None):
        self.e = e
        self.sha = hashlib.sha256()
        self.tee = tee
        self._parts: Iterator[bytes] = self._iter()
        self._buf = b""

    def _iter(self) -> Iterator[bytes]:
        e = self.e
        if e.data is not None:
            yield e.data
            return
        if e.src is not None:
            with open(e.src, "rb") as f:
                remaining = e.size - len(e.trailer)
                while remaining > 0:
                    b = f.read(min(CHUNK, remaining))
                    if not b:
                        raise OSError(f"{e.src} shrank while reading")
                    remaining -= len(b)
                    yield b
            if e.trailer:
                yield e.trailer
            return
        if e.gen is not None:
            _, paths, size = e.gen
            remaining = size
            i = 0
            while remaining > 0:
                with open(paths[i % len(paths)], "rb") as f:
                    while remaining > 0:
                        b = f.read(min(CHUNK, remaining))
                        if not b:
                            break
                        remaining -= len(b)
                        yield b
                i += 1
            return
        raise ValueError(f"entry {e.name} has no content")

    def read(self, n: int = -1) -> bytes:
        out = []
        have = len(self._buf)
        if self._buf:
            out.append(self._buf)
            self._buf = b""
        while n < 0 or have < n:
            try:
                b = next(self._parts)
            except StopIteration:
                break
            out.append(b)
            have += len(b)
        data = b"".join(out)
        if n >= 0 and len(data) > n:
            data, self._buf = data[:n], data[n:]
        self.sha.update(data)
        if self.tee:
            self.tee(data)
        return data


def content_sha256(e: Entry) -> str:
    r = ContentReader(e)
    while r.read(CHUNK):
        pass
    return r.sha.hexdigest()


# --------------------------------------------------------------------------------------------
# Scanning real trees (stat only) and sampling them into entries
# --------------------------------------------------------------------------------------------


@dataclass
class Node:
    path: str  # absolute source path
    rel: str  # relative to the scanned root, "" for the root itself
    kind: str  # file | dir | symlink
    size: int
    mode: int
    linkname: str = ""


_SCAN_CACHE: dict[str, list[Node]] = {}


def _utf8_ok(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def scan(root: str) -> list[Node]:
    """All dirs, regular files and symlinks under root, in sorted top-down walk order."""
    if root in _SCAN_CACHE:
        return _SCAN_CACHE[root]
    out: list[Node] = []

    def walk(path: str, rel: str) -> None:
        try:
            it = sorted(os.scandir(path), key=lambda d: d.name)
        except OSError:
            return
        subdirs = []
        for d in it:
            if not _utf8_ok(d.name) or d.name.startswith(".wh."):
                continue
            r = f"{rel}/{d.name}" if rel else d.name
            try:
                st = d.stat(follow_symlinks=False)
            except OSError:
                continue
            if stat.S_ISLNK(st.st_mode):
                try:
                    target = os.readlink(d.path)
                except OSError:
                    continue
                if _utf8_ok(target) and len(target) < 200:
                    out.append(Node(d.path, r, "symlink", 0, 0o777, target))
            elif stat.S_ISREG(st.st_mode):
                if os.access(d.path, os.R_OK):
                    out.append(Node(d.path, r, "file", st.st_size, stat.S_IMODE(st.st_mode)))
            elif stat.S_ISDIR(st.st_mode):
                subdirs.append((d, r, st))
        for d, r, st in subdirs:
            out.append(Node(d.path, r, "dir", 0, stat.S_IMODE(st.st_mode) | 0o700))
            walk(d.path, r)

    if os.path.isdir(root):
        walk(root, "")
    _SCAN_CACHE[root] = out
    return out


def ancestors(name: str) -> list[str]:
    parts = name.split("/")
    return ["/".join(parts[:i]) for i in range(1, len(parts))]


class LayerBuilder:
    """Accumulates entries for one layer, emitting parent dirs before children, once."""

    max_file_cap = 1 << 62

    def __init__(self, name: str):
        self.name = name
        self.entries: list[Entry] = []
        self._names: set[str] = set()

    def _ensure_parents(self, name: str, uid: int = 0) -> None:
        for a in ancestors(name):
            if a not in self._names:
                owner = uid if a.startswith("home/app") else 0
                self._names.add(a)
                self.entries.append(Entry(a, "dir", 0o755, owner, owner))

    def add(self, e: Entry) -> Entry:
        if e.name in self._names:
            raise ValueError(f"{self.name}: duplicate member {e.name}")
        self._ensure_parents(e.name, e.uid)
        self._names.add(e.name)
        self.entries.append(e)
        return e

    def dir(self, name: str, mode: int = 0o755, uid: int = 0) -> None:
        if name not in self._names:
            self.add(Entry(name, "dir", mode, uid, uid))

    def file(self, name: str, data: bytes, mode: int = 0o644, uid: int = 0, **kw) -> Entry:
        return self.add(Entry(name, "file", mode, uid, uid, size=len(data), data=data, **kw))

    def copy(self, name: str, src: str, size: int, mode: int, uid: int = 0,
             trailer: bytes = b"", **kw) -> Entry:
        return self.add(Entry(name, "file", mode, uid, uid, size=size + len(trailer), src=src,
                              trailer=trailer, **kw))

    def symlink(self, name: str, target: str, uid: int = 0) -> None:
        self.add(Entry(name, "symlink", 0o777, uid, uid, linkname=target))

    def hardlink(self, name: str, target: str, mode: int = 0o755, uid: int = 0) -> None:
        tgt = next(e for e in self.entries if e.name == target)
        self.add(Entry(name, "hardlink", mode, uid, uid, linkname=target, target=tgt))

    def sample_tree(self, root: str, dest: str, budget: int, rng: random.Random,
                    max_file: int = 24 * MiB, uid: int = 0) -> int:
        """Add a seeded sample of root's files (about ``budget`` bytes) under dest."""
        nodes = scan(root)
        max_file = min(max_file, self.max_file_cap)
        files = [n for n in nodes if n.kind == "file" and n.size <= max_file]
        total = sum(n.size for n in files) or 1
        p = min(1.0, 1.3 * budget / total)
        used = 0
        chosen: list[Node] = []
        for n in nodes:
            if n.kind == "dir":
                continue
            if used >= budget:
                break
            if n.kind == "file" and n.size > max_file:
                continue
            if rng.random() >= p:
                continue
            chosen.append(n)
            used += n.size
        dirs = {n.rel: n for n in nodes if n.kind == "dir"}
        if dest:
            self._ensure_parents(dest + "/x", uid)
            self.dir(dest, 0o755, uid)
        for n in chosen:
            name = f"{dest}/{n.rel}" if dest else n.rel
            if name in self._names:
                continue
            for a in ancestors(n.rel):
                dn = f"{dest}/{a}" if dest else a
                if dn not in self._names:
                    d = dirs.get(a)
                    self.dir(dn, d.mode if d else 0o755, uid)
            if n.kind == "file":
                self.copy(name, n.path, n.size, n.mode, uid)
            else:
                self.symlink(name, n.linkname, uid)
        return used


# --------------------------------------------------------------------------------------------
# Whiteout simulator (OCI image-spec layer.md semantics), used for probes and merged counts
# --------------------------------------------------------------------------------------------


def _is_under(path: str, d: str) -> bool:
    return path.startswith(d + "/")


class MergedFS:
    def __init__(self) -> None:
        self.state: dict[str, tuple[int, Entry]] = {}

    def apply(self, idx: int, entries: list[Entry]) -> None:
        # whiteouts and opaque markers hide lower layers only: apply them first
        for e in entries:
            base = e.name.rsplit("/", 1)[-1]
            parent = e.name.rsplit("/", 1)[0] if "/" in e.name else ""
            if base == ".wh..wh..opq":
                for p in [p for p in self.state if parent == "" or _is_under(p, parent)]:
                    del self.state[p]
            elif base.startswith(".wh."):
                target = (parent + "/" if parent else "") + base[4:]
                for p in [p for p in self.state if p == target or _is_under(p, target)]:
                    del self.state[p]
        for e in entries:
            if e.name.rsplit("/", 1)[-1].startswith(".wh."):
                continue
            old = self.state.get(e.name)
            if old is not None and old[1].kind == "dir" and e.kind != "dir":
                for p in [p for p in self.state if _is_under(p, e.name)]:
                    del self.state[p]
            self.state[e.name] = (idx, e)

    @staticmethod
    def resolve_hardlink(e: Entry) -> Entry:
        while e.kind == "hardlink":
            assert e.target is not None
            e = e.target
        return e

    def counts(self) -> dict:
        c = {"files": 0, "dirs": 0, "symlinks": 0, "hardlinks": 0, "file_bytes": 0}
        for _, e in self.state.values():
            c[{"file": "files", "dir": "dirs", "symlink": "symlinks",
               "hardlink": "hardlinks"}[e.kind]] += 1
            if e.kind == "file":
                c["file_bytes"] += e.size
        return c


# --------------------------------------------------------------------------------------------
# The fleet plan
# --------------------------------------------------------------------------------------------


def first_existing(*paths: str) -> str:
    for p in paths:
        if os.path.isdir(p):
            return p
    return "/usr/lib"


FLEET = [
    # name, family, runtimes (base-first order)
    ("api-gateway", "debian", []),
    ("auth-service", "debian", ["rt-python", "rt-python-deps"]),
    ("billing", "debian", ["rt-java"]),
    ("catalog", "debian", ["rt-python"]),
    ("checkout", "debian", ["rt-python", "rt-python-deps"]),
    ("notifications", "debian", ["rt-java"]),
    ("search", "debian", ["rt-gcc"]),
    ("inventory", "debian", ["rt-python", "rt-postgres"]),
    ("payments", "debian", ["rt-java"]),
    ("recommendations", "debian", ["rt-python", "rt-python-deps"]),
    ("reporting", "debian", ["rt-java", "rt-postgres"]),
    ("shipping", "debian", ["rt-gcc"]),
    ("legacy-crm", "debian-old", ["rt-java"]),
    ("legacy-etl", "debian-old", ["rt-python", "rt-python-deps"]),
    ("admin-ui", "debian-old", []),
    ("batch-jobs", "debian-old", ["rt-python"]),
    ("metrics-exporter", "debian-old", ["rt-gcc"]),
    ("audit-log", "debian-old", ["rt-java"]),
    ("edge-proxy", "slim", []),
    ("dns-cache", "slim", []),
    ("sidecar", "slim", ["rt-llvm"]),
    ("log-shipper", "slim", ["rt-llvm"]),
    ("cron-runner", "slim", []),
    ("health-check", "slim", ["rt-llvm"]),
]
V2_TAGS = ["auth-service", "billing", "catalog", "edge-proxy"]
FAMILY_LAYERS = {
    "debian": ["base-os", "base-share", "base-update"],
    "debian-old": ["base-os", "base-share"],
    "slim": ["slim-base"],
}
FORMS = ["docker", "oci-gzip", "oci-zstd"]


@dataclass
class LayerPlan:
    name: str
    kind: str  # entries | big | many
    entries: list[Entry] = field(default_factory=list)
    created_by: str = ""
    est_size: int = 0


@dataclass
class ImagePlan:
    repo: str
    tag: str
    kind: str  # fleet | big | many-files
    layers: list[str]
    forms: list[str]
    history: list[dict]
    config_extra: dict
    probes: list[dict] = field(default_factory=list)
    edits: dict = field(default_factory=dict)
    merged: dict = field(default_factory=dict)

    @property
    def ref(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def slug(self) -> str:
        return f"{self.repo.replace('/', '_')}-{self.tag}"


def rng_for(seed: int, *names: str) -> random.Random:
    return random.Random(f"{seed}:" + ":".join(names))


def os_release(name: str, version: str) -> bytes:
    return (f'PRETTY_NAME="Benchbian {name} {version}"\nNAME="Benchbian {name}"\n'
            f'VERSION_ID="{version}"\nID=benchbian\nHOME_URL="https://example.invalid/"\n').encode()


def etc_files(b: LayerBuilder, flavor: str, version: str) -> None:
    for d, mode in [("etc", 0o755), ("tmp", 0o1777), ("root", 0o700), ("home", 0o755),
                    ("var", 0o755), ("var/log", 0o755), ("var/cache", 0o755), ("usr", 0o755)]:
        b.dir(d, mode)
    b.file("etc/os-release", os_release(flavor, version))
    b.file("etc/hostname", b"layerdb-bench\n")
    b.file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\n")
    b.file("etc/group", b"root:x:0:\napp:x:1000:\n")
    b.file("etc/shadow", b"root:*:19000:0:99999:7:::\napp:!:19000:0:99999:7:::\n", mode=0o640)


def files_in(entries: Iterable[Entry], prefix: str = "", min_size: int = 1) -> list[Entry]:
    return [e for e in entries if e.kind == "file" and e.name.startswith(prefix)
            and e.size >= min_size and ".wh." not in e.name]


def text_blob(rng: random.Random, words: list[str], n: int) -> bytes:
    out = []
    size = 0
    while size < n:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
        out.append(line)
        size += len(line) + 1
    return ("\n".join(out) + "\n").encode()[:max(n, 1)]


WORDS = ("layer image digest manifest config blob tar zstd gzip whiteout opaque fleet service "
         "request cache index catalog query extract merge runtime base python java native edge "
         "proxy worker queue deploy rollout canary replica shard token session metric alert "
         "latency throughput budget window retry backoff").split()


def plan_corpus(mode: Mode, seed: int) -> tuple[dict[str, LayerPlan], list[ImagePlan]]:
    layers: dict[str, LayerPlan] = {}
    LayerBuilder.max_file_cap = mode.max_file

    def new_layer(name: str, created_by: str) -> LayerBuilder:
        b = LayerBuilder(name)
        layers[name] = LayerPlan(name, "entries", b.entries, created_by)
        return b

    # ---- base layers -----------------------------------------------------------------------
    r = rng_for(seed, "base-os")
    b = new_layer("base-os", "ADD rootfs.tar.xz / # benchbian 12 os")
    etc_files(b, "12", "12")
    b.symlink("bin", "usr/bin")
    b.symlink("sbin", "usr/sbin")
    b.symlink("lib", "usr/lib")
    # small files first, like a distro base: ~1.3k files, ~90 MB
    b.sample_tree("/usr/bin", "usr/bin", mode.mb(30), r, max_file=2 * MiB)
    b.sample_tree("/usr/sbin", "usr/sbin", mode.mb(6), r, max_file=2 * MiB)
    b.sample_tree("/usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", mode.mb(60), r,
                  max_file=2 * MiB)

    r = rng_for(seed, "base-share")
    b = new_layer("base-share", "RUN apt-get install -y locales tzdata ca-certificates")
    b.sample_tree("/usr/share", "usr/share", mode.mb(40), r, max_file=1 * MiB)

    # base-update: a security-update layer on top of base-os/base-share (shared by 12 images)
    r = rng_for(seed, "base-update")
    b = new_layer("base-update", "RUN apt-get update && apt-get upgrade -y")
    os_files = files_in(layers["base-os"].entries, "usr/", 256)
    upd = r.sample(os_files, min(20, len(os_files)))
    for e in upd:
        assert e.src is not None
        b.copy(e.name, e.src, e.size, e.mode, trailer=b"\n# benchbian security update 12.1\n")
    b.file("etc/os-release", os_release("12", "12.1"))
    rest = [e for e in os_files if e not in upd]
    base_update_edits: dict[str, list] = {"whiteouts": [], "opaque_dirs": []}
    for e in r.sample(rest, min(3, len(rest))):
        d, base = e.name.rsplit("/", 1)
        b.dir(d)
        b.file(f"{d}/.wh.{base}", b"")
        base_update_edits["whiteouts"].append("/" + e.name)
    share_dirs = _dirs_with_children(layers["base-share"].entries, min_children=3, min_depth=3)
    if share_dirs:
        od = r.choice(share_dirs)
        base_update_edits["opaque_dirs"].append("/" + od)
        b.dir(od)
        b.file(f"{od}/.wh..wh..opq", b"")
        b.file(f"{od}/UPDATED.txt", b"replaced by benchbian 12.1\n")
    b.file("var/log/apt-history.log", text_blob(r, WORDS, 3000))

    r = rng_for(seed, "slim-base")
    b = new_layer("slim-base", "ADD slim-rootfs.tar / # benchslim 3.19")
    etc_files(b, "slim", "3.19")
    b.symlink("bin", "usr/bin")
    b.sample_tree("/usr/bin", "usr/bin", mode.mb(10), r, max_file=4 * MiB)
    b.sample_tree("/usr/lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", mode.mb(8), r,
                  max_file=4 * MiB)

    # ---- runtime layers --------------------------------------------------------------------
    runtimes = {
        "rt-python": [("/usr/lib/python3.11", "usr/lib/python3.11", 45)],
        "rt-python-deps": [("/usr/lib/python3/dist-packages", "usr/lib/python3/dist-packages",
                            35)],
        "rt-java": [(first_existing("/usr/lib/jvm/java-17-openjdk-amd64", "/usr/lib/jvm"),
                     "usr/lib/jvm/java-17", 70)],
        "rt-gcc": [("/usr/lib/gcc", "usr/lib/gcc", 45)],
        "rt-postgres": [(first_existing("/usr/lib/postgresql"), "usr/lib/postgresql", 35)],
        "rt-llvm": [(first_existing("/usr/lib/llvm-14", "/usr/lib/llvm-15", "/usr/lib"),
                     "usr/lib/llvm", 30)],
    }
    for name, trees in runtimes.items():
        r = rng_for(seed, name)
        b = new_layer(name, f"RUN install-{name[3:]}.sh")
        for src, dest, mb in trees:
            b.sample_tree(src, dest, mode.mb(mb), r)
        st = os.stat("/usr/bin/python3.11") if os.path.isfile("/usr/bin/python3.11") else None
        if name == "rt-python" and st and st.st_size <= mode.max_file:
            b.copy("usr/local/bin/python3.11", "/usr/bin/python3.11", st.st_size, 0o755)
            b.symlink("usr/local/bin/python3", "python3.11")

    # ---- app layers ------------------------------------------------------------------------
    lo, hi = min(64 * 1024, mode.max_file // 4), min(4 * MiB, mode.max_file)
    bin_pool = [n for n in scan("/usr/bin") if n.kind == "file" and lo <= n.size <= hi]
    share_top = sorted({n.rel.split("/")[0] for n in scan("/usr/share") if n.kind == "dir"})
    images: list[ImagePlan] = []

    def lower_state(names: list[str]) -> MergedFS:
        m = MergedFS()
        for i, ln in enumerate(names):
            m.apply(i, layers[ln].entries)
        return m

    for i, (app, family, rts) in enumerate(FLEET):
        r = rng_for(seed, "app", app)
        lnames = FAMILY_LAYERS[family] + rts
        b = new_layer(f"app-{app}", f"COPY --chown=app:app ./{app} /home/app/")
        b.dir("home", 0o755)
        b.dir("home/app", 0o755, APP_UID)
        binsrc = r.choice(bin_pool)
        b.copy("home/app/app", binsrc.path, binsrc.size, 0o755, APP_UID,
               trailer=f"\n{app} build 1.0.{i}\n".encode())
        b.file("home/app/config.yaml",
               f"service: {app}\nport: {8000 + i}\nreplicas: {1 + i % 4}\n".encode()
               + text_blob(r, WORDS, r.randint(500, 3000)), uid=APP_UID)
        sub = r.choice(share_top)
        b.sample_tree(f"/usr/share/{sub}", f"home/app/static/{sub}", mode.mb(r.uniform(2, 10)), r,
                      max_file=4 * MiB, uid=APP_UID)
        if any(x.startswith("rt-python") for x in rts):
            b.sample_tree("/usr/lib/python3/dist-packages", "home/app/lib", mode.mb(2), r,
                          uid=APP_UID)
        b.symlink("home/app/current", "app", APP_UID)
        if i % 2 == 0:
            b.hardlink("home/app/app.bak", "home/app/app", 0o755, APP_UID)
        if i % 3 == 0:
            deep = "/".join(f"segment-{k:02d}-of-a-deeply-nested-path" for k in range(7))
            b.file(f"home/app/static/{deep}/long-name-file.txt", b"long path member\n",
                   uid=APP_UID)
        if i % 3 == 1:
            b.file("home/app/static/r\u00e9sum\u00e9-\u00fcbersicht-\u65e5\u672c.txt",
                   "non-ascii name \u2713\n".encode(), uid=APP_UID)
        lnames.append(f"app-{app}")

        edits: dict[str, list] = {"overwrites": [], "whiteouts": [], "opaque_dirs": [],
                                  "readded": []}
        if family == "debian":  # the shared base-update layer's own deletions
            edits["whiteouts"] += base_update_edits["whiteouts"]
            edits["opaque_dirs"] += base_update_edits["opaque_dirs"]
        if i % 10 not in (3, 7):  # a patch layer on most apps
            m = lower_state(lnames)
            b2 = new_layer(f"patch-{app}", "RUN ./patch.sh && rm -rf ...")
            lower_entries = [e for _, e in m.state.values()
                             if not e.name.startswith(("home", "etc"))]
            candidates_d = (_dirs_with_children(lower_entries, min_children=2, min_depth=3)
                            or _dirs_with_children(lower_entries, min_children=1, min_depth=2))
            taken: list[str] = [p[1:] for p in edits["whiteouts"] + edits["opaque_dirs"]]

            def free(p: str) -> bool:
                return all(p != t and not _is_under(p, t) and not _is_under(t, p) for t in taken)

            dwh = _pick(r, [d for d in candidates_d if free(d)])
            if dwh:
                taken.append(dwh)
                parent, base = dwh.rsplit("/", 1)
                b2.dir(parent)
                b2.file(f"{parent}/.wh.{base}", b"")
                edits["whiteouts"].append("/" + dwh)
            od = _pick(r, [d for d in candidates_d if free(d)]) if i % 3 == 1 else None
            if od:
                taken.append(od)
                b2.dir(od)
                b2.file(f"{od}/.wh..wh..opq", b"")
                b2.file(f"{od}/NEW-after-opaque.txt", f"{app} replaced this dir\n".encode())
                # re-add one lower child under the opaque dir with new content
                kids = [p for p in m.state if _is_under(p, od) and m.state[p][1].kind == "file"]
                if kids:
                    k = r.choice(sorted(kids))
                    if k.count("/") == od.count("/") + 1:
                        b2.file(k, f"{app} re-added {k} inside opaque dir\n".encode())
                edits["opaque_dirs"].append("/" + od)
            lower_files = sorted(p for p, (_, e) in m.state.items()
                                 if e.kind == "file" and not p.startswith(("home", "etc"))
                                 and free(p) and ".wh." not in p)
            g = _pick(r, lower_files)
            if g:
                taken.append(g)
                gp, gb = g.rsplit("/", 1)
                b2.dir(gp)
                b2.file(f"{gp}/.wh.{gb}", b"")
                edits["whiteouts"].append("/" + g)
            f = _pick(r, [p for p in lower_files if free(p)])
            if f:
                taken.append(f)
                fe = m.state[f][1]
                tr = fe.trailer + f"\n# patched by {app}\n".encode()
                if fe.src:
                    b2.copy(f, fe.src, fe.size - len(fe.trailer), fe.mode, trailer=tr)
                else:
                    b2.file(f, (fe.data or b"") + tr, fe.mode)
                edits["overwrites"].append("/" + f)
            b2.file("home/app/config.yaml",
                    f"service: {app}\nport: {9000 + i}\npatched: true\n".encode(), uid=APP_UID)
            edits["overwrites"].append("/home/app/config.yaml")
            b2.file("home/app/VERSION", b"1.0.1\n", uid=APP_UID)
            lnames.append(f"patch-{app}")

            if i % 4 == 2 and g:  # hotfix: re-add a whited-out file, replace the app binary
                b3 = new_layer(f"hotfix-{app}", "COPY hotfix/ /")
                b3.file(g, f"{app} hotfix re-added /{g}\n".encode())
                edits["readded"].append("/" + g)
                nb = r.choice(bin_pool)
                b3.copy("home/app/app", nb.path, nb.size, 0o755, APP_UID,
                        trailer=f"\n{app} hotfix 1.0.2\n".encode())
                edits["overwrites"].append("/home/app/app")
                lnames.append(f"hotfix-{app}")
        images.append(_fleet_image(app, "1.0", lnames, rts, edits, i))

        if app in V2_TAGS:
            r2 = rng_for(seed, "v2", app)
            b4 = new_layer(f"v2-{app}", f"COPY ./{app}-2.0 /home/app/")
            nb = r2.choice(bin_pool)
            b4.copy("home/app/app", nb.path, nb.size, 0o755, APP_UID,
                    trailer=f"\n{app} build 2.0.0\n".encode())
            m = lower_state(lnames)
            static = sorted(p for p, (_, e) in m.state.items()
                            if p.startswith("home/app/static/") and e.kind == "file")
            e2 = dict(edits, overwrites=edits["overwrites"] + ["/home/app/app"],
                      whiteouts=list(edits["whiteouts"]))
            if static:
                s = r2.choice(static)
                sp, sb = s.rsplit("/", 1)
                b4.file(f"{sp}/.wh.{sb}", b"", uid=APP_UID)
                e2["whiteouts"] = e2["whiteouts"] + ["/" + s]
            images.append(_fleet_image(app, "2.0", lnames + [f"v2-{app}"], rts, e2, i))

    # formats: the first three apps' 1.0 images in all forms, the rest cycle docker/gzip/zstd
    all_forms = {f"fleet/{app}:1.0" for app, _, _ in FLEET[:3]}
    for pos, im in enumerate(images):
        im.forms = list(FORMS) if im.ref in all_forms else [FORMS[pos % 3]]

    # ---- probes and merged counts per fleet image -----------------------------------------
    for im in images:
        _fill_probes(im, layers, rng_for(seed, "probes", im.ref))

    # ---- big and many-files ----------------------------------------------------------------
    layers["big"] = plan_big(mode, seed)
    layers["many-files"] = LayerPlan("many-files", "many", [],
                                     f"RUN generate {mode.many_files} small files")
    images.append(ImagePlan("bench/big", "1.0", "big", ["big"], list(FORMS),
                            [_hist(layers["big"].created_by)],
                            {"Env": [PATH_ENV], "Cmd": ["/bin/true"], "WorkingDir": "/"}))
    images.append(ImagePlan("bench/many-files", "1.0", "many-files", ["many-files"], ["docker"],
                            [_hist(layers["many-files"].created_by)],
                            {"Env": [PATH_ENV], "Cmd": ["/bin/true"], "WorkingDir": "/data"}))
    return layers, images


def _pick(r: random.Random, seq: list):
    return r.choice(seq) if seq else None


def _dirs_with_children(entries: list[Entry], min_children: int, min_depth: int) -> list[str]:
    kids: dict[str, int] = {}
    names = set()
    for e in entries:
        names.add(e.name)
        if "/" in e.name and e.kind == "file":
            kids[e.name.rsplit("/", 1)[0]] = kids.get(e.name.rsplit("/", 1)[0], 0) + 1
    return sorted(d for d, c in kids.items()
                  if c >= min_children and d.count("/") + 1 >= min_depth and d in names
                  and ".wh." not in d)


def _hist(created_by: str, empty: bool = False) -> dict:
    h: dict = {"created": CREATED, "created_by": created_by}
    if empty:
        h["empty_layer"] = True
    return h


def _fleet_image(app: str, tag: str, lnames: list[str], rts: list[str], edits: dict,
                 i: int) -> ImagePlan:
    hist: list[dict] = []
    for ln in lnames:
        if ln.startswith("app-"):
            hist.append(_hist("ENV APP_HOME=/home/app", empty=True))
        hist.append(_hist(f"<{ln}>"))  # replaced with the layer's created_by when written
    hist.append(_hist("USER app", empty=True))
    hist.append(_hist("WORKDIR /home/app/", empty=True))
    hist.append(_hist('CMD ["./app"]', empty=True))
    cfg = {"User": "app", "Env": [PATH_ENV, "APP_HOME=/home/app", f"APP_NAME={app}"],
           "Cmd": ["./app"], "WorkingDir": "/home/app/",
           "ExposedPorts": {f"{8000 + i}/tcp": {}},
           "Labels": {"org.opencontainers.image.title": app,
                      "org.opencontainers.image.version": tag,
                      "com.example.runtimes": ",".join(rts) or "none"}}
    return ImagePlan(f"fleet/{app}", tag, "fleet", list(lnames), [], hist, cfg, edits=edits)


def _fill_probes(im: ImagePlan, layers: dict[str, LayerPlan], r: random.Random) -> None:
    m = MergedFS()
    for idx, ln in enumerate(im.layers):
        m.apply(idx, layers[ln].entries)
    im.merged = m.counts()
    probes: list[dict] = []

    def present(path: str, note: str) -> None:
        idx, e = m.state[path]
        c = m.resolve_hardlink(e)
        probes.append({"path": "/" + path, "status": "present", "kind": e.kind,
                       "layer": idx, "layer_name": im.layers[idx], "size": c.size,
                       "sha256": content_sha256(c), "note": note})

    def deleted(path: str, note: str) -> None:
        assert path not in m.state, path
        probes.append({"path": "/" + path, "status": "deleted", "note": note})

    present("home/app/app", "app binary (top-most version)")
    present("home/app/config.yaml", "app config")
    if "home/app/app.bak" in m.state:
        present("home/app/app.bak", "hard link to home/app/app")
    base0 = sorted(p for p, (idx, e) in m.state.items() if idx == 0 and e.kind == "file"
                   and p.startswith("usr/"))
    for p in r.sample(base0, min(2, len(base0))):
        present(p, "untouched file from the bottom layer")
    for idx, ln in enumerate(im.layers):
        if ln.startswith("rt-"):
            own = sorted(p for p, (j, e) in m.state.items() if j == idx and e.kind == "file")
            if own:
                present(r.choice(own), f"file from runtime layer {ln}")
        if ln == "base-update":
            own = sorted(p for p, (j, e) in m.state.items() if j == idx and e.kind == "file"
                         and p.startswith("usr/"))
            if own:
                present(r.choice(own), "file overwritten by shared layer base-update")
    for p in sorted(m.state):
        if "segment-06" in p and p.endswith("long-name-file.txt"):
            present(p, "PAX long path")
        if "\u00fcbersicht" in p:
            present(p, "non-ASCII name")
    for p in im.edits.get("overwrites", []):
        if p[1:] in m.state:
            present(p[1:], "overwritten in an upper layer")
    for p in im.edits.get("readded", []):
        present(p[1:], "whited out, then re-added in a higher layer")
    all_names = _all_names(layers, im.layers)
    for p in im.edits.get("whiteouts", []):
        q = p[1:]
        if q in im.edits.get("readded", []) or "/" + q in im.edits.get("readded", []):
            continue
        deleted(q, "whited out (.wh.)")
        under = sorted(x for x in all_names if _is_under(x, q))
        if under:
            deleted(under[len(under) // 2], "inside a whited-out directory")
    for p in im.edits.get("opaque_dirs", []):
        q = p[1:]
        now = sorted(x for x in m.state if _is_under(x, q) and m.state[x][1].kind == "file")
        if now:
            present(now[0], "file in an opaque dir, from the opaque layer or above")
        hidden = sorted(x for x in all_names if _is_under(x, q)
                        and x not in m.state and ".wh." not in x)
        if hidden:
            deleted(hidden[0], "lower file hidden by an opaque dir")
    # dedupe by path, keep first
    seen: set[str] = set()
    im.probes = []
    for pr in probes:
        if pr["path"] not in seen:
            seen.add(pr["path"])
            im.probes.append(pr)


def _all_names(layers: dict[str, LayerPlan], names: list[str]) -> set[str]:
    s: set[str] = set()
    for ln in names:
        s.update(e.name for e in layers[ln].entries)
    return s


# --------------------------------------------------------------------------------------------
# The big layer: > 1 GiB, markers at start / middle / end, one large file
# --------------------------------------------------------------------------------------------

BIG_TREES = ["/usr/lib/x86_64-linux-gnu", "/usr/lib/jvm", "/usr/lib/llvm-14", "/usr/share",
             "/usr/lib/gcc", "/usr/bin", "/usr/lib/python3.11", "/usr/lib/postgresql"]


def _tar_cost(name: str, size: int) -> int:
    hdr = 512 if len(name) < 100 else 2048
    return hdr + (size + 511) // 512 * 512


def marker_bytes(which: str, seed: int) -> bytes:
    return (f"layerdb benchmark marker: {which}\nseed: {seed}\n"
            f"this file sits at the {which} of the big layer\n").encode()


def plan_big(mode: Mode, seed: int) -> LayerPlan:
    r = rng_for(seed, "big")
    pool: list[Node] = []
    max_file = min(48 * MiB, mode.big_pool // 8)
    for t in BIG_TREES:
        pool += [n for n in scan(t) if n.kind == "file" and 1024 <= n.size <= max_file]
    r.shuffle(pool)
    chosen, used = [], 0
    for n in pool:
        if used >= mode.big_pool:
            break
        chosen.append(n)
        used += n.size
    chosen.sort(key=lambda n: n.path)
    large_src = [n.path for n in sorted(chosen, key=lambda n: -n.size)[:64]]

    b = LayerBuilder("big")
    lp = LayerPlan("big", "big", b.entries, "COPY big-data/ /")
    b.file("marker-start.txt", marker_bytes("start", seed), track="start")
    total = 1024
    mid_done = large_done = False
    rep = 0
    while total < mode.big_target:
        order = list(chosen)
        rng_for(seed, "big-rep", str(rep)).shuffle(order)
        trailer = b"" if rep == 0 else f"\n[layerdb bench copy {rep}]\n".encode()
        for n in order:
            if total >= mode.big_target and large_done:
                break
            if not mid_done and total >= mode.big_target // 2:
                b.file("data/mid/marker-middle.txt", marker_bytes("middle", seed), track="middle")
                mid_done = True
            # the large file goes after the middle marker: it spans ~60% to ~85% of the tar
            if not large_done and total >= int(mode.big_target * 0.6):
                gsrc = sorted(large_src)
                b.add(Entry("data/large/large-file.bin", "file", 0o644, size=mode.big_large_file,
                            gen=("concat", gsrc, mode.big_large_file), track="large"))
                total += _tar_cost("data/large/large-file.bin", mode.big_large_file)
                large_done = True
            name = f"data/rep{rep:02d}{n.path}"
            before = len(b.entries)
            b.copy(name, n.path, n.size, n.mode, trailer=trailer)
            total += sum(_tar_cost(e.name, e.size) for e in b.entries[before:])
        rep += 1
    b.file("marker-end.txt", marker_bytes("end", seed), track="end")
    lp.est_size = total
    return lp


# --------------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------------


class HashingWriter:
    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.n = 0

    def write(self, b) -> int:
        self.sha.update(b)
        self.f.write(b)
        self.n += len(b)
        return len(b)

    def tell(self) -> int:
        return self.n

    def flush(self) -> None:
        pass


def _tarinfo(e: Entry) -> tarfile.TarInfo:
    ti = tarfile.TarInfo(e.name)
    ti.mtime = EPOCH
    ti.mode = e.mode
    ti.uid, ti.gid = e.uid, e.gid
    ti.uname = ti.gname = ""
    if e.kind == "dir":
        ti.type = tarfile.DIRTYPE
    elif e.kind == "symlink":
        ti.type = tarfile.SYMTYPE
        ti.linkname = e.linkname
    elif e.kind == "hardlink":
        ti.type = tarfile.LNKTYPE
        ti.linkname = e.linkname
    else:
        ti.size = e.size
    return ti


def write_entries_layer(lp: LayerPlan, path: Path, extras_dir: Path | None) -> dict:
    tracked: dict[str, dict] = {}
    tmp = path.with_suffix(".tmp")
    zst_out = None
    with open(tmp, "wb") as f:
        hw = HashingWriter(f)
        tf = tarfile.open(fileobj=hw, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK)
        n_files = file_bytes = 0
        for e in lp.entries:
            ti = _tarinfo(e)
            reader = None
            if e.kind == "file":
                tee = None
                if e.track == "large" and extras_dir is not None:
                    zst_path = extras_dir / "large-file.bin.zst"
                    zst_fh = open(zst_path, "wb")
                    zst_out = (zst_fh, zstandard.ZstdCompressor(level=ZSTD_LEVEL)
                               .stream_writer(zst_fh, size=e.size, closefd=False))
                    tee = zst_out[1].write
                reader = ContentReader(e, tee)
                n_files += 1
                file_bytes += e.size
            tf.addfile(ti, reader)
            if e.track:
                padded = (e.size + 511) // 512 * 512
                tracked[e.track] = {"path": "/" + e.name, "size": e.size,
                                    "offset_data": tf.offset - padded,
                                    "sha256": reader.sha.hexdigest() if reader else None}
                if zst_out is not None and e.track == "large":
                    zst_out[1].close()
                    zst_out[0].close()
                    zst_out = None
        tf.close()
    os.replace(tmp, path)
    return {"diff_id": "sha256:" + hw.sha.hexdigest(), "size": hw.n,
            "members": len(lp.entries), "files": n_files, "file_bytes": file_bytes,
            "tracked": tracked}


def _ustar(name: bytes, size: int, typeflag: bytes, mode: int) -> bytes:
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = b"0000000\0"
    h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % EPOCH
    h[148:156] = b"        "
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[329:345] = b"0000000\x000000000\x00"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _many_corpus() -> bytes:
    out = bytearray()
    for n in scan("/usr/lib/python3.11"):
        if n.kind == "file" and n.path.endswith(".py") and n.size < 200_000:
            with open(n.path, "rb") as f:
                out += f.read()
            if len(out) > 4 * MiB:
                break
    if len(out) < 65536:
        out += (" ".join(WORDS) + "\n").encode() * 2000
    return bytes(out)


def many_name(n: int) -> str:
    return f"data/{n // 100000:02d}/{n // 1000 % 100:02d}/f{n:07d}.txt"


def write_many_layer(mode: Mode, seed: int, path: Path) -> dict:
    """1,000,000 small files with a hand-rolled ustar writer (tarfile costs ~80 us/member)."""
    text = _many_corpus()
    tlen = len(text) - 4096
    r = rng_for(seed, "many-files")
    tmp = path.with_suffix(".tmp")
    probes_at = {0, mode.many_files // 2, mode.many_files - 1, mode.many_files // 3}
    probes = []
    file_bytes = 0
    members = 0
    with open(tmp, "wb") as f:
        hw = HashingWriter(f)
        buf = bytearray()
        made_dirs: set[str] = set()
        for n in range(mode.many_files):
            name = many_name(n)
            d = name.rsplit("/", 1)[0]
            if d not in made_dirs:
                for a in ancestors(name):
                    if a not in made_dirs:
                        made_dirs.add(a)
                        buf += _ustar(a.encode() + b"/", 0, b"5", 0o755)
                        members += 1
            ln = int(r.paretovariate(1.3) * 40) % 3000 + 8
            off = r.randrange(tlen)
            data = b"# file %07d\n" % n + text[off:off + ln]
            buf += _ustar(name.encode(), len(data), b"0", 0o644)
            buf += data
            pad = -len(data) % 512
            if pad:
                buf += bytes(pad)
            members += 1
            file_bytes += len(data)
            if n in probes_at:
                probes.append({"path": "/" + name, "status": "present", "size": len(data),
                               "sha256": hashlib.sha256(data).hexdigest(), "index": n,
                               "offset_data": hw.n + len(buf) - pad - len(data)})
            if len(buf) >= 4 * MiB:
                hw.write(buf)
                buf = bytearray()
        buf += bytes(1024)
        buf += bytes(-(hw.n + len(buf)) % 10240)
        hw.write(buf)
    os.replace(tmp, path)
    return {"diff_id": "sha256:" + hw.sha.hexdigest(), "size": hw.n, "members": members,
            "files": mode.many_files, "file_bytes": file_bytes, "tracked": {},
            "probes": sorted(probes, key=lambda p: p["index"])}


def compress_blob(src: Path, codec: str, dst_dir: Path) -> dict:
    tmp = dst_dir / f".tmp-{src.stem}-{codec}"
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        hw = HashingWriter(fo)
        if codec == "gzip":
            c = isal_zlib.compressobj(GZIP_LEVEL, isal_zlib.DEFLATED, 31)
            while b := fi.read(CHUNK):
                hw.write(c.compress(b))
            hw.write(c.flush())
        elif codec == "zstd":
            w = zstandard.ZstdCompressor(level=ZSTD_LEVEL).stream_writer(
                hw, size=os.path.getsize(src), closefd=False)
            while b := fi.read(CHUNK):
                w.write(b)
            w.close()
        else:
            raise ValueError(codec)
    hexd = hw.sha.hexdigest()
    os.replace(tmp, dst_dir / hexd)
    return {"digest": "sha256:" + hexd, "size": hw.n, "media_type": MT_LAYER[codec]}


# --------------------------------------------------------------------------------------------
# Image JSON and archive assembly
# --------------------------------------------------------------------------------------------


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def sha256_hex(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def image_config(im: ImagePlan, layers: dict[str, LayerPlan], info: dict[str, dict]) -> bytes:
    hist = []
    for h in im.history:
        h = dict(h)
        if h["created_by"].startswith("<") and h["created_by"].endswith(">"):
            h["created_by"] = layers[h["created_by"][1:-1]].created_by
        hist.append(h)
    cfg = {
        "architecture": "amd64",
        "os": "linux",
        "created": CREATED,
        "author": "layerdb benchmarks",
        "config": im.config_extra,
        "rootfs": {"type": "layers", "diff_ids": [info[ln]["diff_id"] for ln in im.layers]},
        "history": hist,
    }
    return dumps(cfg)


def oci_manifest(config: bytes, blobs: list[dict], im: ImagePlan) -> bytes:
    return dumps({
        "schemaVersion": 2,
        "mediaType": MT_OCI_MANIFEST,
        "config": {"mediaType": MT_OCI_CONFIG, "digest": "sha256:" + sha256_hex(config),
                   "size": len(config)},
        "layers": [{"mediaType": b["media_type"], "digest": b["digest"], "size": b["size"]}
                   for b in blobs],
        "annotations": {"org.opencontainers.image.created": CREATED},
    })


def _index_entry(manifest: bytes, im: ImagePlan, ref_name: str) -> dict:
    return {"mediaType": MT_OCI_MANIFEST, "digest": "sha256:" + sha256_hex(manifest),
            "size": len(manifest), "platform": {"architecture": "amd64", "os": "linux"},
            "annotations": {"io.containerd.image.name": f"docker.io/{im.ref}",
                            "org.opencontainers.image.ref.name": ref_name}}


class ArchiveWriter:
    """An outer tar (docker-archive / oci-archive) with fixed metadata, copying blobs in."""

    def __init__(self, path: Path):
        self.path = path
        self.tmp = path.with_name(path.name + ".tmp")
        self.f = open(self.tmp, "wb")
        self.tf = tarfile.open(fileobj=self.f, mode="w", format=tarfile.PAX_FORMAT,
                               copybufsize=4 * MiB)
        self.offsets: dict[str, int] = {}

    def dir(self, name: str) -> None:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.mtime = tarfile.DIRTYPE, 0o755, EPOCH
        self.tf.addfile(ti)

    def bytes(self, name: str, data: bytes) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = len(data), 0o644, EPOCH
        self.tf.addfile(ti, io.BytesIO(data))
        self.offsets[name] = self.tf.offset - (len(data) + 511) // 512 * 512

    def file(self, name: str, src: Path) -> None:
        ti = tarfile.TarInfo(name)
        ti.size, ti.mode, ti.mtime = os.path.getsize(src), 0o644, EPOCH
        with open(src, "rb") as f:
            self.tf.addfile(ti, f)
        self.offsets[name] = self.tf.offset - (ti.size + 511) // 512 * 512

    def close(self) -> int:
        self.tf.close()
        self.f.close()
        os.replace(self.tmp, self.path)
        return os.path.getsize(self.path)


def write_docker_archive(im: ImagePlan, out: Path, layer_dir: Path, config: bytes,
                         info: dict[str, dict], layers: dict[str, LayerPlan]) -> dict:
    w = ArchiveWriter(out)
    ids: list[str] = []
    parent = ""
    members = []
    for ln in im.layers:
        lid = sha256_hex(f"{parent}\n{info[ln]['diff_id']}".encode())
        w.dir(lid)
        w.bytes(f"{lid}/VERSION", b"1.0")
        v1 = {"id": lid, "created": CREATED, "os": "linux",
              "container_config": {"Cmd": [layers[ln].created_by]}}
        if parent:
            v1["parent"] = parent
        w.bytes(f"{lid}/json", dumps(v1))
        w.file(f"{lid}/layer.tar", layer_dir / f"{ln}.tar")
        members.append({"layer": ln, "member": f"{lid}/layer.tar",
                        "offset_data": w.offsets[f"{lid}/layer.tar"],
                        "size": info[ln]["size"], "diff_id": info[ln]["diff_id"],
                        "codec": "none"})
        ids.append(lid)
        parent = lid
    cfg_name = sha256_hex(config) + ".json"
    w.bytes(cfg_name, config)
    manifest = [{"Config": cfg_name, "RepoTags": [im.ref],
                 "Layers": [f"{i}/layer.tar" for i in ids]}]
    w.bytes("manifest.json", dumps(manifest))
    w.bytes("repositories", dumps({im.repo: {im.tag: ids[-1]}}))
    size = w.close()
    return {"path": str(out), "size": size, "form": "docker", "layers": members}


def write_oci_archive(im: ImagePlan, out: Path, blob_dir: Path, config: bytes,
                      blobs: list[dict], info: dict[str, dict]) -> dict:
    manifest = oci_manifest(config, blobs, im)
    index = dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                   "manifests": [_index_entry(manifest, im, im.tag)]})
    w = ArchiveWriter(out)
    w.bytes("oci-layout", dumps({"imageLayoutVersion": "1.0.0"}))
    w.bytes("index.json", index)
    w.dir("blobs")
    w.dir("blobs/sha256")
    w.bytes(f"blobs/sha256/{sha256_hex(manifest)}", manifest)
    w.bytes(f"blobs/sha256/{sha256_hex(config)}", config)
    members = []
    for ln, b in zip(im.layers, blobs):
        hexd = b["digest"].split(":", 1)[1]
        name = f"blobs/sha256/{hexd}"
        w.file(name, blob_dir / hexd)
        members.append({"layer": ln, "member": name, "offset_data": w.offsets[name],
                        "size": b["size"], "digest": b["digest"],
                        "diff_id": info[ln]["diff_id"], "media_type": b["media_type"],
                        "codec": "gzip" if b["media_type"].endswith("gzip") else "zstd"})
    size = w.close()
    return {"path": str(out), "size": size, "manifest_digest": "sha256:" + sha256_hex(manifest),
            "layers": members}


# --------------------------------------------------------------------------------------------
# Orchestration (a process pool of --jobs workers; every job is a pure function of the plan)
# --------------------------------------------------------------------------------------------

_G: dict = {}


def _job_layer(name: str) -> tuple[str, dict]:
    t = time.perf_counter()
    lp: LayerPlan = _G["layers"][name]
    path = _G["out"] / "layers" / f"{name}.tar"
    if lp.kind == "many":
        res = write_many_layer(_G["mode"], _G["seed"], path)
    else:
        res = write_entries_layer(lp, path, _G["out"] / "extras" if lp.kind == "big" else None)
    res["file"] = f"layers/{name}.tar"
    res["seconds"] = round(time.perf_counter() - t, 2)
    return name, res


def _job_compress(args: tuple[str, str]) -> tuple[str, str, dict]:
    name, codec = args
    res = compress_blob(_G["out"] / "layers" / f"{name}.tar", codec, _G["work"] / "blobs")
    return name, codec, res


def _job_archive(args: tuple[int, str]) -> tuple[int, str, dict]:
    k, form = args
    im: ImagePlan = _G["images"][k]
    out: Path = _G["out"]
    info, layers = _G["info"], _G["layers"]
    config = _G["configs"][k]
    path = out / "archives" / f"{im.slug}.{form}.tar"
    if form == "docker":
        res = write_docker_archive(im, path, out / "layers", config, info, layers)
    else:
        codec = form.split("-")[1]
        blobs = [info[ln]["blobs"][codec] for ln in im.layers]
        res = write_oci_archive(im, path, _G["work"] / "blobs", config, blobs, info)
    res["path"] = str(path.relative_to(out))
    return k, form, res


def _pool_map(fn, jobs: list, n: int):
    if n <= 1:
        return [fn(j) for j in jobs]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(n) as pool:
        return list(pool.imap_unordered(fn, jobs, chunksize=1))


def du(path: Path) -> int:
    total = 0
    seen: set[tuple[int, int]] = set()
    for root, _, files in os.walk(path):
        for f in files:
            st = os.lstat(os.path.join(root, f))
            if (st.st_dev, st.st_ino) in seen:
                continue
            seen.add((st.st_dev, st.st_ino))
            total += st.st_size
    return total


OWNED = ["layers", "archives", "extras", "fleet-layout", "_work", "MANIFEST.json"]


def build(out: Path, mode: Mode, seed: int, jobs: int) -> dict:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    for name in OWNED:  # remove only what this script writes
        p = out / name
        if p.is_dir():
            shutil.rmtree(p)
        elif p.exists():
            p.unlink()
    for d in ["layers", "archives", "extras", "_work/blobs", "fleet-layout/blobs/sha256"]:
        (out / d).mkdir(parents=True, exist_ok=True)

    layers, images = plan_corpus(mode, seed)
    t_plan = time.perf_counter() - t0
    log(f"planned {len(layers)} layers, {len(images)} images in {t_plan:.1f}s")
    _G.update(layers=layers, images=images, out=out, work=out / "_work", mode=mode, seed=seed)

    # 1. layer tars (largest first so the two big ones run side by side)
    def est(name: str) -> int:
        lp = layers[name]
        if lp.kind == "many":
            return mode.many_files * 1100
        if lp.kind == "big":
            return lp.est_size
        return sum(e.size for e in lp.entries)

    order = sorted(layers, key=lambda n: -est(n))
    t = time.perf_counter()
    info = dict(_pool_map(_job_layer, order, jobs))
    t_layers = time.perf_counter() - t
    log(f"wrote {len(info)} layer tars in {t_layers:.1f}s")

    # 2. compressed blobs, each (layer, codec) once
    need: set[tuple[str, str]] = set()
    for im in images:
        for form in im.forms:
            if form != "docker":
                need.update((ln, form.split("-")[1]) for ln in im.layers)
        if im.kind == "fleet":  # fleet-layout: docker-only images go in as gzip
            codec = "zstd" if im.forms == ["oci-zstd"] else "gzip"
            need.update((ln, codec) for ln in im.layers)
    t = time.perf_counter()
    for ln in info:
        info[ln]["blobs"] = {}
    for ln, codec, res in _pool_map(_job_compress, sorted(need, key=lambda x: -est(x[0])), jobs):
        info[ln]["blobs"][codec] = res
    t_comp = time.perf_counter() - t
    log(f"compressed {len(need)} blobs in {t_comp:.1f}s")

    # 3. archives
    configs = [image_config(im, layers, info) for im in images]
    _G.update(info=info, configs=configs)
    ajobs = [(k, f) for k, im in enumerate(images) for f in im.forms]
    ajobs.sort(key=lambda kf: -sum(est(ln) for ln in images[kf[0]].layers)
               * (1 if kf[1] == "docker" else 0.4))
    t = time.perf_counter()
    archives: dict[int, dict] = {}
    for k, form, res in _pool_map(_job_archive, ajobs, jobs):
        archives.setdefault(k, {})[form] = res
    t_arch = time.perf_counter() - t
    log(f"wrote {len(ajobs)} archives in {t_arch:.1f}s")

    # 4. fleet-layout: one OCI layout with every fleet image, blobs hard-linked
    lay = out / "fleet-layout"
    blobdir = lay / "blobs" / "sha256"
    idx_entries = []

    def put(hexd: str, data: bytes | None = None) -> None:
        dst = blobdir / hexd
        if dst.exists():
            return
        if data is not None:
            dst.write_bytes(data)
        else:
            os.link(out / "_work" / "blobs" / hexd, dst)

    layout_images = []
    for k, im in enumerate(images):
        if im.kind != "fleet":
            continue
        codec = "zstd" if im.forms == ["oci-zstd"] else "gzip"
        blobs = [info[ln]["blobs"][codec] for ln in im.layers]
        manifest = oci_manifest(configs[k], blobs, im)
        put(sha256_hex(configs[k]), configs[k])
        put(sha256_hex(manifest), manifest)
        for bl in blobs:
            put(bl["digest"].split(":", 1)[1])
        idx_entries.append(_index_entry(manifest, im, im.ref))
        layout_images.append({"ref": im.ref, "codec": codec,
                              "manifest_digest": "sha256:" + sha256_hex(manifest)})
    (lay / "oci-layout").write_bytes(dumps({"imageLayoutVersion": "1.0.0"}))
    (lay / "index.json").write_bytes(dumps({"schemaVersion": 2, "mediaType": MT_OCI_INDEX,
                                            "manifests": idx_entries}))
    shutil.rmtree(out / "_work")

    # 5. MANIFEST.json
    big_i = info["big"]
    big_img = next(im for im in images if im.kind == "big")
    many_i = info["many-files"]
    elapsed = time.perf_counter() - t0
    shared_by: dict[str, list[str]] = {}
    for im in images:
        for ln in im.layers:
            shared_by.setdefault(ln, []).append(im.ref)
    doc: dict = {
        "format": "layerdb-bench-corpus/1",
        "generator": "benchmarks/corpus.py",
        "seed": seed,
        "quick": mode.quick,
        "root": str(out.resolve()),
        "created": CREATED,
        "elapsed_seconds": round(elapsed, 1),
        "phase_seconds": {"plan": round(t_plan, 1), "layers": round(t_layers, 1),
                          "compress": round(t_comp, 1), "archives": round(t_arch, 1)},
        "compression": {"gzip": f"isal level {GZIP_LEVEL}, mtime 0",
                        "zstd": f"zstandard level {ZSTD_LEVEL}, single thread"},
        "sizes": {d: du(out / d) for d in ["layers", "archives", "extras", "fleet-layout"]},
        "layers": {ln: {"file": i["file"], "diff_id": i["diff_id"], "size": i["size"],
                        "members": i["members"], "files": i["files"],
                        "file_bytes": i["file_bytes"], "created_by": layers[ln].created_by,
                        "blobs": i["blobs"], "used_by": shared_by.get(ln, []),
                        "build_seconds": i["seconds"]}
                   for ln, i in sorted(info.items())},
        "images": [{
            "ref": im.ref, "repo": im.repo, "tag": im.tag, "kind": im.kind,
            "config_digest": "sha256:" + sha256_hex(configs[k]),
            "layers": im.layers,
            "archives": archives[k],
            "edits": im.edits, "merged": im.merged, "probes": im.probes,
        } for k, im in enumerate(images)],
        "big": {
            "image": big_img.ref, "layer": "big", "layer_file": big_i["file"],
            "layer_size": big_i["size"], "diff_id": big_i["diff_id"],
            "archives": {f: a["path"] for f, a in archives[images.index(big_img)].items()},
            "start": big_i["tracked"]["start"], "middle": big_i["tracked"]["middle"],
            "end": big_i["tracked"]["end"], "large_file": big_i["tracked"]["large"],
            "large_file_zst": "extras/large-file.bin.zst",
            "large_file_zst_size": os.path.getsize(out / "extras" / "large-file.bin.zst"),
        },
        "many_files": {
            "image": "bench/many-files:1.0", "layer": "many-files",
            "layer_file": many_i["file"], "layer_size": many_i["size"],
            "files": many_i["files"], "members": many_i["members"],
            "archive": archives[len(images) - 1]["docker"]["path"],
            "probes": many_i["probes"], "name_pattern": "data/NN/NN/fNNNNNNN.txt",
        },
        "fleet_layout": {"path": "fleet-layout", "images": layout_images},
    }
    doc["sizes"]["total"] = sum(doc["sizes"].values())
    for im_doc in doc["images"]:
        if im_doc["kind"] == "big":
            im_doc["probes"] = [dict(doc["big"][k], status="present", note=k)
                                for k in ("start", "middle", "end", "large_file")]
            im_doc["merged"] = {"files": big_i["files"], "file_bytes": big_i["file_bytes"]}
        elif im_doc["kind"] == "many-files":
            im_doc["probes"] = [dict(p, note="small file") for p in many_i["probes"]]
            im_doc["merged"] = {"files": many_i["files"], "file_bytes": many_i["file_bytes"]}
    (out / "MANIFEST.json").write_text(json.dumps(doc, indent=1, ensure_ascii=False))
    log(f"done in {elapsed:.1f}s, {doc['sizes']['total'] / GiB:.2f} GiB in {out}")
    return doc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "corpus")
    ap.add_argument("--quick", action="store_true", help="tiny corpus for smoke tests (seconds)")
    ap.add_argument("--seed", type=int, default=SEED)
    ap.add_argument("--jobs", type=int, default=min(os.cpu_count() or 1, 4))
    a = ap.parse_args(argv)
    build(a.out, QUICK if a.quick else FULL, a.seed, a.jobs)
    return 0


if __name__ == "__main__":
    sys.exit(main())
