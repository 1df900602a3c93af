#!/usr/bin/env python3
"""Baselines: how people get a file out of an image archive today, and the floors.

Importable (``benchmarks/run.py`` calls these) or standalone:

    python benchmarks/baselines.py [--corpus benchmarks/corpus] [--only NAME ...] [--json F]

Every function returns a ``Measurement``: wall seconds, peak RSS of the measured subprocess
tree in KiB (``None`` for in-process measurements, where the number would be the caller's),
bytes produced, MB/s (MB = 10**6 bytes) where a throughput makes sense, and details.

Subprocess peak RSS comes from ``os.wait4`` on the child: Linux reports the maximum resident
set of the child and of every descendant it waited for, so a ``bash`` pipeline's number is its
largest process, not a sum. Caches are warm (nothing drops the page cache); scratch space goes
to ``$LAYERDB_BENCH_TMP`` or the system temp dir and is removed after each measurement,
outside the timed region.

A layer can be named three ways wherever a function takes one:
* a path to a file: an uncompressed, gzip or zstd tar (detected from magic bytes);
* ``(archive, member)``: a member of a docker-archive / oci-archive tar, e.g.
  ``("archives/x.docker.tar", "<id>/layer.tar")`` or ``(..., "blobs/sha256/<hex>")``;
* an ``archive_layers()`` item (a ``LayerRef``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Union

import zstandard
from isal import isal_zlib

CHUNK = 1 << 20
MB = 1_000_000
GNU_TIME = "/usr/bin/time" if os.access("/usr/bin/time", os.X_OK) else None

# --------------------------------------------------------------------------------------------
# Results and process measurement
# --------------------------------------------------------------------------------------------


@dataclass
class Measurement:
    name: str
    seconds: float
    peak_rss_kib: int | None = None
    out_bytes: int | None = None  # bytes of the extracted file, or bytes decompressed
    mb_s: float | None = None  # throughput over out_bytes (uncompressed side), MB = 1e6
    sha256: str | None = None  # of the extracted file, when one was extracted
    ok: bool = True  # the file was found / the command succeeded
    detail: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def settle() -> None:
    """Flush dirty pages (untimed) so one measurement's writeback does not land in the next
    one's timing; creating and deleting 1M files otherwise swings results by 4x."""
    os.sync()


def run_measured(cmd: list[str] | str, *, stdout: IO | int | None = subprocess.DEVNULL,
                 cwd: str | None = None, env: dict | None = None) -> tuple[float, int, int, str]:
    """Run cmd (a list, or a string for ``bash -c`` with pipefail) and time it.

    Returns (wall seconds, peak RSS KiB of the process tree, exit code, stderr tail)."""
    dt, rss, rc, err, _ = run_measured_cpu(cmd, stdout=stdout, cwd=cwd, env=env)
    return dt, rss, rc, err


def run_measured_cpu(cmd: list[str] | str, *, stdout: IO | int | None = subprocess.DEVNULL,
                     cwd: str | None = None,
                     env: dict | None = None) -> tuple[float, int, int, str, float]:
    """``run_measured``, and the CPU seconds (user + system) of every thread of the command and
    of the descendants it waited for (not those of a process pool's forkserver, which nobody
    waits for: use it on commands that do their work in their own process).

    Peak RSS comes from GNU time's ``%M`` (its wait4 on the command: the largest RSS of the
    command and every descendant it waited for). Not ``os.wait4`` from here: a child forked
    from this Python process carries this process's RSS as its high-water mark across exec.
    """
    if isinstance(cmd, str):
        cmd = ["bash", "-c", "set -euo pipefail\n" + cmd]
    errf = tempfile.TemporaryFile()
    rssf = tempfile.NamedTemporaryFile(prefix="layerdb-bench-rss-", delete=False)
    rssf.close()
    wrapped = ([GNU_TIME, "-f", "%M", "-o", rssf.name, *cmd] if GNU_TIME else list(cmd))
    try:
        settle()
        t = time.perf_counter()
        p = subprocess.Popen(wrapped, stdout=stdout, stderr=errf, cwd=cwd, env=env)
        _, status, ru = os.wait4(p.pid, 0)
        dt = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
        rss = ru.ru_maxrss
        if GNU_TIME:
            words = Path(rssf.name).read_text().split()
            rss = int(words[-1]) if words and words[-1].isdigit() else rss
    finally:
        os.unlink(rssf.name)
    errf.seek(0)
    err = errf.read()[-2000:].decode(errors="replace")
    errf.close()
    return dt, rss, p.returncode, err, ru.ru_utime + ru.ru_stime


