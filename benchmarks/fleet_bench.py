#!/usr/bin/env python3
"""The scale fleet: ingest and every report on a fleet of many-file images, with the peak
memory of the whole process tree (the ingest's workers included).

    python benchmarks/fleet_bench.py [--out benchmarks/out/fleet] [--files 1000000] [--jobs 2]

Generates (once; reused when present) five distinct layers of ``--files`` small files each
(~1 GB of tar at 1M files, under distinct directories), and an OCI layout of nine images:
five of one layer each, three of two layers (e.g. two 1M-file layers: ~2M merged rows), one
more single. With 1M files: 5.1 GB of tar, 5M members, ~12M merged rows.

Then, as processes: ``layerdb ingest -j JOBS`` of the layout into a fresh catalog, a no-op
re-ingest, and every report (``layerdb report NAME --format json``). For each: wall seconds
the peak of the summed RSS of the process and all its children, and their CPU seconds
(``baselines.run_session``: sampled every 20 ms).
Results go to stdout and ``OUT/fleet_bench.json``. Generated data stays under OUT (not in git).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import shutil
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import baselines as B  # noqa: E402
from corpus import _ustar  # noqa: E402 - the corpus's hand-rolled ustar header

CREATED = "2023-11-14T22:13:20Z"
IMAGES = [[0], [1], [2], [3], [4], [0, 1], [2, 3], [4, 0], [3]]
# reports whose parameters have no default: diff of two 2M-member images, a package lookup
REPORT_PARAMS = {"diff": {"a": "fleet/img5:1", "b": "fleet/img6:1"}, "package-where": {"name": "bash"}}


def write_layer(path: Path, files: int, seed: int) -> tuple[str, int]:
    """``files`` small files under ``d{seed}/``, 100 per directory; returns (diff_id, size)."""
    r = random.Random(seed)
    text = (b"lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor\n" * 64)
    sha = hashlib.sha256()
    n = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        buf = bytearray()
        buf += _ustar(b"d%d/" % seed, 0, b"5", 0o755)
        for i in range(files):
            if i % 100 == 0:
                buf += _ustar(b"d%d/%05d/" % (seed, i // 100), 0, b"5", 0o755)
            data = b"%d %d\n" % (seed, i) + text[: r.randrange(8, 600)]
            buf += _ustar(b"d%d/%05d/f%07d" % (seed, i // 100, i), len(data), b"0", 0o644)
            buf += data + bytes(-len(data) % 512)
            if len(buf) >= 4 << 20:
                sha.update(buf)
                f.write(buf)
                n += len(buf)
                buf = bytearray()
        buf += bytes(1024)
        buf += bytes(-(n + len(buf)) % 10240)
        sha.update(buf)
        f.write(buf)
        n += len(buf)
    os.replace(tmp, path)
    return "sha256:" + sha.hexdigest(), n


def _blob(layout: Path, data: bytes) -> dict:
    d = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / d).write_bytes(data)
    return {"digest": "sha256:" + d, "size": len(data)}


def build(out: Path, files: int) -> Path:
    layout = out / "layout"
    if (layout / "index.json").exists():
        return layout
    (layout / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
    layers = []
    for i in range(5):
        t0 = time.monotonic()
        tar = out / f"layer-{i}.tar"
        diff_id, size = write_layer(tar, files, i)
        dest = layout / "blobs" / "sha256" / diff_id[7:]
        if not dest.exists():
            os.link(tar, dest)
        layers.append({"mediaType": "application/vnd.oci.image.layer.v1.tar",
                       "digest": diff_id, "size": size})
        print(f"layer {i}: {size / 1e9:.2f} GB in {time.monotonic() - t0:.0f}s", flush=True)
    manifests = []
    for n, stack in enumerate(IMAGES):
        config = {"architecture": "amd64", "os": "linux", "created": CREATED,
                  "config": {"Cmd": ["/bin/sh", "-c", f"echo {n}"]},
                  "rootfs": {"type": "layers", "diff_ids": [layers[i]["digest"] for i in stack]},
                  "history": [{"created": CREATED, "created_by": f"ADD layer {i}"} for i in stack]}
        cfg = _blob(layout, json.dumps(config, sort_keys=True).encode())
        man = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cfg},
               "layers": [layers[i] for i in stack]}
        m = _blob(layout, json.dumps(man, sort_keys=True).encode())
        manifests.append({"mediaType": man["mediaType"], **m,
                          "annotations": {"org.opencontainers.image.ref.name": f"fleet/img{n}:1"}})
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    (layout / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": manifests}))
    return layout


def measure(cmd: list[str], env: dict[str, str]) -> dict:
    r = B.run_session(cmd, env)
    return {"seconds": round(r.seconds, 2), "peak_mb": round(r.peak_bytes / 1e6),
            "cpu": round(r.cpu, 2), "rc": r.rc, "stdout_bytes": r.stdout_bytes,
            "error": r.stderr.splitlines()[-1:] if r.rc else []}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=HERE / "out" / "fleet")
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--only", default="", help="comma-separated: ingest,reports")
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    layout = build(a.out, a.files)
    cat = a.out / "catalog"
    env = {**os.environ, "LAYERDB_HOME": str(cat)}
    layerdb = [sys.executable, "-m", "layerdb.cli"]
    results: dict[str, dict] = {}
    only = set(filter(None, a.only.split(",")))
    if not only or "ingest" in only:
        shutil.rmtree(cat, ignore_errors=True)
        results["ingest"] = measure([*layerdb, "ingest", "-q", "-j", str(a.jobs), str(layout)], env)
        print("ingest", results["ingest"], flush=True)
        results["re-ingest"] = measure([*layerdb, "ingest", "-q", str(layout)], env)
        print("re-ingest", results["re-ingest"], flush=True)
    if not only or "reports" in only:
        names = sorted(p.stem for p in (HERE.parent / "queries").glob("*.sql") if not p.stem.startswith("_"))
        for name in names:
            params = [x for k, v in REPORT_PARAMS.get(name, {}).items() for x in ("-p", k, v)]
            results[f"report {name}"] = r = measure([*layerdb, "report", name, *params, "--format", "json"],
                                                    env)
            print(f"report {name}", r, flush=True)
    (a.out / "fleet_bench.json").write_text(json.dumps(results, indent=1))
    print(f"{'what':40} {'seconds':>8} {'peak MB':>8}")
    for k, v in results.items():
        print(f"{k:40} {v['seconds']:8.2f} {v['peak_mb']:8d}{'  FAILED' if v['rc'] else ''}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
