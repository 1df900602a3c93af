#!/usr/bin/env python3
"""Times every report (``layerdb report NAME``, as a process) on a catalog of at least five
million member rows, and prints the dedup summary of the corpus fleet.

    python benchmarks/corpus.py                  # once: the corpus (benchmarks/corpus/)
    python benchmarks/reports_bench.py [--out benchmarks/out] [--files-per-image 1000000]

1. A catalog of the corpus fleet alone (``fleet-layout``: 28 images sharing base and runtime
   layers, with whiteouts and opaque directories); ``layerdb report dedup`` on it is the
   fleet summary.
2. A second catalog gets the fleet, then ``bench/many-files:1.0`` (1,000,000 files) and
   generated "churn" images, each a base layer of N small files (``corpus.write_many_layer``
   with its own seed), a layer that overwrites, re-chmods, deletes (``.wh.`` directories) and
   opaques (``.wh..wh..opq``) parts of it and adds files, and a small cleanup layer deleting a
   secret; the last churn image reuses the first one's base. Churn images are added until
   ``files`` holds >= 5,000,000 rows.
3. Every report in queries/ runs as ``layerdb report NAME --format json`` (a process; stdout
   read and counted), plus ``layerdb check`` and ``layerdb diff``, ``--repeat`` times (the
   fastest wall time is kept); times go to stdout and to ``OUT/reports_bench.json`` with the
   catalog's row counts and the fleet dedup rows.

Generated archives live in ``OUT/reports-corpus/``, the catalogs in ``OUT/fleet-catalog/`` and
``OUT/reports-catalog/``; all are reused when present (``--fresh`` rebuilds them).
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import corpus  # noqa: E402  (benchmarks/corpus.py)

TARGET_ROWS = 5_000_000
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"


def log(msg: str) -> None:
    print(f"[reports-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _dumps(obj: object) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Tar:
    """A tiny streaming ustar writer (``corpus._ustar`` headers) that hashes as it writes."""

    def __init__(self, path: Path) -> None:
        self.path, self.f, self.sha, self.n, self.members = path, open(path, "wb"), \
            hashlib.sha256(), 0, 0
        self.dirs: set[str] = set()

    def _w(self, b: bytes) -> None:
        self.f.write(b)
        self.sha.update(b)
        self.n += len(b)

    def dir(self, name: str, mode: int = 0o755) -> None:
        for a in corpus.ancestors(name + "/x"):
            if a not in self.dirs:
                self.dirs.add(a)
                self._w(corpus._ustar(a.encode() + b"/", 0, b"5", mode))
                self.members += 1

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self.dir(name.rsplit("/", 1)[0]) if "/" in name else None
        self._w(corpus._ustar(name.encode(), len(data), b"0", mode))
        self._w(data + bytes(-len(data) % 512))
        self.members += 1

    def marker(self, name: str) -> None:
        self.dir(name.rsplit("/", 1)[0])
        self._w(corpus._ustar(name.encode(), 0, b"0", 0o644))
        self.members += 1

    def close(self) -> dict:
        end = bytes(1024)
        self._w(end + bytes(-(self.n + len(end)) % 10240))
        self.f.close()
        return {"diff_id": "sha256:" + self.sha.hexdigest(), "size": self.n,
                "members": self.members, "path": str(self.path)}


def churn_layer(path: Path, files: int, seed: int) -> dict:
    """Changes to a ``write_many_layer`` tree of ``files`` files (names ``corpus.many_name``)."""
    r = random.Random(seed)
    t = Tar(path)
    top = max(files // 100_000, 1)
    dirs = [f"data/{a:02d}/{b:02d}" for a in range(top) for b in range(100)
            if a * 100_000 + b * 1000 < files]
    gone = set(r.sample(dirs, min(20, len(dirs) // 4)))
    rest = [d for d in dirs if d not in gone]
    opaque = set(r.sample(rest, min(5, len(rest) // 4)))
    for d in sorted(gone):
        a, b = d.rsplit("/", 1)
        t.marker(f"{a}/.wh.{b}")
    for d in sorted(opaque):
        t.dir(d)
        t.marker(f"{d}/.wh..wh..opq")
        for k in range(10):
            t.file(f"{d}/refill-{k}.txt", b"refilled %d %d\n" % (seed, k))
    for n in range(0, files, 50):  # overwrite every 50th file, re-chmod every 200th
        name = corpus.many_name(n)
        d = name.rsplit("/", 1)[0]
        if d in gone or d in opaque:
            continue
        if n % 200 == 0:
            t.file(name, b"# file %07d chmod\n" % n, 0o755)
        else:
            t.file(name, b"# file %07d v2 seed %d\n" % (n, seed))
    for n in range(10_000):
        t.file(f"new/{n // 1000:02d}/n{n:05d}.txt", b"new %d %d\n" % (seed, n))
    t.file("usr/local/bin/helper", b"#!/bin/sh\necho %d\n" % seed, 0o4755)
    t.file("root/.ssh/id_rsa", b"-----BEGIN OPENSSH PRIVATE KEY----- %d\n" % seed, 0o600)
    t.file("srv/app/.env", b"TOKEN=%d\n" % seed)
    return t.close()


def cleanup_layer(path: Path, seed: int) -> dict:
    t = Tar(path)
    t.marker("root/.ssh/.wh.id_rsa")
    t.file("srv/app/VERSION", b"%d\n" % seed)
    return t.close()


def build_churn(out: Path, count: int, files: int, issue_shape: bool = False) -> Path:
    """An OCI layout (uncompressed layers) with ``count`` churn images; the last one shares
    the first one's base. With ``issue_shape`` (issue 8's fleet): ``count`` is 5, and three
    more images stack the bases themselves: ``bench/pair-01`` (base 0 under base 1: two
    1M-file layers at the same paths, every lower file shadowed), ``bench/pair-23`` and
    ``bench/again-1`` (base 1 and its churn layer). Returns the layout directory."""
    layout = out / ("issue-layout" if issue_shape else "churn-layout")
    if (layout / "index.json").exists():
        return layout
    work = out / "churn-work"
    shutil.rmtree(work, ignore_errors=True)
    blobs = layout / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True)
    mode = dataclasses.replace(corpus.FULL, many_files=files)
    bases: list[dict] = []
    uppers: list[dict] = []
    entries = []

    def put(info: dict) -> dict:
        dst = blobs / info["diff_id"][7:]
        if not dst.exists():
            os.replace(info["path"], dst)
        return {"mediaType": LAYER_TAR, "digest": info["diff_id"], "size": info["size"]}

    def image(ref: str, descs: list[dict], history: list[str]) -> None:
        config = _dumps({
            "architecture": "amd64", "os": "linux", "created": corpus.CREATED,
            "config": {"Cmd": ["/bin/sh"], "Env": [corpus.PATH_ENV]},
            "rootfs": {"type": "layers", "diff_ids": [d["digest"] for d in descs]},
            "history": [{"created": corpus.CREATED, "created_by": what} for what in history]})
        cfg_d = hashlib.sha256(config).hexdigest()
        (blobs / cfg_d).write_bytes(config)
        manifest = _dumps({"schemaVersion": 2, "mediaType": corpus.MT_OCI_MANIFEST,
                           "config": {"mediaType": corpus.MT_OCI_CONFIG,
                                      "digest": "sha256:" + cfg_d, "size": len(config)},
                           "layers": descs})
        man_d = hashlib.sha256(manifest).hexdigest()
        (blobs / man_d).write_bytes(manifest)
        entries.append({"mediaType": corpus.MT_OCI_MANIFEST, "digest": "sha256:" + man_d,
                        "size": len(manifest),
                        "annotations": {"org.opencontainers.image.ref.name": ref}})

    for i in range(count):
        shared = i == count - 1 and count > 1
        if shared:
            base = bases[0]
        else:
            t0 = time.monotonic()
            p = work / f"base-{i}.tar"
            info = corpus.write_many_layer(mode, corpus.SEED + 1000 + i, p)
            info["path"] = str(p)
            base = {**info, "desc": put(info)}
            bases.append(base)
            log(f"churn base {i}: {info['members']:,} members in {time.monotonic() - t0:.0f}s")
        upper = put(churn_layer(work / f"churn-{i}.tar", files, corpus.SEED + 2000 + i))
        uppers.append(upper)
        clean = cleanup_layer(work / f"clean-{i}.tar", corpus.SEED + 3000 + i)
        image(f"bench/churn-{i}:1.0", [base["desc"], upper, put(clean)],
              [f"ADD many-files-{0 if shared else i}", "RUN churn", "RUN cleanup"])
    if issue_shape and len(bases) >= 4:
        image("bench/pair-01:1.0", [bases[0]["desc"], bases[1]["desc"]],
              ["ADD many-files-0", "ADD many-files-1"])
        image("bench/pair-23:1.0", [bases[2]["desc"], bases[3]["desc"]],
              ["ADD many-files-2", "ADD many-files-3"])
        image("bench/again-1:1.0", [bases[1]["desc"], uppers[1]], ["ADD many-files-1", "RUN churn"])
    (layout / "oci-layout").write_bytes(b'{"imageLayoutVersion":"1.0.0"}')
    (layout / "index.json").write_bytes(_dumps({"schemaVersion": 2,
                                                "mediaType": corpus.MT_OCI_INDEX,
                                                "manifests": entries}))
    shutil.rmtree(work, ignore_errors=True)
    return layout


def layerdb_cmd() -> list[str]:
    exe = shutil.which("layerdb")
    return [exe] if exe else [sys.executable, "-c", "from layerdb.cli import main; main()"]


def run(args: list[str], catalog: Path) -> tuple[float, subprocess.CompletedProcess]:
    """Run ``layerdb ARGS`` as a process; its peak RSS (bytes) goes to ``.peak_rss``, measured
    by ``/usr/bin/time`` (Linux carries a parent's peak RSS into a child it forks, so this
    script, which reads big outputs, must not be the one that forks layerdb)."""
    env = {**os.environ, "LAYERDB_HOME": str(catalog)}
    timed = os.path.exists("/usr/bin/time")
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err, \
            tempfile.NamedTemporaryFile("r") as rss:
        cmd = (["/usr/bin/time", "-q", "-f", "%M", "-o", rss.name] if timed else []) + layerdb_cmd() + args
        t0 = time.monotonic()
        code = subprocess.run(cmd, stdout=out, stderr=err, env=env).returncode
        secs = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        p = subprocess.CompletedProcess(cmd, code, out.read().decode("utf-8", "replace"),
                                        err.read().decode("utf-8", "replace"))
        kib = rss.read().strip().splitlines()
    p.peak_rss = int(kib[-1]) * 1024 if kib and kib[-1].isdigit() else None  # type: ignore[attr-defined]
    return secs, p


def ingest(paths: list[str], catalog: Path) -> float:
    secs, p = run(["ingest", "-q", *paths], catalog)
    if p.returncode:
        raise SystemExit(f"ingest {paths} failed: {p.stderr.strip()}")
    log(f"ingested {', '.join(Path(x).name for x in paths)} in {secs:.1f}s")
    return secs


def sql(query: str, catalog: Path) -> list[dict]:
    _, p = run(["sql", query, "--format", "json"], catalog)
    if p.returncode:
        raise SystemExit(f"sql failed: {p.stderr.strip()}")
    return json.loads(p.stdout)


def counts(catalog: Path) -> dict:
    return sql("select (select count(*) from images) as images, "
               "(select count(*) from layers) as layers, "
               "(select count(*) from files) as files_rows, "
               "(select sum(m.member_count) from image_layers il "
               " join layers m using (diff_id)) as image_member_rows, "
               "(select count(*) from fs) as fs_rows", catalog)[0]


def grow(a: argparse.Namespace, cat: Path, gen: Path, many: Path | None, result: dict) -> None:
    """The corpus fleet's own catalog (its dedup summary), then a catalog grown past the target."""

    # 1. the fleet alone (its own catalog), and its dedup summary
    fleet = a.corpus / "fleet-layout"
    fleet_cat = a.out / "fleet-catalog"
    if a.fresh:
        shutil.rmtree(fleet_cat, ignore_errors=True)
    if not (fleet_cat / "catalog.duckdb").exists():
        result["ingest_fleet_seconds"] = ingest([str(fleet)], fleet_cat)
    secs, p = run(["report", "dedup", "--format", "json"], fleet_cat)
    if p.returncode:
        raise SystemExit(f"report dedup failed: {p.stderr.strip()}")
    fleet_imgs = sql("select count(*) as n from images", fleet_cat)[0]["n"]
    result["fleet"] = {"images": fleet_imgs, "dedup_seconds": round(secs, 3),
                       "dedup": json.loads(p.stdout)}
    _, t = run(["report", "dedup"], fleet_cat)
    print(f"dedup summary of the corpus fleet ({fleet_imgs} images):\n{t.stdout}")
    if not (cat / "catalog.duckdb").exists():
        ingest([str(fleet)], cat)

    # 2. grow the catalog past the target
    c = counts(cat)
    if c["files_rows"] < a.target_rows and many and many.exists() and \
            not sql("select 1 as x from images where name = 'bench/many-files:1.0'", cat):
        result["ingest_many_files_seconds"] = ingest([str(many)], cat)
        c = counts(cat)
    if c["files_rows"] < a.target_rows:
        per = a.files_per_image + a.files_per_image // 1000 + 11_000
        need = -(-(a.target_rows - c["files_rows"]) // per)
        layout = build_churn(gen, need + 1, a.files_per_image)  # +1: one shares a base
        result["ingest_churn_seconds"] = ingest([str(layout)], cat)
        c = counts(cat)
    result["counts"] = c
    log(f"catalog: {c}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--corpus", type=Path, default=HERE / "corpus")
    ap.add_argument("--out", type=Path, default=HERE / "out")
    ap.add_argument("--files-per-image", type=int, default=1_000_000)
    ap.add_argument("--target-rows", type=int, default=TARGET_ROWS)
    ap.add_argument("--fresh", action="store_true", help="rebuild archives and catalog")
    ap.add_argument("--shape", choices=("grow", "issue"), default="grow",
                    help="grow: the corpus fleet plus churn images up to --target-rows; issue: "
                         "issue 8's fleet (9 images, 5 distinct 1M-file layers, ~11M member "
                         "rows, one image of two 1M-file layers), without the corpus fleet")
    ap.add_argument("--only", nargs="*", default=None, help="run only these labels (prefixes)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="run each report N times and keep the fastest (a shared machine is noisy)")
    a = ap.parse_args(argv)
    manifest = a.corpus / "MANIFEST.json"
    if not manifest.exists():
        raise SystemExit(f"{manifest} is missing: run python benchmarks/corpus.py first")
    a.out.mkdir(parents=True, exist_ok=True)
    issue = a.shape == "issue"
    cat = a.out / ("issue-catalog" if issue else "reports-catalog")
    gen = a.out / "reports-corpus"
    if a.fresh:
        shutil.rmtree(cat, ignore_errors=True)
        shutil.rmtree(gen, ignore_errors=True)
    result: dict = {"catalog": str(cat), "shape": a.shape}
    m = json.loads(manifest.read_text())
    many = a.corpus / m["many_files"]["archive"] if "archive" in m["many_files"] else None
    if issue:  # many-files, then the issue layout: 9 images in all
        if not (cat / "catalog.duckdb").exists():
            if not (many and many.exists()):
                raise SystemExit("the corpus has no many-files archive")
            result["ingest_many_files_seconds"] = ingest([str(many)], cat)
            layout = build_churn(gen, 5, a.files_per_image, issue_shape=True)
            result["ingest_issue_seconds"] = ingest([str(layout)], cat)
        result["counts"] = c = counts(cat)
        log(f"catalog: {c}")
    else:
        grow(a, cat, gen, many, result)

    # 3. every report, as a process
    imgs = [r["name"] for r in sql("select name from images order by name", cat)]
    a_img = "fleet/auth-service:1.0" if "fleet/auth-service:1.0" in imgs else imgs[0]
    b_img = "fleet/auth-service:2.0" if "fleet/auth-service:2.0" in imgs else imgs[-1]
    churns = sorted(i for i in imgs if "churn" in i)
    _, p = run(["report", "--list", "--format", "json"], cat)
    names = [r["name"] for r in json.loads(p.stdout)]
    jobs = [(n, ["report", n] + (["-p", "a", a_img, "-p", "b", b_img] if n == "diff" else []))
            for n in names]
    jobs += [("report efficiency --image (1 churn image)",
              ["report", "efficiency", "--image", "bench/churn-0:1.0"]),
             ("report secrets -p hidden 1", ["report", "secrets", "-p", "hidden", "1"]),
             ("report dir-sizes -p hidden 1", ["report", "dir-sizes", "-p", "hidden", "1"]),
             ("check (every image)", ["check"]),
             (f"diff {a_img} {b_img}", ["diff", a_img, b_img]),
             ("diff churn-0 churn-<last> (1M-file images)",
              ["diff", "bench/churn-0:1.0", churns[-1]])]
    if issue:
        jobs += [("report efficiency --image bench/pair-01 (two 1M-file layers)",
                  ["report", "efficiency", "--image", "bench/pair-01:1.0"]),
                 ("report history --image bench/pair-01",
                  ["report", "history", "--image", "bench/pair-01:1.0"])]
    if a.only is not None:
        jobs = [j for j in jobs if any(j[0] == o or j[0].startswith(o + " ") for o in a.only)]
    timings = []
    print(f"{'report':60} {'seconds':>8} {'peak RSS MB':>11} {'rows':>9}")
    for label, args in jobs:
        runs, rss = [], []
        for _ in range(max(a.repeat, 1)):
            secs, p = run(args + ["--format", "json"], cat)
            runs.append(round(secs, 3))
            rss.append(p.peak_rss)  # type: ignore[attr-defined]
        secs, peak = min(runs), max((r for r in rss if r is not None), default=0)
        ok = p.returncode in (0, 1) and p.stdout.strip().startswith("[")
        rows = len(json.loads(p.stdout)) if ok else None
        # the output's digest: two runs (old code, new code) compare report by report
        digest = hashlib.sha256(p.stdout.encode()).hexdigest()
        timings.append({"report": label, "args": args, "seconds": secs, "runs": runs,
                        "peak_rss_bytes": peak, "stdout_sha256": digest, "rows": rows, "exit": p.returncode,
                        "stderr": p.stderr.strip()[-300:]})
        print(f"{label:60} {secs:8.2f} {peak / 1e6:11.0f} {rows if rows is not None else 'ERROR':>9}",
              flush=True)
        if not ok:
            print(f"  {p.stderr.strip()[-300:]}", flush=True)
    result["timings"] = timings
    out = a.out / ("reports_bench_issue.json" if issue else "reports_bench.json")
    out.write_text(json.dumps(result, indent=2, default=str) + "\n")
    log(f"wrote {out}")
    return 0 if all(t["rows"] is not None for t in timings) else 1


if __name__ == "__main__":
    sys.exit(main())