def _session_stats(sid: int) -> dict[int, tuple[int, float]]:
    """(RSS bytes, CPU seconds so far) of every process in session ``sid``, by pid."""
    page, tick = os.sysconf("SC_PAGE_SIZE"), os.sysconf("SC_CLK_TCK")
    out = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
            if int(fields[3]) != sid:  # fields[3]: session id; [11], [12]: utime, stime
                continue
            with open(f"/proc/{pid}/statm", "rb") as f:
                rss = int(f.read().split()[1]) * page
            out[int(pid)] = (rss, (int(fields[11]) + int(fields[12])) / tick)
        except (OSError, IndexError, ValueError):
            continue
    return out


@dataclass
class SessionRun:
    seconds: float
    peak_bytes: int  # the largest sum of RSS over the session's processes at one sample
    cpu: float  # user + system seconds of the session's processes, as last sampled
    rc: int
    stdout_bytes: int
    stderr: str


def run_session(cmd: list[str], env: dict | None = None, every: float = 0.02) -> SessionRun:
    """Run ``cmd`` in a session of its own and sample every process in it each ``every``
    seconds: the summed RSS (its peak) and CPU time. Unlike ``run_measured`` this reaches
    processes nobody waits for (a process pool's forkserver and its workers); a process's
    CPU after its last sample (at most ``every`` seconds of it) is missed."""
    import threading

    t0 = time.monotonic()
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         start_new_session=True)
    peak = 0
    cpu: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            stats = _session_stats(p.pid)
            peak = max(peak, sum(rss for rss, _ in stats.values()))
            cpu.update((pid, c) for pid, (_, c) in stats.items())
            time.sleep(every)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    out, err = p.communicate()
    seconds = time.monotonic() - t0
    done.set()
    th.join()
    return SessionRun(seconds, peak, sum(cpu.values()), p.returncode, len(out),
                      err.decode(errors="replace").strip())


def _scratch(tmpdir: str | os.PathLike | None, prefix: str) -> Path:
    base = tmpdir or os.environ.get("LAYERDB_BENCH_TMP") or None
    if base:
        os.makedirs(base, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=f"layerdb-bench-{prefix}-", dir=base))


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(CHUNK):
            h.update(b)
    return h.hexdigest()


# --------------------------------------------------------------------------------------------
# Layers inside archives
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LayerRef:
    """One layer of an image, base-first. ``member`` is None when ``path`` is the blob file."""

    path: str  # the archive (or the blob file itself for an OCI layout directory)
    member: str | None
    codec: str  # none | gzip | zstd
    size: int  # blob bytes
    offset: int  # byte offset of the blob inside path
    digest: str | None  # blob digest as the manifest names it (None for docker-archive)
    diff_id: str | None


LayerLike = Union[str, os.PathLike, tuple, LayerRef]


def _oci_layers(read_json, blob_loc) -> list[tuple]:
    idx = read_json("index.json")
    desc = idx["manifests"][0]
    man = read_json(f"blobs/sha256/{desc['digest'].split(':', 1)[1]}")
    cfg = read_json(f"blobs/sha256/{man['config']['digest'].split(':', 1)[1]}")
    out = []
    for layer, diff_id in zip(man["layers"], cfg["rootfs"]["diff_ids"]):
        mt = layer["mediaType"]
        codec = "gzip" if "gzip" in mt else "zstd" if "zstd" in mt else "none"
        out.append((f"blobs/sha256/{layer['digest'].split(':', 1)[1]}", codec, layer["digest"],
                    diff_id))
    return out


def archive_layers(archive: str | os.PathLike) -> list[LayerRef]:
    """The layers of the (first) image in a docker-archive, oci-archive or OCI layout dir."""
    archive = str(archive)
    if os.path.isdir(archive):
        def rj(name: str):
            with open(os.path.join(archive, name)) as f:
                return json.load(f)
        return [LayerRef(os.path.join(archive, m), None, c,
                         os.path.getsize(os.path.join(archive, m)), 0, d, di)
                for m, c, d, di in _oci_layers(rj, None)]
    with tarfile.open(archive) as tf:
        members = {m.name.lstrip("./"): m for m in tf.getmembers()}

        def rj(name: str):
            return json.load(_member(tf, members[name]))

        if "manifest.json" in members and "index.json" not in members:
            m = rj("manifest.json")[0]
            cfg = rj(m["Config"])
            rows = []
            for member, diff_id in zip(m["Layers"], cfg["rootfs"]["diff_ids"]):
                ti = members[member]
                with _member(tf, ti) as f:
                    codec = detect_codec(f.read(4))
                rows.append(LayerRef(archive, member, codec, ti.size, ti.offset_data, None,
                                     diff_id))
            return rows
        rows = []
        for member, codec, digest, diff_id in _oci_layers(rj, None):
            ti = members[member]
            rows.append(LayerRef(archive, member, codec, ti.size, ti.offset_data, digest,
                                 diff_id))
        return rows


