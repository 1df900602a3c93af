#!/usr/bin/env python3
"""Many small files at tar speed (issue 14): layerdb's layer read beside ``tar -tvf``, one run.

    python benchmarks/smallfiles.py                       # 1,000,000 files; builds the layer if missing
    python benchmarks/smallfiles.py --files 100000        # a smaller layer
    python benchmarks/smallfiles.py --baseline-src /work/main/src   # also measure another tree (before/after)
    python benchmarks/smallfiles.py --same-rows OLD_TARINDEX.py     # prove both indexers give the same rows

The layer is generated (never committed) under ``--out`` (default ``benchmarks/out/smallfiles``):
``layer.tar``, 1,000,000 regular files of 8-20 bytes in 10,101 directories (1,010,101 members,
~1.03 GB), its gzip (``layer.tar.gz``), a second layer of other files (``layer2.tar``), and
OCI layouts that hard-link those blobs for ``layerdb ingest``: ``oci-plain`` and ``oci-gzip``
(one image), ``oci-two`` (two images, one layer each). Measured, each as a whole process with GNU
time (wall seconds, peak RSS of the process tree), page cache warm, best of ``--runs``:

* ``tar -tvf layer.tar`` and ``tar -tzvf layer.tar.gz`` (the baselines);
* ``ingest.read_layer`` of each blob (verify, store, index, write Parquet: the layer read);
* ``layerdb ingest -j 1`` of each layout into a fresh catalog (the whole ingest);
* ``layerdb ingest -j 1`` and ``-j 2`` of ``oci-two`` (scaling with cores; its ratio column is
  against ``-j 1``), sampled over the whole process session (``baselines.run_session``), as
  ``-j 2``'s pool workers are children of a forkserver that nobody waits for.

Each row also has the CPU seconds (user + system, every thread) and the cores used on average
(CPU / wall), and the script prints the floor for ``-j 2`` on this machine: at least
``cpu(-j 1) / min(2, cores)`` seconds, as ``-j 2`` runs the same work on at most that many cores.

Ratios against the baseline of the same run are what count; the machine is shared and noisy
(its page cache is dropped now and then, so a run may start cold). Best of 3, 2026-12-03
(2 cores, a slow phase of the machine: ``tar -tvf`` took 3.1 s where a quiet run takes 2.5 s),
baseline = main at d82131a, before the hot path read whole buffers:

| layer | what | baseline | this tree |
|---|---|---:|---:|
| plain | read_layer | 8.80 s, 231 MB (2.85x tar) | 5.79 s, 217 MB (1.88x) |
| plain | ingest -j 1 | 10.66 s, 397 MB (3.46x) | 8.84 s, 354 MB (2.87x) |
| gzip | read_layer | 7.90 s (1.40x tar -tzvf) | 5.46 s (0.97x) |
| gzip | ingest -j 1 | 11.00 s, 405 MB (1.96x) | 6.57 s, 361 MB (1.17x) |
| two images | ingest -j 1 | 25.60 s | 12.56 s |
| two images | ingest -j 2 | 16.21 s | 13.03 s |

In a quieter run the same day, ``ingest -j 1`` of the plain layer took 6.09 s against 2.95 s
for ``tar -tvf`` (2.06x; baseline 10.82 s, 3.67x) and of the gzip layer 7.16 s against 4.18 s
(1.71x). Interleaved pairs (``farm-bench``): in the machine's fast phase (``tar -tvf`` 1.63 s)
``ingest -j 1`` took 3.82 s (2.36x; the baseline 5.98 s, 3.69x), 0.63x the baseline's wall
time and 0.76x its CPU time (5.7 s against 7.5 s of user + system), peak 357 MB against 408 MB;
in a slow phase 2.69x ``tar -tvf`` and 0.76x the baseline. ``-j 2`` of the two images takes
0.84-0.91x of ``-j 1``.

Best of 3, a later run on 2026-12-03 (this tree, unchanged since the pairs above; ``tar -tvf`` took
4.07 s, as when issue 14 was measured):

| layer | what | seconds | CPU s | cores | peak RSS MB | x tar |
|---|---|---:|---:|---:|---:|---:|
| plain | tar -tvf | 4.07 | 4.06 | 1.00 | 3 | 1.00 |
| plain | read_layer | 4.65 | 6.97 | 1.50 | 221 | 1.14 |
| plain | ingest -j 1 | 5.83 | 8.73 | 1.50 | 348 | 1.43 |
| gzip | tar -tzvf | 4.42 | 7.88 | 1.78 | 3 | 1.00 |
| gzip | ingest -j 1 | 6.00 | 8.97 | 1.50 | 368 | 1.36 |
| two images | ingest -j 1 | 10.95 | 15.81 | 1.44 | 420 | 1.00 |
| two images | ingest -j 2 | 9.50 | 16.05 | 1.69 | 515 (all processes) | 0.87 |

``-j 2`` did no more work than ``-j 1`` (16.05 against 15.81 CPU seconds) and its floor on 2
cores was 15.81 / 2 = 7.91 s, 0.72x of ``-j 1``.

``ingest -j 1`` runs on about 1.4 cores (the blob is read, decompressed and hashed on one
thread, the Parquet and layer index written on another, store frames compressed on a third),
so on 2 cores ``-j 2`` can add little to it: what it costs in CPU a member is what has to fall,
and it fell by about a quarter.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

import baselines as B  # noqa: E402
from corpus import _ustar as _header  # noqa: E402 - the corpus's hand-rolled ustar header

TEXT = (b"the quick brown fox jumps over the lazy dog 0123456789 " * 4)


def build_layer(path: Path, files: int, top: bytes = b"data") -> dict:
    """``files`` regular files of 8-20 bytes, 100 to a directory, two directory levels:
    ``TOP/NN/MM/fNNNNNNN`` (1,000,000 files: 10,101 directories). Streams to disk."""
    top_dir = top
    per_dir = 100
    leaf_dirs = max(1, -(-files // per_dir))
    tmp = path.with_suffix(".tmp")
    sha = hashlib.sha256()
    members = 0
    with open(tmp, "wb") as f:
        buf = bytearray()
        buf += _header(top + b"/", 0, b"5", 0o755)
        members += 1
        n = 0
        for d in range(leaf_dirs):
            top, sub = divmod(d, 100)
            if sub == 0:
                buf += _header(b"%s/%02d/" % (top_dir, top), 0, b"5", 0o755)
                members += 1
            dname = b"%s/%02d/%02d/" % (top_dir, top, sub)
            buf += _header(dname, 0, b"5", 0o755)
            members += 1
            for _ in range(min(per_dir, files - n)):
                data = b"%07d " % n + TEXT[: n % 13]  # 8-20 bytes
                buf += _header(dname + b"f%07d" % n, len(data), b"0", 0o644)
                buf += data
                buf += bytes(-len(data) % 512)
                members += 1
                n += 1
            if len(buf) >= 1 << 22:
                sha.update(buf)
                f.write(buf)
                buf = bytearray()
        buf += bytes(1024)
        buf += bytes(-(os.fstat(f.fileno()).st_size + len(buf)) % 10240)
        sha.update(buf)
        f.write(buf)
    os.replace(tmp, path)
    return {"diff_id": "sha256:" + sha.hexdigest(), "members": members, "files": files,
            "size": path.stat().st_size}


def gzip_file(src: Path, dst: Path) -> None:
    from isal import isal_zlib

    tmp = dst.with_suffix(".tmp")
    with open(src, "rb") as fi, open(tmp, "wb") as fo:
        c = isal_zlib.compressobj(3, isal_zlib.DEFLATED, 31)
        while b := fi.read(1 << 22):
            fo.write(c.compress(b))
        fo.write(c.flush())
    os.replace(tmp, dst)


def _put(blobs: Path, data: bytes) -> dict:
    d = hashlib.sha256(data).hexdigest()
    (blobs / d).write_bytes(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def oci_layout(dest: Path, blob: Path, diff_id: str, media_type: str,
               more: tuple[tuple[Path, str], ...] = ()) -> None:
    """An OCI layout of one-layer images whose layer blobs are hard links: ``blob``
    (``bench/smallfiles:1.0``), then each (blob, diff_id) of ``more`` (``:2.0``, ...)."""
    if dest.exists():
        shutil.rmtree(dest)
    blobs = dest / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    manifests = []
    for n, (b, d) in enumerate(((blob, diff_id), *more), 1):
        digest = B.sha256_file(b)
        os.link(b, blobs / digest)
        cfg = {"architecture": "amd64", "os": "linux", "config": {"Cmd": ["/bin/sh"]},
               "rootfs": {"type": "layers", "diff_ids": [d]},
               "history": [{"created_by": "generate small files"}]}
        c = _put(blobs, json.dumps(cfg).encode())
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **c},
               "layers": [{"mediaType": media_type, "digest": "sha256:" + digest,
                           "size": b.stat().st_size}]}
        m = _put(blobs, json.dumps(man).encode())
        manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **m,
                          "annotations": {"org.opencontainers.image.ref.name": f"bench/smallfiles:{n}.0"}})
    idx = {"schemaVersion": 2, "manifests": manifests}
    (dest / "index.json").write_text(json.dumps(idx))
    (dest / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')


def corpus(out: Path, files: int) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    meta_p = out / "meta.json"
    if meta_p.exists():
        meta = json.loads(meta_p.read_text())
        if meta.get("files") == files and (out / "oci-two").exists():
            return meta
    t = time.perf_counter()
    meta = build_layer(out / "layer.tar", files)
    meta["second_diff_id"] = build_layer(out / "layer2.tar", files, b"more")["diff_id"]
    gzip_file(out / "layer.tar", out / "layer.tar.gz")
    oci_layout(out / "oci-plain", out / "layer.tar", meta["diff_id"],
               "application/vnd.oci.image.layer.v1.tar")
    oci_layout(out / "oci-gzip", out / "layer.tar.gz", meta["diff_id"],
               "application/vnd.oci.image.layer.v1.tar+gzip")
    oci_layout(out / "oci-two", out / "layer.tar", meta["diff_id"],
               "application/vnd.oci.image.layer.v1.tar",
               more=((out / "layer2.tar", meta["second_diff_id"]),))
    meta_p.write_text(json.dumps(meta))
    print(f"built {meta['members']:,} members, {meta['size'] / 1e9:.2f} GB in "
          f"{time.perf_counter() - t:.0f} s", file=sys.stderr)
    return meta


READ_LAYER = """
import sys, tempfile
from layerdb.digest import Digest
from layerdb.ingest import LayerJob, read_layer
try:
    from layerdb.sources import FileSegment
