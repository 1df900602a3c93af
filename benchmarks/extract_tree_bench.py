#!/usr/bin/env python3
"""Whole-tree extract (issue 9): ``layerdb extract --path / -o DIR`` of a real Debian base,
beside ``tar -xf`` of the image's layer and ``umoci raw unpack`` of the same image, in one run.

    debootstrap --variant=minbase bookworm /tmp/debroot http://deb.debian.org/debian
    python benchmarks/extract_tree_bench.py --rootfs /tmp/debroot [--layers 2] [--runs 3]

Any directory works as ``--rootfs`` (e.g. a copy of the host's /usr). It is packed with
``tar -cf`` into ``--layers`` gzip layers (split by top-level directory, so every layer is a real
tar of real files), written as an OCI layout (tests/imagefactory.py) and ingested into a fresh
catalog. Then each tool unpacks the whole image into a fresh directory, best of ``--runs``,
page cache warm, dirty pages flushed before each timed run. Generated data lives in
``benchmarks/out/extract-tree/`` (git-ignored). Prints a table and writes ``results.json`` there.

The target (issue 9): layerdb within 1.5x of ``tar -xf`` of the image's uncompressed layers.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import baselines as B  # noqa: E402

OUT = HERE / "out" / "extract-tree"


def _layer_tars(rootfs: Path, work: Path, n: int) -> list[Path]:
    """``n`` uncompressed layer tars of ``rootfs``: the top-level entries dealt round-robin by
    size, so the layers are of similar size (layer 0 also gets ``.`` itself)."""
    tops = sorted(os.listdir(rootfs))
    sizes = {t: int(subprocess.run(["du", "-sb", str(rootfs / t)], capture_output=True,
                                   text=True).stdout.split()[0] or 0) for t in tops}
    groups: list[list[str]] = [[] for _ in range(n)]
    load = [0] * n
    for t in sorted(tops, key=lambda t: -sizes[t]):
        i = load.index(min(load))
        groups[i].append(t)
        load[i] += sizes[t]
    out = []
    for i, g in enumerate(groups):
        p = work / f"layer{i}.tar"
        if not p.exists():
            subprocess.run(["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(p),
                            *(["."] if i == 0 and not g else []),
                            *sorted("./" + x for x in g)], check=True)
        out.append(p)
    return out


def _build(rootfs: Path, n: int) -> tuple[list[Path], Path, Path]:
    import imagefactory as f

    work = OUT / f"{rootfs.name}-{n}"
    work.mkdir(parents=True, exist_ok=True)
    tars = _layer_tars(rootfs, work, n)
    layout = work / "layout"
    if not layout.exists():
        layers = [f.Layer(p.read_bytes(), "gzip") for p in tars]
        f.write_oci_layout(layout, [f.ImageSpec(layers, tags=("bench",))])
    catalog = work / "catalog"
    if not catalog.exists():
        subprocess.run([sys.executable, "-m", "layerdb.cli", "ingest", "-q", "--catalog",
                        str(catalog), str(layout)], check=True)
    return tars, layout, catalog


def _once(make_cmd, target: Path) -> tuple[float, int, float]:  # noqa: ANN001
    """One timed run into a fresh ``target``: (wall seconds, peak RSS KiB, CPU seconds).
    ``make_cmd()`` gives the command, or (command, extra environment)."""
    if target.exists():
        shutil.rmtree(target)
    cmd = make_cmd()
    env = None
    if isinstance(cmd, tuple):
        cmd, extra = cmd
        env = {**os.environ, **extra}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    dt, rss, rc, err = B.run_measured(cmd, env=env)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if rc:
        raise SystemExit(f"{cmd} failed ({rc}): {err.strip()}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return dt, rss, cpu


def _best_interleaved(runs: int, tools: dict, target: Path) -> dict[str, tuple[float, int, float]]:
    """Each tool ``runs`` times, round-robin (a shared machine's load hits all of them alike);
    the fastest run of each."""
    best: dict[str, tuple[float, int, float]] = {}
    for _ in range(runs):
        for name, make_cmd in tools.items():
            r = _once(make_cmd, target)
            if name not in best or r[0] < best[name][0]:
                best[name] = r
    return best


def measure(rootfs: Path, layers: int = 1, runs: int = 3, dest: Path | None = None,
            before: str | None = None) -> tuple[dict[str, tuple[float, int, float]], list[Path]]:
    """Build (once) and unpack the image of ``rootfs`` with each tool, interleaved; return
    {tool: (best seconds, its peak RSS KiB, its CPU seconds)} and the layer tars.
    ``benchmarks/run.py --only tree`` calls this."""
    tars, layout, catalog = _build(rootfs, layers)
    dest = dest or Path(tempfile.gettempdir()) / "layerdb-extract-tree"
    exe = shutil.which("layerdb")
    layerdb = [exe] if exe else [sys.executable, "-m", "layerdb.cli"]
    tools = {
        "layerdb extract --path / -o DIR": lambda: [
            *layerdb, "extract", "-q", "--catalog", str(catalog), "--image", "bench", "--path",
            "/", "-o", str(dest)],
        "tar -xf each layer": lambda: f"mkdir -p {dest} && " + " && ".join(
            f"tar -xf {t} -C {dest}" for t in tars),
    }
    if before:
        tools["layerdb before (--before)"] = lambda: (
            [sys.executable, "-m", "layerdb.cli", "extract", "--catalog", str(catalog), "--image",
             "bench", "--path", "/", "-o", str(dest)], {"PYTHONPATH": str(Path(before).resolve())})
    if shutil.which("umoci"):
        tools["umoci raw unpack"] = lambda: [
            "umoci", "raw", "unpack", "--rootless", "--image", f"{layout}:bench", str(dest)]
    rows = _best_interleaved(runs, tools, dest)
    if dest.exists():
        shutil.rmtree(dest)
    return rows, tars


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rootfs", default="/tmp/debroot", help="directory to pack as the image")
    ap.add_argument("--layers", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--before", metavar="SRC", default=None,
                    help="also time layerdb from this src/ directory (e.g. `git archive` of an "
                         "older commit), in the same run: the before/after row")
    ap.add_argument("--dest", default=os.path.join(tempfile.gettempdir(), "layerdb-extract-tree"),
                    help="where each tool unpacks (one filesystem for all; default: under $TMPDIR)")
    a = ap.parse_args(argv)
    rootfs = Path(a.rootfs)
    if not rootfs.is_dir():
        raise SystemExit(f"{rootfs}: not a directory (see --help for how to make a Debian base)")
    rows, tars = measure(rootfs, a.layers, a.runs, Path(a.dest), a.before)
    size = sum(p.stat().st_size for p in tars)
    files = int(subprocess.run(f"tar -tf {tars[0]} | wc -l", shell=True, capture_output=True,
                               text=True).stdout) if len(tars) == 1 else None
    base = rows["tar -xf each layer"][0]
    base = rows["tar -xf each layer"][0]
    print(f"image: {rootfs} in {len(tars)} layer(s), {size / 1e6:.1f} MB of tar"
          + (f", {files} members" if files else ""))
    print(f"{'what':36} {'seconds':>8} {'vs tar -xf':>10} {'CPU s':>7} {'peak RSS':>10}")
    for k, (dt, rss, cpu) in rows.items():
        print(f"{k:36} {dt:8.3f} {dt / base:9.2f}x {cpu:7.2f} {rss / 1024:7.0f} MB")
    ratio = rows["layerdb extract --path / -o DIR"][0] / base
    print(f"target: layerdb within 1.5x of tar -xf: {'met' if ratio <= 1.5 else 'NOT met'} "
          f"({ratio:.2f}x)")
    (OUT / "results.json").write_text(json.dumps(
        {"rootfs": str(rootfs), "layers": len(tars), "tar_bytes": size,
         "rows": {k: {"seconds": v[0], "peak_rss_kib": v[1], "cpu_seconds": v[2]}
                  for k, v in rows.items()},
         "ratio": ratio}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