def _member(tf: tarfile.TarFile, ti: tarfile.TarInfo) -> IO[bytes]:
    f = tf.extractfile(ti)
    if f is None:
        raise ValueError(f"{ti.name} is not a regular file")
    return f


def detect_codec(head: bytes) -> str:
    if head[:2] == b"\x1f\x8b":
        return "gzip"
    if head[:4] == b"\x28\xb5\x2f\xfd":
        return "zstd"
    return "none"


def _as_ref(layer: LayerLike) -> LayerRef:
    if isinstance(layer, LayerRef):
        return layer
    if isinstance(layer, tuple):
        archive, member = str(layer[0]), layer[1]
        with tarfile.open(archive) as tf:
            ti = tf.getmember(member)
            with _member(tf, ti) as f:
                codec = detect_codec(f.read(4))
        return LayerRef(archive, member, codec, ti.size, ti.offset_data, None, None)
    path = str(layer)
    with open(path, "rb") as f:
        codec = detect_codec(f.read(4))
    return LayerRef(path, None, codec, os.path.getsize(path), 0, None, None)


class _Slice:
    """A read-only window [offset, offset+size) of a file."""

    def __init__(self, path: str, offset: int, size: int):
        self.f = open(path, "rb")
        self.f.seek(offset)
        self.left = size

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n = self.left
        b = self.f.read(n)
        self.left -= len(b)
        return b

    def close(self) -> None:
        self.f.close()

    def __enter__(self):
        return self

    def __exit__(self, *a) -> None:
        self.close()


def _open_ref(ref: LayerRef) -> _Slice:
    return _Slice(ref.path, ref.offset, ref.size)


_TAR_I = {"none": "", "gzip": "-I gzip ", "zstd": "-I zstd "}


def _cat_cmd(ref: LayerRef) -> str:
    """Shell words producing the blob on stdout (``tar -xOf`` of the outer archive)."""
    return f"tar -xOf {shlex.quote(ref.path)} {shlex.quote(ref.member or '')}"


# --------------------------------------------------------------------------------------------
# 1. The blog method
# --------------------------------------------------------------------------------------------

_BLOG_SCRIPT = r'''
ARCHIVE=$1; P=${2#/}; WORK=$3; OUT=$4
mkdir -p "$WORK/image" "$WORK/layers"
tar -xf "$ARCHIVE" -C "$WORK/image"
cd "$WORK/image"
# manifest.json (docker save) or index.json -> manifest -> config -> layers, base first
python3 - > "$WORK/layers.txt" <<'PY'
import json, os
if os.path.exists("manifest.json") and not os.path.exists("index.json"):
    m = json.load(open("manifest.json"))[0]
    cfg = json.load(open(m["Config"]))
    assert len(cfg["rootfs"]["diff_ids"]) == len(m["Layers"])
    for layer in m["Layers"]:
        print("none", layer)
else:
    idx = json.load(open("index.json"))
    man = json.load(open("blobs/sha256/" + idx["manifests"][0]["digest"].split(":")[1]))
    cfg = json.load(open("blobs/sha256/" + man["config"]["digest"].split(":")[1]))
    assert len(cfg["rootfs"]["diff_ids"]) == len(man["layers"])
    for layer in man["layers"]:
        mt = layer["mediaType"]
        codec = "gzip" if mt.endswith("gzip") else "zstd" if mt.endswith("zstd") else "none"
        print(codec, "blobs/sha256/" + layer["digest"].split(":")[1])
PY
n=0
while read -r codec layer; do
  mkdir -p "$WORK/layers/$n"
  case $codec in
    gzip) tar -I gzip -xf "$layer" -C "$WORK/layers/$n" ;;
    zstd) tar -I zstd -xf "$layer" -C "$WORK/layers/$n" ;;
    *)    tar -xf "$layer" -C "$WORK/layers/$n" ;;
  esac
  n=$((n+1))
done < "$WORK/layers.txt"
# find the file: top layer down, stopping at a whiteout or an opaque directory
python3 - "$WORK/layers" "$n" "$P" "$OUT" <<'PY'
import os, shutil, sys
root, n, path, out = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
parts = path.split("/")
for i in range(n - 1, -1, -1):
    layer = os.path.join(root, str(i))
    full = os.path.join(layer, path)
    if os.path.lexists(full):
        shutil.copyfile(full, out)
        sys.exit(0)
    for k in range(len(parts)):
        d = os.path.join(layer, *parts[:k])
        if os.path.lexists(os.path.join(d, ".wh." + parts[k])):
            sys.exit(3)
        if k and os.path.lexists(os.path.join(d, ".wh..wh..opq")):
            sys.exit(3)
sys.exit(3)
PY
'''


