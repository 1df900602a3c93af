#!/usr/bin/env python3
"""Ingest straight from a registry, beside what people do today, in the same run.

    python benchmarks/registry_bench.py            # ~64 MB image, 20 tags
    python benchmarks/registry_bench.py --mb 16    # smaller, quicker

A real registry (Debian's docker-registry) on 127.0.0.1 with a random port; an image of real
files of this machine (4 gzip layers) pushed with skopeo. Measured, each as a process:

1. ``layerdb ingest docker://...`` (``-j 2``), against ``skopeo copy docker://... oci:DIR``
   followed by ``layerdb ingest DIR``;
2. a re-scan of an unchanged repository with 20 tags (``--all-tags``): requests counted by
   a pass-through proxy in front of the registry, and seconds.

Results: a table on stdout and ``benchmarks/out/registry.json``. Loopback only.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "tests"))

import imagefactory as f  # noqa: E402
import registry_fixture as rf  # noqa: E402

MB = 1_000_000


def layerdb_cmd() -> list[str]:
    exe = shutil.which("layerdb")
    return [exe] if exe else [sys.executable, "-m", "layerdb.cli"]


def timed(cmd: list[str], env: dict[str, str] | None = None) -> float:
    t0 = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})})
    dt = time.perf_counter() - t0
    if out.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed: {out.stderr[-2000:]}")
    return dt


def real_files(limit: int) -> list[Path]:
    """Regular files of this machine, up to ``limit`` bytes, in a stable order."""
    out, total = [], 0
    for root in ("/usr/lib", "/usr/share", "/usr/bin"):
        for d, ds, fs in os.walk(root):
            ds.sort()
            for name in sorted(fs):
                p = Path(d) / name
                try:
                    if not p.is_file() or p.is_symlink() or not os.access(p, os.R_OK):
                        continue
                    size = p.stat().st_size
                except OSError:
                    continue
                if size > 8 * MB:
                    continue
                out.append(p)
                total += size
                if total >= limit:
                    return out
    return out


def build_layout(work: Path, mb: int) -> Path:
    files = real_files(mb * MB)
    quarter = max(1, len(files) // 4)
    layers = []
    for i in range(4):
        members = [f.file(str(p).lstrip("/"), p.read_bytes(), 0o644)
                   for p in files[i * quarter:(i + 1) * quarter if i < 3 else None]]
        dirs = sorted({str(Path(m[0].name).parent) for m in members})
        tar = f.tar_bytes([f.directory(d) for d in dirs] + members)
        layers.append(f.Layer(tar, "none"))
    layout = work / "layout"
    f.write_oci_layout(layout, [f.ImageSpec(layers, tags=["v1"])])
    # skopeo recompresses to gzip on the way to the registry (docker:// wants compressed layers)
    gz = work / "layout-gz"
    subprocess.run(["skopeo", "--insecure-policy", "copy", "-q", "--dest-compress-format", "gzip",
                    f"oci:{layout}:v1", f"oci:{gz}:v1"], check=True, capture_output=True)
    shutil.rmtree(layout)
    return gz


def tag_many(reg: rf.Registry, repo: str, count: int) -> None:
    """``count`` tags of one manifest: GET it once, PUT it under each tag."""
    accept = "application/vnd.oci.image.manifest.v1+json"
    req = urllib.request.Request(f"http://{reg.host}/v2/{repo}/manifests/t0", headers={"Accept": accept})
    with urllib.request.urlopen(req, timeout=30) as r:
        body, ctype = r.read(), r.headers["Content-Type"]
    for i in range(1, count):
        put = urllib.request.Request(f"http://{reg.host}/v2/{repo}/manifests/t{i}", data=body,
                                     method="PUT", headers={"Content-Type": ctype})
        urllib.request.urlopen(put, timeout=30).close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=int, default=64, help="image size in MB of real files")
    ap.add_argument("--tags", type=int, default=20)
    args = ap.parse_args()
    if not rf.have_registry():
        raise SystemExit("docker-registry and skopeo are needed (scripts/setup.sh installs them)")
    work = Path(tempfile.mkdtemp(prefix="layerdb-registry-bench-"))
    reg = rf.Registry(work / "reg")
    proxy = None
    rows = []
    try:
        layout = build_layout(work, args.mb)
        reg.push(f"oci:{layout}:v1", "bench/big:v1")
        size = sum(p.stat().st_size for p in (layout / "blobs" / "sha256").iterdir())
        small = work / "small"
        f.write_oci_layout(small, [f.sample_image(tags=["t0"])])
        reg.push(f"oci:{small}:t0", "bench/many:t0")
        tag_many(reg, "bench/many", args.tags)
        env = {"LAYERDB_CACHE_DIR": str(work / "cache")}
        ld = layerdb_cmd()

        # 1. registry ingest vs skopeo copy + ingest of the layout; twice each, alternating
        # (the machine is shared), the best of each kept
        t_reg, t_copy, t_ing = [], [], []
        for run in range(2):
            shutil.rmtree(work / "pulled", ignore_errors=True)
            t_copy.append(timed(["skopeo", "--insecure-policy", "copy", "-q", "--src-tls-verify=false",
                                 f"docker://{reg.host}/bench/big:v1", f"oci:{work / 'pulled'}:v1"]))
            t_ing.append(timed([*ld, "ingest", "-q", "-j", "2", "--catalog", str(work / f"c2-{run}"),
                                str(work / "pulled")], env))
            t_reg.append(timed([*ld, "ingest", "-q", "-j", "2", "--catalog", str(work / f"c1-{run}"),
                                "--tls-verify=false", f"docker://{reg.host}/bench/big:v1"],
                               {"LAYERDB_CACHE_DIR": str(work / f"cache-{run}")}))
        base = min(c + i for c, i in zip(t_copy, t_ing))
        rows.append({"what": f"ingest a {size / MB:.0f} MB image (4 gzip layers) from the registry",
                     "layerdb": min(t_reg), "baseline": base,
                     "baseline_what": f"skopeo copy {min(t_copy):.2f} s + ingest of the layout "
                                      f"{min(t_ing):.2f} s",
                     "ratio": base / min(t_reg)})

        # 2. re-scan of an unchanged repository with N tags
        proxy = rf.Proxy(reg.host)
        ref = f"docker://{proxy.host}/bench/many"
        cat = ["--catalog", str(work / "c3"), "--tls-verify=false", "--all-tags", ref]
        t_first = timed([*ld, "ingest", "-q", "-j", "2", *cat], env)
        n_first = len(proxy.requests)
        proxy.requests.clear()
        t_again = timed([*ld, "ingest", "-q", *cat], env)
        kinds: dict[str, int] = {}
        for _, p, _, _ in proxy.requests:
            k = ("tags/list" if "/tags/list" in p else "manifests" if "/manifests/" in p else
                 "blobs" if "/blobs/" in p else "ping" if p == "/v2/" else p)
            kinds[k] = kinds.get(k, 0) + 1
        rows.append({"what": f"first ingest of a repository with {args.tags} tags (--all-tags)",
                     "layerdb": t_first, "requests": n_first})
        rows.append({"what": f"re-scan of the unchanged repository ({args.tags} tags, --all-tags)",
                     "layerdb": t_again, "requests": len(proxy.requests), "by_kind": kinds})
    finally:
        if proxy is not None:
            proxy.stop()
        reg.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("| what | layerdb | baseline | ratio | requests |")
    print("|---|---|---|---|---|")
    for r in rows:
        base = f"{r['baseline']:.2f} s ({r['baseline_what']})" if "baseline" in r else ""
        ratio = f"{r['ratio']:.2f}x" if "ratio" in r else ""
        reqs = str(r.get("requests", "")) + (f" {r['by_kind']}" if "by_kind" in r else "")
        print(f"| {r['what']} | {r['layerdb']:.2f} s | {base} | {ratio} | {reqs} |")
    out = HERE / "out"
    out.mkdir(exist_ok=True)
    (out / "registry.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
