#!/usr/bin/env python3
"""Times ``layerdb slim`` on the 1 GiB-layer image, beside what a user would do by hand.

    python benchmarks/corpus.py                 # once: the corpus (benchmarks/corpus/)
    python benchmarks/slim_bench.py [--quick] [--repeat 3]

``bench/big:1.0`` runs ``Cmd ["/bin/true"]``, but its one layer holds only data: this script
gives it the program. ``bench/big-true:1.0`` is that image (its > 1 GiB layer, the corpus's own
``layers/big.tar`` hardlinked in as an uncompressed blob) with one more small layer: this
machine's ``/usr/bin/true``, the libraries ``ldd`` names for it and the Debian merged-/usr
symlinks (``/bin``, ``/lib``, ``/lib64/ld-linux-x86-64.so.2``). It is ingested once (untimed).
Then, as processes, the fastest of ``--repeat`` runs:

1. ``layerdb slim`` of its entrypoint, beside ``tar -xf`` of the big layer (the first step of
   doing it by hand: unpack, then copy out what the program needs);
2. ``layerdb slim --keep /data/large/large-file.bin`` (the 288 MiB file: the cache read
   dominates, and only kept bytes are read), beside ``zstd -dc`` of the same bytes.

Rows go to stdout and to ``benchmarks/out/slim_bench.json`` / ``.md``.
"""
from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import baselines as B  # noqa: E402
import run as R  # noqa: E402

REF = "bench/big-true:1.0"
EPOCH = 1700000000
PATH_ENV = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
TRIPLET = "x86_64-linux-gnu"


def _json(doc: object) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _true_layer() -> bytes:
    """A tar of /usr/bin/true, its libraries (under /usr/lib/TRIPLET) and the merged-/usr links."""
    libs = []
    for line in subprocess.run(["ldd", "/usr/bin/true"], capture_output=True, text=True,
                               check=True).stdout.splitlines():
        libs += [Path(w) for w in line.split() if w.startswith("/")]
    buf = io.BytesIO()

    def info(name: str, kind: bytes, mode: int, size: int = 0, link: str = "") -> tarfile.TarInfo:
        ti = tarfile.TarInfo(name)
        ti.type, ti.mode, ti.size, ti.mtime, ti.linkname = kind, mode, size, EPOCH, link
        return ti

    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for d in ("usr", "usr/bin", "usr/lib", f"usr/lib/{TRIPLET}", "lib64"):
            tf.addfile(info(d, tarfile.DIRTYPE, 0o755))
        for name, target in (("bin", "usr/bin"), ("lib", "usr/lib"),
                             ("lib64/ld-linux-x86-64.so.2", f"/lib/{TRIPLET}/ld-linux-x86-64.so.2")):
            tf.addfile(info(name, tarfile.SYMTYPE, 0o777, link=target))
        files = [("usr/bin/true", Path("/usr/bin/true"))]
        files += [(f"usr/lib/{TRIPLET}/{p.name}", Path(f"/usr/lib/{TRIPLET}") / p.name) for p in libs]
        for name, src in sorted(set(files)):
            data = src.resolve().read_bytes()
            tf.addfile(info(name, tarfile.REGTYPE, 0o755, len(data)), io.BytesIO(data))
    return buf.getvalue()