except ImportError:  # a tree from before it moved
    from layerdb.model import FileSegment
blob, diff_id, media_type, staging = sys.argv[1:5]
job = LayerJob(blob=FileSegment(blob), diff_id=Digest.parse(diff_id), digest=None,
               media_type=media_type, staging=staging, source=blob, what="layer")
r = read_layer(job)
print(r.member_count, r.parquet_tmp)
"""


def _load_old(path: str):  # noqa: ANN202
    """Another tarindex.py, loaded as a module of the layerdb package on the path."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("layerdb._tarindex_other", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    mod.__package__ = "layerdb"
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def index_to_parquet(mod, tar: Path, out: Path) -> None:  # noqa: ANN001
    import pyarrow.parquet as pq

    with open(tar, "rb") as f, pq.ParquetWriter(out, mod.SCHEMA, compression="zstd") as w:
        for b in mod.index_layer(f, "sha256:" + "0" * 64):
            w.write_batch(b)


def compare_parquet(old: Path, new: Path) -> list[str]:
    """The differences between two files Parquet (the new one may add columns)."""
    import pyarrow.parquet as pq

    a, b = pq.read_table(old), pq.read_table(new)
    if a.num_rows != b.num_rows:
        return [f"rows: {a.num_rows} vs {b.num_rows}"]
    out = []
    for name in a.column_names:
        ca, cb = a.column(name), b.column(name).cast(a.schema.field(name).type)
        if not ca.equals(cb):
            import pyarrow.compute as pc

            ne = pc.invert(pc.fill_null(pc.equal(ca, cb), False)) if name != "xattrs" else None
            first = pc.index(ne, True).as_py() if ne is not None else "?"
            out.append(f"column {name}: first differing row {first}")
    return out