def blog_method(archive: str | os.PathLike, path: str, *,
                tmpdir: str | os.PathLike | None = None) -> Measurement:
    """Untar the archive, read manifest/index -> manifest -> config, untar every layer (in its
    own directory, ``tar -I gzip|zstd -xf``), then look the file up top-down honouring
    whiteouts and opaque dirs, and copy it out. One bash script, timed end to end (cleanup
    not timed). ``ok`` is False when the path is absent or deleted in the merged view."""
    work = _scratch(tmpdir, "blog")
    out = work / "out.bin"
    try:
        dt, rss, rc, err = run_measured(
            ["bash", "-c", "set -euo pipefail\n" + _BLOG_SCRIPT, "blog", str(archive), path,
             str(work), str(out)])
        if rc not in (0, 3):
            raise RuntimeError(f"blog method failed ({rc}): {err}")
        ok = rc == 0
        return Measurement("blog_method", dt, rss,
                           out.stat().st_size if ok else None, None,
                           sha256_file(out) if ok else None, ok,
                           {"archive": str(archive), "path": path,
                            "scratch_bytes": _du(work)})
    finally:
        _rmtree(work)


def _du(p: Path) -> int:
    """Apparent bytes under p (coreutils du: far faster than os.walk over 1M files)."""
    r = subprocess.run(["du", "-sb", str(p)], capture_output=True, text=True)
    return int(r.stdout.split()[0]) if r.returncode == 0 and r.stdout else 0


def _rmtree(p: Path) -> None:
    subprocess.run(["rm", "-rf", "--one-file-system", str(p)], check=False)
    settle()


# --------------------------------------------------------------------------------------------
# 2. tar -xOf on the right layer
# --------------------------------------------------------------------------------------------


def tar_xOf(layer: LayerLike, member: str, *, occurrence: bool = False,
            tmpdir: str | os.PathLike | None = None) -> Measurement:
    """``tar [-I gzip|zstd] -xOf LAYER MEMBER > out``, or for a layer inside an archive
    ``tar -xOf ARCHIVE LAYER_MEMBER | tar [-I ...] -xOf - MEMBER > out``.

    Plain ``tar -xOf`` reads the whole layer even after it found the member (a later member
    of the same name would win); ``occurrence=True`` adds ``--occurrence=1`` so tar stops at
    the first match, which is the best a tar user can do."""
    ref = _as_ref(layer)
    member = member.lstrip("/")
    occ = "--occurrence=1 " if occurrence else ""
    work = _scratch(tmpdir, "xOf")
    out = work / "out.bin"
    try:
        m = shlex.quote(member)
        if ref.member is None:
            cmd = f"tar {_TAR_I[ref.codec]}{occ}-xOf {shlex.quote(ref.path)} {m}"
        else:
            # the exit status is the extracting tar's: with --occurrence it stops early and
            # the feeding tar dies of SIGPIPE, which is not a failure
            cmd = f"set +o pipefail; {_cat_cmd(ref)} | tar {_TAR_I[ref.codec]}{occ}-xOf - {m}"
        with open(out, "wb") as fo:
            dt, rss, rc, err = run_measured(cmd, stdout=fo)
        size = out.stat().st_size
        ok = rc == 0
        return Measurement("tar_xOf" + ("_occurrence" if occurrence else ""), dt, rss, size,
                           None, sha256_file(out) if ok else None, ok,
                           {"layer": ref.path, "layer_member": ref.member, "codec": ref.codec,
                            "member": member, "rc": rc, "stderr": err[-300:] if rc else ""})
    finally:
        _rmtree(work)


# --------------------------------------------------------------------------------------------
# 3. The ingest floor: read + sha256 every blob once, decompress (+ sha256 the tar) if needed
# --------------------------------------------------------------------------------------------


class _HashingReader:
    def __init__(self, f):
        self.f = f
        self.sha = hashlib.sha256()
        self.n = 0

    def read(self, n: int = -1) -> bytes:
        b = self.f.read(n)
        self.sha.update(b)
        self.n += len(b)
        return b


