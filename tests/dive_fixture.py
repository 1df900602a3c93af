"""Dive's own test image (``.data/Dockerfile.test-image`` in wagoodman/dive), rebuilt with real
``umoci`` layers instead of ``docker build``: one layer per Dockerfile step.

    FROM busybox                                        -> layer 0: a tiny base (below)
    ADD README.md /somefile.txt                         -> layer 1
    RUN mkdir -p /root/example/really/nested            -> layer 2
    RUN cp /somefile.txt /root/example/somefile1.txt    -> layer 3
    RUN chmod 444 /root/example/somefile1.txt           -> layer 4
    RUN cp /somefile.txt /root/example/somefile2.txt    -> layer 5
    RUN cp /somefile.txt /root/example/somefile3.txt    -> layer 6
    RUN mv /root/example/somefile3.txt /root/saved.txt  -> layer 7
    RUN cp /root/saved.txt /root/.saved.txt             -> layer 8
    RUN rm -rf /root/example/                           -> layer 9
    ADD .scripts/ /root/.data/                          -> layer 10
    RUN cp /root/saved.txt /tmp/saved.again1.txt        -> layer 11
    RUN cp /root/saved.txt /root/.data/saved.again2.txt -> layer 12
    RUN chmod +x /root/saved.txt                        -> layer 13

Sizes are chosen so the arithmetic in the tests is easy to follow: ``SOMEFILE`` bytes for
``/somefile.txt`` (and every copy of it), a base of ``BUSYBOX + PASSWD`` bytes (``/bin/sh`` is a
hardlink to ``/bin/busybox``: 0 bytes in the tar) and ``SCRIPT`` bytes in ``/root/.data/``.
Every mtime is pinned, so umoci's mtree diff puts only what a step changed into its layer
(plus the directories it created).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

FIXED_MTIME = 1_600_000_000
CREATED = "2020-09-13T12:26:40Z"
TAG = "latest"
REF = "dive-test:latest"

SOMEFILE = 1000
BUSYBOX = 9000
PASSWD = 100
SCRIPT = 200


def _bytes(n: int, seed: str) -> bytes:
    out = b""
    i = 0
    while len(out) < n:
        out += hashlib.sha256(f"{seed}{i}".encode()).hexdigest().encode()
        i += 1
    return out[:n]


def _run(*args: str) -> None:
    try:
        subprocess.run(args, check=True, capture_output=True)
    except subprocess.CalledProcessError as e:
        raise RuntimeError(f"{' '.join(args)} failed: {e.stderr.decode(errors='replace')}") from e


def _settle(root: Path) -> None:
    paths = [root] + [Path(d) / n for d, ds, fs in os.walk(root) for n in ds + fs]
    for p in paths:
        os.utime(p, (FIXED_MTIME, FIXED_MTIME), follow_symlinks=False)


def _base(r: Path) -> None:
    for d in ("bin", "etc", "root", "tmp"):
        (r / d).mkdir(exist_ok=True)
    (r / "bin/busybox").write_bytes(_bytes(BUSYBOX, "busybox"))
    os.chmod(r / "bin/busybox", 0o755)
    os.link(r / "bin/busybox", r / "bin/sh")
    (r / "etc/passwd").write_bytes(_bytes(PASSWD, "passwd"))
    os.chmod(r / "tmp", 0o1777)
    os.chmod(r / "root", 0o700)


def _cp(r: Path, src: str, dst: str) -> None:
    shutil.copyfile(r / src.lstrip("/"), r / dst.lstrip("/"))


#: (created_by, action on the rootfs), base first: one layer each.
STEPS: list[tuple[str, Callable[[Path], None]]] = [
    ("FROM busybox", _base),
    ("ADD README.md /somefile.txt",
     lambda r: (r / "somefile.txt").write_bytes(_bytes(SOMEFILE, "readme"))),
    ("RUN mkdir -p /root/example/really/nested",
     lambda r: (r / "root/example/really/nested").mkdir(parents=True)),
    ("RUN cp /somefile.txt /root/example/somefile1.txt",
     lambda r: _cp(r, "/somefile.txt", "/root/example/somefile1.txt")),
    ("RUN chmod 444 /root/example/somefile1.txt",
     lambda r: os.chmod(r / "root/example/somefile1.txt", 0o444)),
    ("RUN cp /somefile.txt /root/example/somefile2.txt",
     lambda r: _cp(r, "/somefile.txt", "/root/example/somefile2.txt")),
    ("RUN cp /somefile.txt /root/example/somefile3.txt",
     lambda r: _cp(r, "/somefile.txt", "/root/example/somefile3.txt")),
    ("RUN mv /root/example/somefile3.txt /root/saved.txt",
     lambda r: os.rename(r / "root/example/somefile3.txt", r / "root/saved.txt")),
    ("RUN cp /root/saved.txt /root/.saved.txt",
     lambda r: _cp(r, "/root/saved.txt", "/root/.saved.txt")),
    ("RUN rm -rf /root/example/", lambda r: shutil.rmtree(r / "root/example")),
    ("ADD .scripts/ /root/.data/", lambda r: (
        (r / "root/.data").mkdir(),
        (r / "root/.data/tag.sh").write_bytes(_bytes(SCRIPT, "script")))),
    ("RUN cp /root/saved.txt /tmp/saved.again1.txt",
     lambda r: _cp(r, "/root/saved.txt", "/tmp/saved.again1.txt")),
    ("RUN cp /root/saved.txt /root/.data/saved.again2.txt",
     lambda r: _cp(r, "/root/saved.txt", "/root/.data/saved.again2.txt")),
    ("RUN chmod +x /root/saved.txt", lambda r: os.chmod(r / "root/saved.txt", 0o755)),
]


def build_dive_image(workdir: Path) -> Path:
    """Build the image as an OCI layout under ``workdir`` (ref ``latest``) and return the
    layout directory (``layerdb ingest DIR`` reads it)."""
    work = Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    layout, bundle = work / "dive-oci", work / "bundle"
    img = f"{layout}:{TAG}"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", img)
    _run("umoci", "unpack", "--rootless", "--image", img, str(bundle))
    rootfs = bundle / "rootfs"
    for what, step in STEPS:
        step(rootfs)
        _settle(rootfs)
        _run("umoci", "repack", "--refresh-bundle", "--history.created", CREATED,
             "--history.created_by", what, "--image", img, str(bundle))
    _run("umoci", "config", "--image", img, "--created", CREATED, "--history.created", CREATED,
         "--architecture", "amd64", "--os", "linux", "--config.cmd", "/bin/sh")
    _run("umoci", "gc", "--layout", str(layout))
    return layout


def build_dive_archive(workdir: Path) -> Path:
    """The same image as a ``docker-archive`` tar named ``dive-test:latest`` (skopeo)."""
    layout = build_dive_image(workdir)
    out = Path(workdir) / "dive-test.tar"
    _run("skopeo", "--insecure-policy", "copy", "-q", f"oci:{layout}:{TAG}",
         f"docker-archive:{out}:{REF}")
    return out


# The fleet: three small images (tarfile-built) beside dive's, for the fleet-wide, security and
# diff reports. Sizes in bytes; every content is distinct unless said otherwise.

#: security.capability of ``cap_net_raw+ep``: vfs_cap_data v2 (magic 0x02000000 | effective),
#: permitted bit 13, nothing inheritable, little-endian.
CAP_NET_RAW_EP = (b"\x01\x00\x00\x02" + (1 << 13).to_bytes(4, "little") + b"\x00" * 12)

LIBC = _bytes(3000, "libc")          # in the shared base and, under another path, in tool's
ETC_PASSWD = _bytes(100, "etc-passwd")  # the same: base and tool
SERVER_V1 = _bytes(500, "server-v1")    # api layer 1 and worker layer 1
RUN_SH = _bytes(60, "run.sh")           # api (0755) and worker (0644)


def fleet_specs() -> list:
    """``shop/api:1`` (base + app + cleanup), ``shop/worker:1`` (base + app) sharing the base
    layer, ``other/tool:1`` (one layer) and ``edge/replace:1`` (a file overwritten, a file over
    a directory). See tests/test_reports.py for what each report must find."""
    import imagefactory as f

    base = f.Layer([
        f.directory("bin"), f.file("bin/busybox", _bytes(4000, "busybox-b"), 0o755),
        f.directory("etc"), f.file("etc/passwd", ETC_PASSWD),
        f.directory("etc/ssl"), f.directory("etc/ssl/certs"),
        f.file("etc/ssl/certs/ca-certificates.pem", _bytes(50, "ca")),
        f.directory("root", 0o700), f.directory("tmp", 0o1777),
        f.directory("usr"), f.directory("usr/bin"), f.directory("usr/lib"),
        f.file("usr/bin/passwd", _bytes(300, "passwd-bin"), 0o4755),
        f.file("usr/bin/wall", _bytes(200, "wall"), 0o2755, gid=5),
        f.file("usr/bin/ping", _bytes(400, "ping"), 0o755,
               pax={"SCHILY.xattr.security.capability": CAP_NET_RAW_EP.decode("latin-1")}),
        f.file("usr/lib/libc.so", LIBC),
        f.directory("var"), f.directory("var/tmp", 0o1777),
        f.file("var/tmp/scratch", _bytes(10, "scratch"), 0o666),
    ])
    app = f.Layer([
        f.directory("app", uid=1000, gid=1000),
        f.file("app/server.py", SERVER_V1),
        f.file("app/run.sh", RUN_SH, 0o755),
        f.symlink("app/current", "server.py"),
        f.file("app/.env", _bytes(20, "env")),
        f.directory("app/tls"), f.file("app/tls/server.key", _bytes(64, "key"), 0o600),
        f.directory("root/.ssh", 0o700), f.file("root/.ssh/id_rsa", _bytes(100, "rsa"), 0o600),
        f.directory("opt"), f.directory("opt/data"),
        f.file("opt/data/a", _bytes(1000, "a")), f.file("opt/data/b", _bytes(2000, "b")),
        f.directory("home"), f.directory("home/u"), f.directory("home/u/.aws"),
        f.file("home/u/.aws/credentials", _bytes(30, "aws")),
        f.file("home/u/.npmrc", _bytes(40, "npmrc")),
        f.directory("home/u/.docker"), f.file("home/u/.docker/config.json", _bytes(50, "docker")),
    ])
    cleanup = f.Layer([
        f.whiteout("root/.ssh/id_rsa"),
        f.directory("opt/data"), f.opaque("opt/data"), f.file("opt/data/c", _bytes(500, "c")),
        f.file("app/server.py", _bytes(550, "server-v2")),
    ])
    worker = f.Layer([
        f.directory("app"),
        f.file("app/server.py", SERVER_V1),
        f.file("app/worker.py", _bytes(700, "worker")),
        f.file("app/run.sh", RUN_SH, 0o644),
        f.symlink("app/current", "worker.py"),
    ])
    tool = f.Layer([
        f.directory("lib"), f.file("lib/libc.so", LIBC),
        f.directory("bin"), f.file("bin/tool", _bytes(800, "tool"), 0o755),
        f.directory("etc"), f.file("etc/passwd", ETC_PASSWD),
    ])
    # every file of this one is on a path set twice: /a is overwritten, and the file /data
    # replaces the directory /data (hiding /data/x without a whiteout)
    replace = [
        f.Layer([f.directory("data"), f.file("data/x", _bytes(10, "x")),
                 f.file("a", _bytes(10, "a10"))]),
        f.Layer([f.file("a", _bytes(20, "a20")), f.file("data", _bytes(5, "data5"))]),
    ]
    return [
        f.ImageSpec([base, app, cleanup], tags=["shop/api:1"]),
        f.ImageSpec([base, worker], tags=["shop/worker:1"]),
        f.ImageSpec([tool], tags=["other/tool:1"]),
        f.ImageSpec(replace, tags=["edge/replace:1"]),
    ]


def write_fleet(workdir: Path) -> Path:
    """Write the four fleet images into one OCI layout directory and return it."""
    import imagefactory as f

    out = Path(workdir) / "fleet-oci"
    f.write_oci_layout(out, fleet_specs())
    return out
