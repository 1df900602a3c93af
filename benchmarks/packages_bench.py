#!/usr/bin/env python3
"""What package capture costs at ingest, and how fast the package reports are on a big catalog.

    python benchmarks/packages_bench.py [--out benchmarks/out/packages] [--images 40]
                                        [--files 100000] [--repeat 3] [--only capture|where]

1. Capture cost. A "package-rich" image built from this machine's real files (``/var/lib/dpkg``,
   ``/usr/lib/python3*``, ``/usr/lib/node_modules``, ``/usr/lib/go-*`` with its Go executables,
   ``/usr/bin``, ``/usr/lib/x86_64-linux-gnu``, ``/usr/share/java``: package databases,
   thousands of package.json files, large ELF executables, jars; plus ``/opt/app/app.jar``, a
   Spring Boot style jar holding every jar of ``/usr/share/java`` STORED under
   ``BOOT-INF/lib/`` and one more copy of each DEFLATED under ``lib/``) is ingested into a
   fresh catalog with capture off (``LAYERDB_PACKAGES=0``) and on, alternately, ``--repeat``
   times, as ``layerdb ingest -j 1`` processes (the fastest of each is kept; target: on within
   5% of off). Then the capture alone (``packages.scan.read_packages``) is timed in this
   process, and its Go part (large ELF executables) and its Java part (archives) separately.
2. ``package-where`` over a big catalog: ``--images`` images on one shared Debian base (the
   debootstrap rootfs the tests cache, ``$LAYERDB_TEST_CACHE``; else this machine's dpkg
   database and Python packages), each with its own layer of ``--files`` small files, every
   other one with an upper layer upgrading libc6 (a rewritten dpkg status). One OCI layout,
   uncompressed layers, one ingest. Then ``layerdb report package-where -p name glibc
   -p below ...``, ``packages --image``, ``package-versions`` and, as a baseline,
   ``layerdb sql`` looking up one path in ``fs`` run as processes (fastest of ``--repeat``).

Results go to stdout and ``OUT/packages_bench.json``. The big catalog is reused when present.
"""
from __future__ import annotations

import argparse
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
SRC = HERE.parent / "src"
sys.path.insert(0, str(SRC))
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
RICH_DIRS = ["/var/lib/dpkg", "/usr/lib/python3", "/usr/lib/python3.11", "/usr/lib/node_modules",
             "/usr/lib/go-1.19", "/usr/bin", "/usr/lib/x86_64-linux-gnu", "/etc/os-release",
             "/usr/share/java", "/usr/share/maven"]
FAT_JAR = "opt/app/app.jar"  # a Spring Boot style jar of /usr/share/java's jars (STORED, nested)
EPOCH = 1700000000


def log(msg: str) -> None:
    print(f"[packages-bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = str(SRC) + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _layerdb(*args: str, env: dict[str, str] | None = None) -> tuple[float, str]:
    t = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "layerdb.cli", *args], check=True, capture_output=True,
                         text=True, env=env or _env()).stdout
    return time.perf_counter() - t, out


class Layout:
    """A minimal OCI layout writer: uncompressed layer blobs, one manifest per image."""

    def __init__(self, root: Path) -> None:
        self.root = root
        (root / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        (root / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
        self.manifests: list[dict] = []

    def blob(self, data: bytes) -> dict:
        d = hashlib.sha256(data).hexdigest()
        (self.root / "blobs" / "sha256" / d).write_bytes(data)
        return {"digest": "sha256:" + d, "size": len(data)}

    def layer_file(self, path: Path) -> dict:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                h.update(chunk)
        dest = self.root / "blobs" / "sha256" / h.hexdigest()
        if not dest.exists():
            shutil.copyfile(path, dest)
        return {"mediaType": LAYER_TAR, "digest": "sha256:" + h.hexdigest(), "size": path.stat().st_size}

    def image(self, ref: str, layers: list[dict]) -> None:
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                             "rootfs": {"type": "layers", "diff_ids": [l["digest"] for l in layers]}}).encode()
        cd = self.blob(config)
        manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                               "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **cd},
                               "layers": layers}).encode()
        md = self.blob(manifest)
        self.manifests.append({"mediaType": "application/vnd.oci.image.manifest.v1+json", **md,
                               "annotations": {"org.opencontainers.image.ref.name": ref}})

    def close(self) -> None:
        (self.root / "index.json").write_text(json.dumps(
            {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
             "manifests": self.manifests}))


def _ustar(name: bytes, size: int, typeflag: bytes = b"0", mode: int = 0o644) -> bytes:
    h = bytearray(512)
    h[0:len(name)] = name
    h[100:108] = b"%07o\0" % mode
    h[108:116] = h[116:124] = b"0000000\0"
    h[124:136] = b"%011o\0" % size
    h[136:148] = b"%011o\0" % EPOCH
    h[148:156] = b"        "
    h[156:157] = typeflag
    h[257:265] = b"ustar\x0000"
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _member(name: str, data: bytes, mode: int = 0o644) -> bytes:
    return _ustar(name.encode(), len(data), b"0", mode) + data + bytes(-len(data) % 512)