def _decompress_iter(codec: str, src) -> Iterable[bytes]:
    """Yield the uncompressed stream of src (a reader) chunk by chunk."""
    if codec == "none":
        while b := src.read(CHUNK):
            yield b
    elif codec == "gzip":
        d = isal_zlib.decompressobj(31)
        while b := src.read(CHUNK):
            while b:
                out = d.decompress(b)
                if out:
                    yield out
                b = b""
                if d.eof and d.unused_data:  # concatenated gzip members
                    b = d.unused_data
                    d = isal_zlib.decompressobj(31)
        tail = d.flush()
        if tail:
            yield tail
    elif codec == "zstd":
        r = zstandard.ZstdDecompressor().stream_reader(src, read_size=CHUNK,
                                                       read_across_frames=True)
        while b := r.read(4 * CHUNK):
            yield b
    else:
        raise ValueError(codec)


def _floor_one(ref: LayerRef, hash_uncompressed: bool) -> dict:
    t = time.perf_counter()
    with _open_ref(ref) as f:
        hr = _HashingReader(f)
        diff = hashlib.sha256()
        n_out = 0
        if ref.codec == "none":
            while hr.read(CHUNK):
                pass
            n_out = hr.n
        else:
            for b in _decompress_iter(ref.codec, hr):
                n_out += len(b)
                if hash_uncompressed:
                    diff.update(b)
    digest = "sha256:" + hr.sha.hexdigest()
    return {"blob": ref.member or ref.path, "codec": ref.codec, "bytes_in": hr.n,
            "bytes_out": n_out, "digest": digest,
            "diff_id": digest if ref.codec == "none" else "sha256:" + diff.hexdigest(),
            "seconds": time.perf_counter() - t}


def floor_hash_decompress(blob_paths: Iterable[LayerLike], *, workers: int = 1,
                          hash_uncompressed: bool = True) -> Measurement:
    """The unavoidable ingest work: read and sha256 each blob once; when it is compressed,
    also decompress it (isal for gzip, zstandard for zstd) and sha256 the tar (the diff_id).
    In-process, ``workers`` processes over the blobs. ``mb_s`` is over uncompressed bytes;
    ``detail['mb_s_in']`` over blob bytes. Each returned digest/diff_id can be checked."""
    refs = [_as_ref(b) for b in blob_paths]
    settle()
    t = time.perf_counter()
    if workers > 1 and len(refs) > 1:
        import multiprocessing
        with multiprocessing.get_context("fork").Pool(workers) as pool:
            rows = pool.starmap(_floor_one, [(r, hash_uncompressed) for r in refs],
                                chunksize=1)
    else:
        rows = [_floor_one(r, hash_uncompressed) for r in refs]
    dt = time.perf_counter() - t
    b_in = sum(r["bytes_in"] for r in rows)
    b_out = sum(r["bytes_out"] for r in rows)
    return Measurement("floor_hash_decompress", dt, None, b_out, b_out / dt / MB, None, True,
                       {"blobs": len(rows), "bytes_in": b_in, "mb_s_in": b_in / dt / MB,
                        "workers": workers, "per_blob": rows})


# --------------------------------------------------------------------------------------------
# 4. Plain streaming decompression
# --------------------------------------------------------------------------------------------


def stream_decompress(path: LayerLike, codec: str | None = None, *, cli: bool = False,
                      out: str | os.PathLike | None = None) -> Measurement:
    """Decompress a whole zstd (or gzip) stream once, to /dev/null or ``out``.

    In-process with zstandard / isal by default; ``cli=True`` runs ``zstd -dc`` / ``gzip -dc``
    as a subprocess instead (with peak RSS). This is the floor for extracting a large file
    that sits in a single compressed stream."""
    ref = _as_ref(path)
    codec = codec or ref.codec
    if cli:
        prog = {"zstd": "zstd -dc", "gzip": "gzip -dc", "none": "cat"}[codec]
        src = (f"{prog} {shlex.quote(ref.path)}" if ref.member is None
               else f"{_cat_cmd(ref)} | {prog}")
        dest = shlex.quote(str(out)) if out else "/dev/null"
        dt, rss, rc, err = run_measured(f"{src} > {dest}")
        if rc:
            raise RuntimeError(err)
        n = os.path.getsize(out) if out else None
        return Measurement("stream_decompress_cli", dt, rss, n, n / dt / MB if n else None,
                           None, True, {"path": ref.path, "member": ref.member, "codec": codec})
    settle()
    t = time.perf_counter()
    n = 0
    fo = open(out, "wb") if out else None
    try:
        with _open_ref(ref) as f:
            for b in _decompress_iter(codec, f):
                n += len(b)
                if fo:
                    fo.write(b)
    finally:
        if fo:
            fo.close()
    dt = time.perf_counter() - t
    return Measurement("stream_decompress", dt, None, n, n / dt / MB, None, True,
                       {"path": ref.path, "member": ref.member, "codec": codec,
                        "bytes_in": ref.size})