def same_rows(old_py: str, src: str, tars: list[Path]) -> int:
    """Index each tar with ``old_py`` and with the tree's tarindex; 1 if any rows differ."""
    sys.path.insert(0, src)
    import layerdb.tarindex as new

    old = _load_old(old_py)
    bad = 0
    with tempfile.TemporaryDirectory() as d:
        for tar in tars:
            a, b = Path(d) / "old.parquet", Path(d) / "new.parquet"
            index_to_parquet(old, tar, a)
            index_to_parquet(new, tar, b)
            diffs = compare_parquet(a, b)
            print(f"{tar}: {'same rows' if not diffs else '; '.join(diffs)}")
            bad |= bool(diffs)
    return bad


def measure(cmd, runs: int, env=None) -> tuple[float, int, float]:  # noqa: ANN001
    """The best of ``runs``: (wall seconds, peak RSS KiB, CPU seconds of the process tree)."""
    best = None
    for _ in range(runs):
        dt, rss, rc, err, cpu = B.run_measured_cpu(cmd, env=env)
        if rc:
            raise SystemExit(f"{cmd}: failed ({rc}): {err.strip()}")
        if best is None or dt < best[0]:
            best = (dt, rss, cpu)
    assert best is not None
    return best


def layerdb_env(src: str) -> dict:
    return {**os.environ, "PYTHONPATH": src + os.pathsep + os.environ.get("PYTHONPATH", "")}