def build_layout(m: dict, corpus: Path, layout: Path) -> None:
    """``bench/big-true:1.0`` as an OCI layout (the big layer hardlinked from the corpus)."""
    if (layout / "index.json").exists():
        return
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    big = m["big"]
    big_tar = corpus / big["layer_file"]
    dest = blobs / big["diff_id"][7:]
    try:
        os.link(big_tar, dest)
    except OSError:
        shutil.copyfile(big_tar, dest)
    top = _true_layer()
    top_blob = gzip.compress(top, mtime=0)
    (blobs / _sha(top_blob)[7:]).write_bytes(top_blob)
    config = _json({
        "architecture": "amd64", "os": "linux", "created": "2023-11-14T22:13:20Z",
        "config": {"Env": [PATH_ENV], "Cmd": ["/bin/true"], "WorkingDir": "/"},
        "rootfs": {"type": "layers", "diff_ids": [big["diff_id"], _sha(top)]},
        "history": [{"created_by": "COPY big-data/ /"}, {"created_by": "COPY true /"}]})
    (blobs / _sha(config)[7:]).write_bytes(config)
    manifest = _json({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": _sha(config),
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": big["diff_id"],
                    "size": big_tar.stat().st_size},
                   {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": _sha(top_blob), "size": len(top_blob)}]})
    (blobs / _sha(manifest)[7:]).write_bytes(manifest)
    (layout / "index.json").write_bytes(_json({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": _sha(manifest),
            "size": len(manifest), "annotations": {"io.containerd.image.name": REF,
                                                   "org.opencontainers.image.ref.name": "1.0"}}]}))
    (layout / "oci-layout").write_bytes(_json({"imageLayoutVersion": "1.0.0"}))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=HERE / "corpus")
    ap.add_argument("--quick", action="store_true", help="the tiny corpus (smoke run)")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timed command (min kept)")
    a = ap.parse_args(argv)
    corpus = a.corpus if not a.quick else HERE / "corpus-quick"
    if not (corpus / "MANIFEST.json").exists():
        cmd = [sys.executable, str(HERE / "corpus.py"), "--out", str(corpus)]
        subprocess.run(cmd + (["--quick"] if a.quick else []), check=True)
    m = B.load_manifest(corpus)
    work = R.OUT / ("slim-bench-quick" if a.quick else "slim-bench")
    layout, cat = work / "layout", work / "catalog"
    build_layout(m, corpus, layout)
    if not (cat / "catalog.duckdb").exists():
        R.must(R.layerdb("ingest", "-q", str(layout), catalog=cat), "ingest bench/big-true")
    t = R.Table()
    started = time.time()
    with tempfile.TemporaryDirectory(dir=work) as tmp:
        out = Path(tmp) / "slim.tar"
        def slim(*extra: str) -> tuple[float, int, int, str]:
            out.unlink(missing_ok=True)  # not --force: freeing the last output is not slim's work
            return R.layerdb("slim", "--image", REF, "-o", str(out), *extra, catalog=cat)

        dt, rss = R.must(R.best(a.repeat, slim), "slim")
        size = out.stat().st_size
        unpack = Path(tmp) / "unpacked"

        def tar_xf() -> tuple[float, int, int, str]:
            shutil.rmtree(unpack, ignore_errors=True)
            unpack.mkdir()
            return B.run_measured(["tar", "-xf", str(corpus / m["big"]["layer_file"]), "-C", str(unpack)])

        base_s, _ = R.must(R.best(a.repeat, tar_xf), "tar -xf")
        shutil.rmtree(unpack, ignore_errors=True)
        t.add("slim", f"slim {REF} entrypoint (/bin/true + libc)", dt, "tar -xf big layer", base_s,
              note=f"peak {rss // 1024} MB; {size / 1e6:.1f} MB oci-archive out of a "
                   f"{m['big']['layer_size'] / 1e9:.2f} GB layer")
        large = m["big"]["large_file"]["path"]
        dt2, rss2 = R.must(R.best(a.repeat, lambda: slim("--keep", "/" + large.lstrip("/"),
                                                         "--compression", "none")),
                           "slim --keep large file")
        zst = corpus / m["big"]["large_file_zst"]
        base2, _ = R.must(R.best(a.repeat, lambda: B.run_measured(f"zstd -dc {zst} > /dev/null")),
                          "zstd -dc")
        t.add("slim", f"slim {REF} + --keep the {m['big']['large_file']['size'] >> 20} MiB file "
              "(--compression none)", dt2, "zstd -dc same bytes", base2,
              note=f"peak {rss2 // 1024} MB; the bytes are read once, hashed twice (checked "
                   "against the catalog, and the new diff_id) and written twice (the layer, "
                   "then the archive)")
    R.OUT.mkdir(parents=True, exist_ok=True)
    meta = {"date": time.strftime("%Y-%m-%d"), "seconds": round(time.time() - started, 1),
            "quick": a.quick}
    (R.OUT / "slim_bench.json").write_text(json.dumps({"meta": meta, "rows": t.rows}, indent=1))
    (R.OUT / "slim_bench.md").write_text(t.markdown() + "\n")
    print(t.markdown())
    return 0


if __name__ == "__main__":
    sys.exit(main())