# --------------------------------------------------------------------------------------------
# 5. tar -xf every layer once
# --------------------------------------------------------------------------------------------


def tar_xf_all_layers(archive: str | os.PathLike, *,
                      tmpdir: str | os.PathLike | None = None) -> Measurement:
    """Unpack every layer of the image once with ``tar -xf`` (each into its own directory),
    streaming each blob out of the archive (``tar -xOf ARCHIVE BLOB | tar [-I ..] -xf -``),
    so the outer archive is never copied. Seconds are summed over layers (setup untimed);
    peak RSS is the largest layer's."""
    refs = archive_layers(archive)
    work = _scratch(tmpdir, "xf")
    try:
        total, peak, per = 0.0, 0, []
        for i, ref in enumerate(refs):
            d = work / str(i)
            d.mkdir()
            if ref.member is None:
                cmd = f"tar {_TAR_I[ref.codec]}-xf {shlex.quote(ref.path)} -C {shlex.quote(str(d))}"
            else:
                cmd = f"{_cat_cmd(ref)} | tar {_TAR_I[ref.codec]}-xf - -C {shlex.quote(str(d))}"
            dt, rss, rc, err = run_measured(cmd)
            if rc:
                raise RuntimeError(f"tar -xf layer {i} failed: {err}")
            total += dt
            peak = max(peak, rss)
            per.append({"layer": ref.member or ref.path, "codec": ref.codec, "seconds": dt})
        written = _du(work)
        return Measurement("tar_xf_all_layers", total, peak, written, written / total / MB,
                           None, True, {"archive": str(archive), "layers": len(refs),
                                        "per_layer": per})
    finally:
        _rmtree(work)


# --------------------------------------------------------------------------------------------
# 6. ratarmount (ratarmountcore's SQLiteIndexedTar): index the layer, read one file
# --------------------------------------------------------------------------------------------

_RATAR_SCRIPT = r'''
import json, shutil, sys, time, logging
logging.disable(logging.WARNING)
t0 = time.perf_counter()
from ratarmountcore.mountsource.formats.tar import SQLiteIndexedTar
t1 = time.perf_counter()
layer, member, index, out = sys.argv[1:5]
import contextlib, io
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    src = SQLiteIndexedTar(layer, indexFilePath=index, writeIndex=True)
t2 = time.perf_counter()
info = src.lookup("/" + member.lstrip("/"))
if info is None:
    print(json.dumps({"found": False}))
    sys.exit(3)
with src.open(info) as f, open(out, "wb") as o:
    shutil.copyfileobj(f, o, 1 << 20)
t3 = time.perf_counter()
print(json.dumps({"found": True, "import_s": t1 - t0, "open_index_s": t2 - t1,
                  "read_s": t3 - t2}))
'''


def _ratar_once(layer: str, member: str, index: Path, out: Path) -> tuple[float, int, dict]:
    with open(out.with_suffix(".json"), "wb") as js:
        dt, rss, rc, err = run_measured([sys.executable, "-c", _RATAR_SCRIPT, layer, member,
                                         str(index), str(out)], stdout=js)
    if rc not in (0, 3):
        raise RuntimeError(f"ratarmount failed ({rc}): {err}")
    return dt, rss, json.loads(out.with_suffix(".json").read_text() or "{}")