def bench(out: Path, meta: dict, srcs: dict[str, str], runs: int) -> list[tuple]:
    rows = []
    scratch = Path(tempfile.mkdtemp(prefix="smallfiles-", dir=out))
    try:
        for codec, blob, layout, tar_cmd in (
                ("plain", out / "layer.tar", out / "oci-plain", f"tar -tvf {out / 'layer.tar'} >/dev/null"),
                ("gzip", out / "layer.tar.gz", out / "oci-gzip",
                 f"tar -tzvf {out / 'layer.tar.gz'} >/dev/null")):
            mt = "application/vnd.oci.image.layer.v1.tar" + ("+gzip" if codec == "gzip" else "")
            base = measure(tar_cmd, runs)
            rows.append((codec, "tar -t" + ("z" if codec == "gzip" else "") + "vf", None, *base, 1.0))
            for label, src in srcs.items():
                env = layerdb_env(src)
                staging = scratch / f"stage-{label}"

                def read(staging=staging, env=env, mt=mt, blob=blob):  # noqa: ANN001, ANN202
                    shutil.rmtree(staging, ignore_errors=True)
                    staging.mkdir()
                    return measure([sys.executable, "-c", READ_LAYER, str(blob), meta["diff_id"], mt,
                                    str(staging)], runs, env)
                r = read()
                rows.append((codec, "read_layer", label, *r, r[0] / base[0]))
                shutil.rmtree(staging, ignore_errors=True)
                cat = scratch / f"catalog-{label}"
                best = None
                for _ in range(runs):
                    shutil.rmtree(cat, ignore_errors=True)
                    res = measure([sys.executable, "-m", "layerdb.cli", "ingest", "--catalog", str(cat),
                                   "-j", "1", str(layout)], 1, env)
                    best = res if best is None or res[0] < best[0] else best
                assert best is not None
                rows.append((codec, "ingest -j 1", label, *best, best[0] / base[0]))
                shutil.rmtree(cat, ignore_errors=True)
        # two images of disjoint 1M-file layers: -j 2 against -j 1 (the "x tar" column is
        # the ratio to -j 1 of the same tree here)
        for label, src in srcs.items():
            env = layerdb_env(src)
            cat = scratch / f"catalog2-{label}"
            got = {}
            for jobs in (1, 2):
                best = None
                for _ in range(runs):
                    shutil.rmtree(cat, ignore_errors=True)
                    B.settle()
                    # sampled over the whole session: -j 2's pool workers are nobody's
                    # waited-for children, so rusage and GNU time miss them
                    r = B.run_session([sys.executable, "-m", "layerdb.cli", "ingest", "--catalog",
                                       str(cat), "-j", str(jobs), str(out / "oci-two")], env)
                    if r.rc:
                        raise SystemExit(f"ingest -j {jobs}: failed ({r.rc}): {r.stderr}")
                    res = (r.seconds, r.peak_bytes // 1024, r.cpu)
                    best = res if best is None or res[0] < best[0] else best
                assert best is not None
                got[jobs] = best
                rows.append(("two images", f"ingest -j {jobs}", label, *best, best[0] / got[1][0]))
                shutil.rmtree(cat, ignore_errors=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return rows


def print_rows(rows: list[tuple], meta: dict) -> None:
    print(f"\n{meta['members']:,} members ({meta['files']:,} files), {meta['size'] / 1e9:.2f} GB of tar\n")
    print("| layer | what | tree | seconds | CPU s | cores | peak RSS MB | x tar |")
    print("|---|---|---|---:|---:|---:|---:|---:|")
    for codec, what, label, dt, rss, cpu, ratio in rows:
        print(f"| {codec} | {what} | {label or ''} | {dt:.2f} | {cpu:.2f} | {cpu / dt:.2f} | "
              f"{rss / 1024:.0f} | {ratio:.2f} |")
    cores = os.cpu_count() or 1
    for codec, what, label, dt, _rss, cpu, _ratio in rows:
        if codec == "two images" and what == "ingest -j 1":
            # -j 1 already keeps several threads busy; -j 2 adds no work but cannot run it on
            # more than min(2, cores) cores, so it takes at least cpu / min(2, cores) seconds
            floor = cpu / min(2, cores)
            print(f"\n{label}: ingest -j 1 of the two images ran on {cpu / dt:.2f} cores on average; "
                  f"on {cores} core(s) -j 2 cannot take less than {cpu:.2f} / {min(2, cores)} = "
                  f"{floor:.2f} s, {floor / dt:.2f}x of -j 1")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "smallfiles")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--runs", type=int, default=2, help="best of N runs of each measurement")
    ap.add_argument("--src", default=str(ROOT / "src"), help="the layerdb tree to measure")
    ap.add_argument("--baseline-src", help="another layerdb tree to measure in the same run")
    ap.add_argument("--same-rows", metavar="OLD_TARINDEX_PY",
                    help="compare this tarindex module's rows with the tree's on the layer, then exit")
    ap.add_argument("--build-only", action="store_true")
    ap.add_argument("tars", nargs="*", type=Path, help="with --same-rows: more tars to compare on")
    a = ap.parse_args()
    meta = corpus(a.out, a.files)
    if a.build_only:
        return
    if a.same_rows:
        sys.exit(same_rows(a.same_rows, a.src, [a.out / "layer.tar", *a.tars]))
    srcs = {"this": a.src}
    if a.baseline_src:
        srcs = {"baseline": a.baseline_src, **srcs}
    print_rows(bench(a.out, meta, srcs, a.runs), meta)


if __name__ == "__main__":
    main()
