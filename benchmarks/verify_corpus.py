#!/usr/bin/env python3
"""Check a generated corpus with independent tools (skopeo, umoci, GNU tar).

    python benchmarks/verify_corpus.py --corpus benchmarks/corpus [--all]

* every archive: ``skopeo inspect`` parses it (docker-archive: / oci-archive:);
* the fleet images (all of them with --all, else one per form): ``skopeo copy`` into a scratch
  OCI layout (recomputes and checks every blob digest and diff_id), then ``umoci unpack``
  applies the layers with whiteouts, and every probe in MANIFEST.json is checked against the
  unpacked rootfs (present with the same sha256, or absent);
* the big layer: ``tar -xOf`` of the start / middle / end markers and the large file match;
* the many-files layer: the probes match via ``tar -xOf``.

Exits non-zero on the first mismatch class found, printing every failure.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

TRANSPORT = {"docker": "docker-archive", "oci-gzip": "oci-archive", "oci-zstd": "oci-archive"}


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, **kw)


def sha256_file(p: Path) -> str:
    h = hashlib.sha256()
    with open(p, "rb") as f:
        while b := f.read(1 << 20):
            h.update(b)
    return h.hexdigest()


def check_probes(rootfs: Path, probes: list[dict], label: str) -> list[str]:
    bad = []
    for pr in probes:
        p = rootfs / pr["path"].lstrip("/")
        if pr["status"] == "deleted":
            if os.path.lexists(p):
                bad.append(f"{label}: {pr['path']} should be deleted ({pr.get('note')})")
        elif not p.is_file() or sha256_file(p) != pr["sha256"]:
            bad.append(f"{label}: {pr['path']} missing or wrong content ({pr.get('note')})")
    return bad


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--corpus", type=Path, default=Path(__file__).parent / "corpus")
    ap.add_argument("--all", action="store_true", help="unpack every fleet archive")
    a = ap.parse_args()
    root = a.corpus
    m = json.loads((root / "MANIFEST.json").read_text())
    bad: list[str] = []
    tmp = Path(tempfile.mkdtemp(prefix="verify-corpus-"))
    try:
        forms_seen: set[str] = set()
        n_unpacked = 0
        for im in m["images"]:
            for form, arc in im["archives"].items():
                ref = f"{TRANSPORT[form]}:{root / arc['path']}"
                try:
                    sh("skopeo", "inspect", "--raw", ref)
                except subprocess.CalledProcessError as e:
                    bad.append(f"{arc['path']}: skopeo inspect failed: {e.stderr.decode()[-300:]}")
                    continue
                if im["kind"] != "fleet" or (not a.all and form in forms_seen):
                    continue
                forms_seen.add(form)
                lay = tmp / "layout"
                bundle = tmp / "bundle"
                shutil.rmtree(lay, ignore_errors=True)
                shutil.rmtree(bundle, ignore_errors=True)
                try:
                    # umoci cannot read zstd layers: let skopeo (which verifies the zstd
                    # blobs and their diff_ids) recompress those to gzip
                    extra = (["--dest-compress", "--dest-compress-format", "gzip"]
                             if form == "oci-zstd" else [])
                    sh("skopeo", "copy", "--quiet", *extra, ref, f"oci:{lay}:img")
                    sh("umoci", "unpack", "--rootless", "--image", f"{lay}:img", str(bundle))
                except subprocess.CalledProcessError as e:
                    bad.append(f"{arc['path']}: copy/unpack failed: {e.stderr.decode()[-300:]}")
                    continue
                bad += check_probes(bundle / "rootfs", im["probes"], arc["path"])
                n_unpacked += 1
        print(f"skopeo inspect: every archive; unpacked + probed {n_unpacked} fleet archives")

        # fleet-layout: every image resolves
        for li in m["fleet_layout"]["images"]:
            try:
                sh("skopeo", "inspect", "--raw", f"oci:{root / 'fleet-layout'}:{li['ref']}")
            except subprocess.CalledProcessError as e:
                bad.append(f"fleet-layout {li['ref']}: {e.stderr.decode()[-200:]}")

        big = m["big"]
        for key in ("start", "middle", "end", "large_file"):
            pr = big[key]
            out = subprocess.run(["tar", "-xOf", str(root / big["layer_file"]),
                                  "--occurrence=1", pr["path"].lstrip("/")],
                                 check=True, capture_output=True).stdout
            if hashlib.sha256(out).hexdigest() != pr["sha256"]:
                bad.append(f"big layer {key} {pr['path']}: content mismatch")
        with open(root / big["layer_file"], "rb") as f:
            for key in ("start", "middle", "end"):
                pr = big[key]
                f.seek(pr["offset_data"])
                if hashlib.sha256(f.read(pr["size"])).hexdigest() != pr["sha256"]:
                    bad.append(f"big layer {key}: offset_data is wrong")
        mf = m["many_files"]
        for pr in mf["probes"]:
            out = subprocess.run(["tar", "-xOf", str(root / mf["layer_file"]), "--occurrence=1",
                                  pr["path"].lstrip("/")], check=True,
                                 capture_output=True).stdout
            if hashlib.sha256(out).hexdigest() != pr["sha256"]:
                bad.append(f"many-files {pr['path']}: content mismatch")
        listing = subprocess.run(["tar", "-tf", str(root / mf["layer_file"])], check=True,
                                 capture_output=True).stdout.count(b"\n")
        if listing != mf["members"]:
            bad.append(f"many-files: tar lists {listing} members, MANIFEST says {mf['members']}")
        print(f"big layer markers and large file ok; many-files: {listing} members")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for b in bad:
        print("FAIL", b)
    print("OK" if not bad else f"{len(bad)} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