def ratarmount(layer_tar: LayerLike, member: str, *, reuse_index: bool = True,
               tmpdir: str | os.PathLike | None = None) -> Measurement:
    """Index an (uncompressed) layer tar with ratarmountcore's SQLiteIndexedTar, look the
    member up and read it out, in a fresh Python subprocess. ``seconds`` and ``peak_rss_kib``
    cover the cold run (index build + read, including ~0.2 s of interpreter/import start-up,
    reported separately); with ``reuse_index`` a second subprocess opens the saved index and
    reads the member again (``detail['warm']``), which is ratarmount's per-lookup cost.

    A layer inside an archive is first copied out to scratch (untimed): ratarmount wants a
    file. Compressed layers work only if ratarmountcore's optional gzip/zstd backends are
    installed (they are not by default)."""
    ref = _as_ref(layer_tar)
    work = _scratch(tmpdir, "ratar")
    try:
        path = ref.path
        if ref.member is not None:
            path = str(work / "layer.tar")
            with _open_ref(ref) as f, open(path, "wb") as o:
                shutil.copyfileobj(f, o, CHUNK)
        index, out = work / "index.sqlite", work / "out.bin"
        dt, rss, info = _ratar_once(path, member, index, out)
        ok = bool(info.get("found"))
        res = Measurement("ratarmount", dt, rss, out.stat().st_size if ok else None, None,
                          sha256_file(out) if ok else None, ok,
                          {"layer": ref.path, "layer_member": ref.member, "member": member,
                           "index_bytes": index.stat().st_size if index.exists() else None,
                           **{k: v for k, v in info.items() if k != "found"}})
        if reuse_index and ok:
            out.unlink()
            dt2, rss2, info2 = _ratar_once(path, member, index, out)
            res.detail["warm"] = {"seconds": dt2, "peak_rss_kib": rss2, **info2}
        return res
    finally:
        _rmtree(work)


# --------------------------------------------------------------------------------------------
# Standalone: a default table over the corpus
# --------------------------------------------------------------------------------------------


def load_manifest(corpus: str | os.PathLike) -> dict:
    return json.loads((Path(corpus) / "MANIFEST.json").read_text())


def _image(m: dict, ref: str) -> dict:
    return next(i for i in m["images"] if i["ref"] == ref)


def default_suite(corpus: Path, only: set[str] | None = None) -> list[tuple[str, Measurement]]:
    m = load_manifest(corpus)
    C = lambda p: str(corpus / p)  # noqa: E731
    big = m["big"]
    big_img = _image(m, big["image"])
    many = m["many_files"]
    fleet = next(i for i in m["images"] if i["kind"] == "fleet" and len(i["archives"]) == 3)
    app_probe = next(p for p in fleet["probes"] if p["path"] == "/home/app/app")
    del_probe = next((p for p in fleet["probes"] if p["status"] == "deleted"), None)
    rows: list[tuple[str, Measurement]] = []

    def want(name: str) -> bool:
        return not only or name in only

    def add(label: str, meas: Measurement, expect: str | None = None) -> None:
        if expect is not None and meas.sha256 is not None and meas.sha256 != expect:
            meas.ok = False
            meas.detail["mismatch"] = True
        rows.append((label, meas))
        print(f"  {label}: {meas.seconds:.2f}s", file=sys.stderr, flush=True)

    if want("stream_decompress"):
        add("zstd stream of large file (python)",
            stream_decompress(C(big["large_file_zst"])))
        add("zstd stream of large file (zstd -dc)",
            stream_decompress(C(big["large_file_zst"]), cli=True))
        zl = archive_layers(C(big["archives"]["oci-zstd"]))[0]
        add("zstd stream of big layer (python)", stream_decompress(zl))
        gl = archive_layers(C(big["archives"]["oci-gzip"]))[0]
        add("gzip stream of big layer (isal)", stream_decompress(gl))
    if want("floor"):
        for form in ("docker", "oci-gzip", "oci-zstd"):
            add(f"floor big layer {form}",
                floor_hash_decompress(archive_layers(C(big["archives"][form]))))
        blobs = sorted((corpus / "fleet-layout" / "blobs" / "sha256").iterdir())
        layer_blobs = [b for b in blobs if b.stat().st_size > 4096
                       and detect_codec(b.open("rb").read(4)) != "none"]
        add(f"floor fleet-layout ({len(layer_blobs)} blobs, 1 proc)",
            floor_hash_decompress(layer_blobs))
        add(f"floor fleet-layout ({len(layer_blobs)} blobs, 2 procs)",
            floor_hash_decompress(layer_blobs, workers=2))
    if want("tar_xOf"):
        for key in ("start", "middle", "end", "large_file"):
            pr = big[key]
            add(f"tar -xOf big layer.tar {key}", tar_xOf(C(big["layer_file"]), pr["path"]),
                pr["sha256"])
            add(f"tar -xOf --occurrence=1 big layer.tar {key}",
                tar_xOf(C(big["layer_file"]), pr["path"], occurrence=True), pr["sha256"])
        for form in ("oci-gzip", "oci-zstd"):
            ref = archive_layers(C(big["archives"][form]))[0]
            for key in ("start", "end"):
                add(f"tar -xOf big {form} {key}", tar_xOf(ref, big[key]["path"]),
                    big[key]["sha256"])
        mp = many["probes"][-1]
        add("tar -xOf many-files layer.tar (last file)",
            tar_xOf(C(many["layer_file"]), mp["path"]), mp["sha256"])
    if want("blog_method"):
        for form in ("docker", "oci-gzip", "oci-zstd"):
            add(f"blog method {fleet['ref']} {form} /home/app/app",
                blog_method(C(fleet["archives"][form]["path"]), "/home/app/app"),
                app_probe["sha256"])
        if del_probe:
            r = blog_method(C(fleet["archives"]["docker"]["path"]), del_probe["path"])
            r.ok = not r.ok  # expected: not found
            add(f"blog method {fleet['ref']} docker deleted path", r)
        for form in ("docker", "oci-gzip", "oci-zstd"):
            add(f"blog method big {form} end marker",
                blog_method(C(big["archives"][form]), big["end"]["path"]),
                big["end"]["sha256"])
        mp = many["probes"][-1]
        add("blog method many-files docker", blog_method(C(many["archive"]), mp["path"]),
            mp["sha256"])
    if want("tar_xf_all_layers"):
        for form in ("docker", "oci-gzip", "oci-zstd"):
            add(f"tar -xf all layers {fleet['ref']} {form}",
                tar_xf_all_layers(C(fleet["archives"][form]["path"])))
        add("tar -xf all layers big docker", tar_xf_all_layers(C(big["archives"]["docker"])))
        add("tar -xf all layers many-files docker", tar_xf_all_layers(C(many["archive"])))
    if want("ratarmount"):
        for key in ("start", "end", "large_file"):
            add(f"ratarmount big layer.tar {key}",
                ratarmount(C(big["layer_file"]), big[key]["path"]), big[key]["sha256"])
        mp = many["probes"][-1]
        add("ratarmount many-files layer.tar", ratarmount(C(many["layer_file"]), mp["path"]),
            mp["sha256"])
    _ = big_img
    return rows