def filler_layer(path: Path, image: int, files: int) -> None:
    with open(path, "wb") as f:
        for d in range(0, files, 1000):
            f.write(_ustar(f"srv/data{image}/d{d // 1000:04d}/".encode(), 0, b"5", 0o755))
            for n in range(d, min(d + 1000, files)):
                f.write(_member(f"srv/data{image}/d{d // 1000:04d}/f{n:07d}.txt", b"file %d of %d\n" % (n, image)))
        f.write(bytes(1024))


def rich_layer(path: Path) -> int:
    """A tar of the package-rich directories of this machine; returns its member count."""
    n = 0
    with tarfile.open(path, "w", format=tarfile.PAX_FORMAT) as tf:
        for d in RICH_DIRS:
            if os.path.exists(d):
                tf.add(d, arcname=d.lstrip("/"), filter=lambda ti: ti if ti.isfile() or ti.isdir()
                       or ti.issym() or ti.islnk() else None)
        fat = _fat_jar()
        ti = tarfile.TarInfo(FAT_JAR)
        ti.size, ti.mtime = len(fat), EPOCH
        tf.addfile(ti, io.BytesIO(fat))
        n = len(tf.getmembers())
    return n


def _fat_jar() -> bytes:
    import zipfile

    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("META-INF/MANIFEST.MF", "Manifest-Version: 1.0\nImplementation-Title: app\n"
                   "Implementation-Version: 1.0.0\nMain-Class: org.springframework.boot.loader.JarLauncher\n")
        java = Path("/usr/share/java")
        jars = sorted(p for p in java.glob("*.jar") if p.is_file() and not p.is_symlink()) if java.is_dir() else []
        for p in jars:
            z.write(p, f"BOOT-INF/lib/{p.name}", zipfile.ZIP_STORED)
            z.write(p, f"lib/{p.name}", zipfile.ZIP_DEFLATED)
        for i in range(20000):
            z.writestr(f"BOOT-INF/classes/com/example/C{i}.class", b"\xca\xfe\xba\xbe" + bytes(200))
    return buf.getvalue()


def bench_capture(out: Path, repeat: int) -> dict:
    work = out / "capture"
    work.mkdir(parents=True, exist_ok=True)
    layer = work / "rich.tar"
    if not layer.exists():
        log("building the package-rich layer from this machine's files")
        rich_layer(layer)
    lay = Layout(work / "layout")
    lay.image("rich:1", [lay.layer_file(layer)])
    lay.close()
    times: dict[str, list[float]] = {"off": [], "on": []}
    for r in range(repeat):
        for mode in ("off", "on") if r % 2 == 0 else ("on", "off"):
            cat = work / f"cat-{mode}"
            shutil.rmtree(cat, ignore_errors=True)
            t, _ = _layerdb("ingest", "-q", "-j", "1", "--catalog", str(cat), str(work / "layout"),
                            env=_env(LAYERDB_PACKAGES="0" if mode == "off" else "1"))
            times[mode].append(t)
            log(f"ingest with capture {mode}: {t:.3f} s")
    # the capture alone, in this process, on the catalog's files
    from layerdb.digest import Digest
    from layerdb.packages import gobuildinfo, java, scan

    cat = work / "cat-on"
    diff_id = next((cat / "files").glob("*.parquet")).stem
    parquet = str(cat / "files" / f"{diff_id}.parquet")
    blob = str(cat / "blobs" / "sha256" / f"{diff_id}.zst")
    t = time.perf_counter()
    pkgs = scan.read_packages(parquet, blob, Digest("sha256:" + diff_id))
    t_scan = time.perf_counter() - t
    t = time.perf_counter()
    cands = scan.candidates(parquet)
    t_cands = time.perf_counter() - t

    def parse_timed(kind, parse):  # noqa: ANN001, ANN202 - the candidates of one kind alone
        t = time.perf_counter()
        with scan._CachedLayer(blob, Digest("sha256:" + diff_id)) as sl:
            got = [p for c in sorted((c for c in cands if c.kind == kind), key=lambda c: c.offset)
                   for p in parse(scan._Member(sl, c.path, c.offset, c.size))]
        return got, time.perf_counter() - t

    gopk, t_go = parse_timed("go", gobuildinfo.parse)
    javapk, t_java = parse_timed("java", java.parse)
    by_eco: dict[str, int] = {}
    for p in pkgs:
        by_eco[p.ecosystem] = by_eco.get(p.ecosystem, 0) + 1
    with open(layer, "rb") as f:
        members = sum(1 for _ in tarfile.open(fileobj=f, mode="r|"))
    res = {"layer_bytes": layer.stat().st_size, "members": members,
           "ingest_off_s": min(times["off"]), "ingest_on_s": min(times["on"]),
           "ratio_on_off": min(times["on"]) / min(times["off"]), "all_times": times,
           "scan_s": t_scan, "candidates_s": t_cands, "candidates": len(cands),
           "go_candidates": sum(c.kind == "go" for c in cands),
           "go_binaries": len({p.record_path for p in gopk}), "go_s": t_go,
           "java_archives": sum(c.kind == "java" for c in cands), "java_packages": len(javapk),
           "java_nested": len({p.record_path for p in javapk if "!/" in p.record_path}), "java_s": t_java,
           "packages": by_eco}
    log(f"capture: {json.dumps(res)}")
    return res


def _rootfs_tar() -> Path | None:
    cache = Path(os.environ.get("LAYERDB_TEST_CACHE") or Path(tempfile.gettempdir()) / "layerdb-test-cache")
    found = sorted(cache.glob("debootstrap-bookworm-minbase-*.tar"))
    return found[0] if found else None


def _status_of(base: Path) -> bytes:
    with tarfile.open(base) as tf:
        for name in ("./var/lib/dpkg/status", "var/lib/dpkg/status"):
            try:
                m = tf.extractfile(name)
            except KeyError:
                continue
            if m is not None:
                return m.read()
    raise SystemExit(f"{base}: no var/lib/dpkg/status")


def build_big(work: Path, images: int, files: int) -> Path:
    layout = work / "layout"
    if (layout / "index.json").exists():
        return layout
    shutil.rmtree(layout, ignore_errors=True)
    base = _rootfs_tar()
    if base is None:
        log("no debootstrap rootfs cached (run tests/test_packages_debian.py once): using this machine's files")
        base = work / "base.tar"
        with tarfile.open(base, "w", format=tarfile.PAX_FORMAT) as tf:
            for d in ("/var/lib/dpkg/status", "/etc/os-release", "/usr/lib/python3/dist-packages"):
                if os.path.exists(d):
                    tf.add(d, arcname=d.lstrip("/"))
    status = _status_of(base)
    lay = Layout(layout)
    base_d = lay.layer_file(base)
    upgraded = work / "upgrade.tar"
    import re

    new_status = re.sub(rb"(Package: libc6\n(?:[^\n]+\n)*?Version: )[^\n]+", rb"\g<1>2.36-9+deb12u99", status)
    upgraded.write_bytes(_member("var/lib/dpkg/status", new_status) + bytes(1024))
    up_d = lay.layer_file(upgraded)
    tmp = work / "filler.tar"
    for i in range(images):
        filler_layer(tmp, i, files)
        layers = [base_d, lay.layer_file(tmp)] + ([up_d] if i % 2 else [])
        lay.image(f"big/app{i}:1", layers)
        log(f"image {i + 1}/{images}")
    tmp.unlink()
    lay.close()
    return layout


def bench_where(out: Path, images: int, files: int, repeat: int) -> dict:
    work = out / "big"
    work.mkdir(parents=True, exist_ok=True)
    cat = work / "cat"
    if not (cat / "catalog.duckdb").exists():
        layout = build_big(work, images, files)
        log("ingesting the big catalog")
        t, _ = _layerdb("ingest", "-q", "--catalog", str(cat), str(layout))
        log(f"ingested in {t:.1f} s")
    _, rows = _layerdb("sql", "select (select count(*) from fs) as fs_rows, (select count(*) from files) "
                       "as files_rows, (select count(*) from packages) as package_rows, "
                       "(select count(*) from images) as images", "--format", "json", "--catalog", str(cat))
    counts = json.loads(rows)[0]
    log(f"catalog: {counts}")
    runs = {
        "package-where -p name glibc -p below 2.36-9+deb12u99":
            ["report", "package-where", "-p", "name", "glibc", "-p", "below", "2.36-9+deb12u99"],
        "package-where -p name openssl -p below 3.0.13 (no such package)":
            ["report", "package-where", "-p", "name", "openssl", "-p", "below", "3.0.13"],
        "packages --image big/app1:1": ["report", "packages", "--image", "big/app1:1"],
        "package-versions -p min_versions 2": ["report", "package-versions", "-p", "min_versions", "2"],
        "baseline: sql one path in fs": ["sql", "select image, layer from fs where path = '/var/lib/dpkg/status'"],
    }
    res: dict = {"catalog": counts, "times_s": {}, "rows": {}}
    for name, args in runs.items():
        best = float("inf")
        for _ in range(repeat):
            t, text = _layerdb(*args, "--format", "json", "--catalog", str(cat))
            best = min(best, t)
        res["times_s"][name] = best
        res["rows"][name] = len(json.loads(text))
        log(f"{name}: {best:.3f} s, {res['rows'][name]} rows")
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=HERE / "out" / "packages")
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", choices=["capture", "where"])
    a = ap.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    res: dict = {}
    if a.only in (None, "capture"):
        res["capture"] = bench_capture(a.out, a.repeat)
    if a.only in (None, "where"):
        res["where"] = bench_where(a.out, a.images, a.files, a.repeat)
    (a.out / "packages_bench.json").write_text(json.dumps(res, indent=2))
    print(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