def _fmt_bytes(size: int | None) -> str:
    if size is None:
        return ""
    n = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return str(n)


def print_table(rows: list[tuple[str, Measurement]]) -> None:
    header = ("baseline", "seconds", "peak RSS", "output", "MB/s", "ok", "note")
    lines = []
    for label, r in rows:
        note = ""
        if r.name == "ratarmount":
            w = r.detail.get("warm", {})
            note = (f"index {r.detail.get('open_index_s', 0):.2f}s "
                    f"({_fmt_bytes(r.detail.get('index_bytes'))}), "
                    f"warm {w.get('seconds', 0):.2f}s/{_fmt_bytes((w.get('peak_rss_kib') or 0) * 1024)}")
        elif r.name == "floor_hash_decompress":
            note = f"in {r.detail['mb_s_in']:.0f} MB/s"
        elif r.name == "blog_method":
            note = f"scratch {_fmt_bytes(r.detail.get('scratch_bytes'))}"
        elif r.name == "tar_xf_all_layers":
            note = f"{r.detail['layers']} layers"
        lines.append((label, f"{r.seconds:.3f}",
                      _fmt_bytes(r.peak_rss_kib * 1024) if r.peak_rss_kib else "-",
                      _fmt_bytes(r.out_bytes), f"{r.mb_s:.0f}" if r.mb_s else "",
                      "yes" if r.ok else "NO", note))
    try:
        from rich.console import Console
        from rich.table import Table
        t = Table(*header)
        for ln in lines:
            t.add_row(*ln)
        Console(width=max(150, Console().width)).print(t)
    except ImportError:
        w = [max(len(str(x[i])) for x in [header, *lines]) for i in range(len(header))]
        for ln in [header, *lines]:
            print("  ".join(str(c).ljust(w[i]) for i, c in enumerate(ln)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="layerdb baselines over the benchmark corpus")
    ap.add_argument("--corpus", type=Path, default=Path(__file__).parent / "corpus")
    ap.add_argument("--only", nargs="*", choices=["stream_decompress", "floor", "tar_xOf",
                                                  "blog_method", "tar_xf_all_layers",
                                                  "ratarmount"])
    ap.add_argument("--json", type=Path, help="also write every measurement here")
    a = ap.parse_args(argv)
    rows = default_suite(a.corpus, set(a.only) if a.only else None)
    print_table(rows)
    if a.json:
        a.json.write_text(json.dumps([{"label": lbl, **r.to_dict()} for lbl, r in rows],
                                     indent=1))
    return 0 if all(r.ok for _, r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
