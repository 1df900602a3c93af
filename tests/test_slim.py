"""slim: images made of this machine's real Debian files (umoci), slimmed, then proved to run.

One base rootfs is built once per module: bash, ls (plus a hardlink to it), id, env, python3
with the few stdlib modules its start needs, a program built here with
``RUNPATH=$ORIGIN/../lib`` and its own shared library (plus a decoy of the same soname in the
default directory), the real loader behind the ``/lib64 -> /lib/...`` symlink chain,
``/etc/ld.so.cache`` written by this machine's ``ldconfig -r``, and an ``nsswitch.conf`` that
sends ``passwd`` to the ``compat`` NSS module (a library only ``dlopen`` loads). Each case is a
tag with its own config over the same layers. For each: ``layerdb slim``, ``skopeo inspect``,
``skopeo copy`` to an OCI layout, ``umoci raw unpack``, run the entrypoint with ``chroot``, then
ingest the slim image back and ``layerdb diff`` it against the original.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import imagefactory as f
import pytest

from layerdb.cli import main as cli_main
from layerdb.diff import diff_images
from layerdb.errors import LayerdbError, PathNotFound
from layerdb.ingest import ingest
from layerdb.ldcache import parse_ld_cache, parse_ld_conf

TRIPLET = "x86_64-linux-gnu"
HOST_LIBS = Path("/usr/lib") / TRIPLET
BINARIES = ("bash", "ls", "id", "env", "python3.11")
PY_START = ("_collections_abc.py", "_sitebuiltins.py", "abc.py", "codecs.py", "encodings/__init__.py",
            "encodings/aliases.py", "encodings/utf_8.py", "encodings/ascii.py", "encodings/latin_1.py",
            "genericpath.py", "io.py", "os.py", "posixpath.py", "site.py", "stat.py")
#: libraries in the image that no kept program needs: slim must leave them out
BLOAT = ("libstdc++.so.6", "libsqlite3.so.0", "libcrypto.so.3", "libssl.so.3")
LAYOUT_TAG = "base"
CASES = {
    # tag: (config flags, slim options, argv run in the chroot (None: the image's own), expected output)
    "bash": (["--config.entrypoint", "/bin/bash", "--config.cmd", "-c", "--config.cmd", "echo ok"],
             [], None, b"ok\n"),
    "ls": (["--config.cmd", "lsdup", "--config.cmd", "/"], [], None, None),
    "py": (["--config.entrypoint", "/app/hello.py"], ["--keep", "/usr/lib/python3.11"], None,
           b"hello from python\n"),
    "runpath": (["--config.entrypoint", "/opt/app/bin/hello"], [], None, b"hello from libhello\n"),
    "nss": (["--config.entrypoint", "id", "--config.cmd", "-un", "--config.user", "app"], [],
            ["--userspec=1000:1000"], b"app\n"),
}

pytestmark = pytest.mark.skipif(not Path("/usr/bin/bash").exists() or not (HOST_LIBS / "libc.so.6").exists(),
                                reason="needs a Debian/Ubuntu x86_64 host for its real binaries")


def _run(*args: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, capture_output=True, **kw)


def _needs(paths: list[Path]) -> set[Path]:
    """Every library ``ldd`` names for ``paths`` (the host's view, to copy them)."""
    out: set[Path] = set()
    for p in paths:
        for line in _run("ldd", str(p)).stdout.decode().splitlines():
            for word in line.split():
                if word.startswith("/"):
                    out.add(Path(word))
    return out


def _copy_lib(src: Path, root: Path) -> None:
    """Copy a host library into the image's /usr/lib/TRIPLET, its symlink chain kept."""
    dest = root / "usr/lib" / TRIPLET / src.name
    if dest.exists() or dest.is_symlink():
        return
    if src.is_symlink():
        target = os.readlink(src)
        os.symlink(target, dest)
        _copy_lib(src.parent / target if not target.startswith("/") else Path(target), root)
    else:
        shutil.copy2(src, dest)


def _build_rootfs(r: Path, work: Path) -> None:
    for d in ("usr/bin", f"usr/lib/{TRIPLET}", "usr/lib/python3.11/encodings", "lib64", "etc/ssl/certs",
              "etc/ld.so.conf.d", "opt/app/bin", "opt/app/lib", "app", "home/app", "tmp", "root",
              "usr/share/doc/bloat"):
        (r / d).mkdir(parents=True, exist_ok=True)
    os.symlink("usr/bin", r / "bin")
    os.symlink("usr/lib", r / "lib")
    os.symlink("usr/sbin", r / "sbin")
    os.symlink(f"/lib/{TRIPLET}/ld-linux-x86-64.so.2", r / "lib64/ld-linux-x86-64.so.2")
    bins = [Path("/usr/bin") / b for b in BINARIES]
    for b in bins:
        shutil.copy2(b, r / "usr/bin" / b.name)
    os.symlink("python3.11", r / "usr/bin/python3")
    os.link(r / "usr/bin/ls", r / "usr/bin/lsdup")
    nss = HOST_LIBS / "libnss_compat.so.2"
    for lib in sorted(_needs(bins + [nss]) | {nss} | {HOST_LIBS / b for b in BLOAT}):
        if lib.parent == Path("/lib64"):
            continue  # the loader: its /lib64 symlink is made above, the file comes via libc's dir
        _copy_lib(HOST_LIBS / lib.name, r)
    _copy_lib(HOST_LIBS / "ld-linux-x86-64.so.2", r)
    for mod in PY_START:
        shutil.copy2(Path("/usr/lib/python3.11") / mod, r / "usr/lib/python3.11" / mod)
    (r / "app/hello.py").write_text("#!/usr/bin/env python3\nprint('hello from python')\n")
    os.chmod(r / "app/hello.py", 0o755)
    # a program with RUNPATH=$ORIGIN/../lib, its library, and a decoy in the default directory
    src = work / "src"
    src.mkdir()
    (src / "lib.c").write_text('#include <stdio.h>\nvoid hello(void) { puts("hello from libhello"); }\n')
    (src / "decoy.c").write_text('#include <stdio.h>\nvoid hello(void) { puts("decoy"); }\n')
    (src / "main.c").write_text("void hello(void);\nint main(void) { hello(); return 0; }\n")
    _run("gcc", "-shared", "-fPIC", "-Wl,-soname,libhello.so.1", "-o", str(r / "opt/app/lib/libhello.so.1.0"),
         str(src / "lib.c"))
    os.symlink("libhello.so.1.0", r / "opt/app/lib/libhello.so.1")
    _run("gcc", "-shared", "-fPIC", "-Wl,-soname,libhello.so.1", "-o", str(r / f"usr/lib/{TRIPLET}/libhello.so.1"),
         str(src / "decoy.c"))
    # a program whose library is not in the image
    _run("gcc", "-shared", "-fPIC", "-Wl,-soname,liborphan.so.1", "-o", str(src / "liborphan.so.1"),
         str(src / "lib.c"))
    _run("gcc", "-o", str(r / "opt/app/bin/orphan"), str(src / "main.c"), f"-L{src}", "-l:liborphan.so.1")
    _run("gcc", "-o", str(r / "opt/app/bin/hello"), str(src / "main.c"), f"-L{r / 'opt/app/lib'}",
         "-l:libhello.so.1", "-Wl,--enable-new-dtags", "-Wl,-rpath,$ORIGIN/../lib")
    (r / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\napp:x:1000:1000::/home/app:/bin/bash\n")
    (r / "etc/group").write_text("root:x:0:\napp:x:1000:\n")
    (r / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    os.chmod(r / "etc/shadow", 0o640)
    (r / "etc/nsswitch.conf").write_text("passwd: compat\ngroup: compat\nhosts: files dns\n")
    (r / "etc/ssl/certs/ca-certificates.crt").write_text("-----BEGIN CERTIFICATE-----\nnot a cert\n")
    (r / "etc/ld.so.conf").write_text("include /etc/ld.so.conf.d/*.conf\n")
    (r / f"etc/ld.so.conf.d/{TRIPLET}.conf").write_text(
        f"/usr/local/lib/{TRIPLET}\n/lib/{TRIPLET}\n/usr/lib/{TRIPLET}\n")
    (r / "usr/share/doc/bloat/big.txt").write_bytes(b"x" * (1 << 20))
    _run("ldconfig", "-r", str(r))


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> dict[str, str]:
    """The OCI layout with one tag per case, and a catalog holding all of them."""
    if not f.have_tools():
        pytest.skip("umoci and skopeo are needed")
    if not shutil.which("gcc") or not shutil.which("ldconfig"):
        pytest.skip("gcc and ldconfig are needed to build the test image")
    work = tmp_path_factory.mktemp("slim")
    layout, bundle = work / "oci", work / "bundle"
    img = f"{layout}:{LAYOUT_TAG}"
    _run("umoci", "init", "--layout", str(layout))
    _run("umoci", "new", "--image", img)
    _run("umoci", "unpack", "--rootless", "--image", img, str(bundle))
    _build_rootfs(bundle / "rootfs", work)
    f._settle(bundle / "rootfs")
    _run("umoci", "repack", "--refresh-bundle", "--history.created", f.CREATED,
         "--history.created_by", "COPY rootfs /", "--image", img, str(bundle))
    for tag, (flags, *_rest) in CASES.items():
        _run("umoci", "config", "--image", img, "--tag", tag, "--created", f.CREATED,
             "--history.created", f.CREATED, "--architecture", "amd64", "--os", "linux",
             "--config.env", "PATH=/usr/local/bin:/usr/bin:/bin", *flags)
    cat = work / "cat"
    rep = ingest([str(layout)], catalog_root=str(cat), jobs=1)
    assert not rep.failed, rep.failed[0].error
    return {"layout": str(layout), "cat": str(cat), "work": str(work)}


def _cli(*args: str) -> int:
    try:
        cli_main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def _unpack(ref: str, work: Path, tag: str) -> Path:
    """skopeo copy the image to an OCI layout, umoci raw unpack it: the rootfs."""
    layout, rootfs = work / f"{tag}-layout", work / f"{tag}-rootfs"
    _run("skopeo", "--insecure-policy", "copy", "-q", ref, f"oci:{layout}:{tag}")
    _run("umoci", "raw", "unpack", "--image", f"{layout}:{tag}", str(rootfs))
    return rootfs


@pytest.mark.slow
@pytest.mark.parametrize("tag,fmt", [(t, "oci-archive") for t in CASES] + [("bash", "docker-archive")])
def test_slim_image_runs_and_keeps_bytes(base, tmp_path, tag, fmt):
    chroot, unshare = shutil.which("chroot"), shutil.which("unshare")
    if os.geteuid() != 0 or chroot is None or unshare is None:
        pytest.skip("running the slim image with chroot needs root, chroot(8) and unshare(1)")
    _flags, opts, chroot_opts, expected = CASES[tag]
    cat = base["cat"]
    out = tmp_path / f"{tag}.tar"
    name = f"slim/{tag}:{fmt}"
    assert _cli("slim", "--catalog", cat, "--image", tag, "-o", str(out), "--tag", name, "--format", fmt,
                *opts) == 0
    ref = f"{fmt}:{out}"
    info = json.loads(_run("skopeo", "inspect", ref).stdout)
    assert len(info["Layers"]) == 1 and info["Architecture"] == "amd64"
    rootfs = _unpack(ref, tmp_path, tag)
    cfg = json.loads(_run("skopeo", "inspect", "--config", ref).stdout)["config"]
    argv = (cfg.get("Entrypoint") or []) + (cfg.get("Cmd") or [])
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin"}
    # as a runtime does, /proc is mounted (glibc finds $ORIGIN of the program through it)
    (rootfs / "proc").mkdir()
    run = subprocess.run([unshare, "--mount", f"--mount-proc={rootfs}/proc", chroot, *(chroot_opts or []),
                          str(rootfs), *argv], capture_output=True, env=env, cwd="/")
    assert run.returncode == 0, run.stderr.decode()
    if expected is None:  # ls /: the slim root's own top level, in byte order
        expected = "".join(n + "\n" for n in sorted(os.listdir(rootfs))).encode()  # proc too
    assert run.stdout == expected
    # nothing that is not needed came along
    names = {p.name for p in rootfs.rglob("*") if p.parent != rootfs / "proc"}
    assert not names & set(BLOAT) and "shadow" not in names and "big.txt" not in names
    # ingested back, every kept path is the original's, in content, mode, owner and link
    rep = ingest([str(out)], catalog_root=cat, jobs=1)
    assert not rep.failed, rep.failed[0].error
    d = diff_images(tag, name, catalog_root=cat)
    changes = {r[0] for r in d.rows}
    assert changes == {"removed"}, [r for r in d.rows if r[0] != "removed"]


def _plan_rows(cat: str, image: str, *extra: str) -> dict[str, str]:
    from layerdb.slim import slim as run

    res = run(image, None, catalog_root=cat, dry_run=True, keep=list(extra))
    return {path: reason for path, _t, _s, reason in res.plan.rows()}


def test_reasons(base):
    rows = _plan_rows(base["cat"], "runpath")
    assert rows["/opt/app/bin/hello"] == "entrypoint"
    assert rows["/opt/app/lib/libhello.so.1"] == "symlink to /opt/app/lib/libhello.so.1.0"
    assert rows["/opt/app/lib/libhello.so.1.0"] == "needed by /opt/app/bin/hello"
    assert f"/usr/lib/{TRIPLET}/libhello.so.1" not in rows  # RUNPATH comes before the cache
    assert rows["/lib64/ld-linux-x86-64.so.2"].startswith("symlink to ")
    assert rows["/lib"] == f"symlink to /usr/lib/{TRIPLET}/ld-linux-x86-64.so.2"
    assert rows[f"/usr/lib/{TRIPLET}/ld-linux-x86-64.so.2"] == "interpreter of /opt/app/bin/hello"
    assert rows[f"/usr/lib/{TRIPLET}/libc.so.6"].startswith("needed by ")
    assert rows["/etc/ld.so.cache"].startswith("run-time:")
    assert rows[f"/usr/lib/{TRIPLET}/libnss_compat.so.2"].startswith("run-time: NSS module for passwd")
    assert "/etc/shadow" not in rows and "/usr/bin/bash" not in rows
    py = _plan_rows(base["cat"], "py")
    assert py["/usr/bin/env"] == "interpreter of /app/hello.py"
    assert py["/usr/bin/python3"] == "symlink to /usr/bin/python3.11"
    assert py["/usr/bin/python3.11"] == "interpreter of /app/hello.py (via /usr/bin/env)"
    ls = _plan_rows(base["cat"], "ls")
    assert ls["/usr/bin/lsdup"] == "entrypoint" and ls["/usr/bin/ls"] == "hardlink target of /usr/bin/lsdup"


def test_reproducible_and_formats(base, tmp_path):
    cat = base["cat"]
    outs = []
    for name in ("a.tar", "b.tar"):
        assert _cli("slim", "--catalog", cat, "--image", "bash", "-o", str(tmp_path / name)) == 0
        outs.append((tmp_path / name).read_bytes())
    assert outs[0] == outs[1]
    for fmt, comp in (("docker-archive", "none"), ("oci-archive", "zstd"), ("oci", "none")):
        a, b = tmp_path / f"{fmt}-{comp}-1", tmp_path / f"{fmt}-{comp}-2"
        for o in (a, b):
            assert _cli("slim", "--catalog", cat, "--image", "bash", "-o", str(o), "--format", fmt,
                        "--compression", comp, "--tag", "x/bash:slim") == 0
        if fmt == "oci":
            files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
            assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
            assert all((a / p).read_bytes() == (b / p).read_bytes() for p in files)
            ref = f"oci:{a}:slim"
        else:
            assert a.read_bytes() == b.read_bytes()
            ref = f"{fmt}:{a}"
        info = json.loads(_run("skopeo", "inspect", ref).stdout)
        assert len(info["Layers"]) == 1
    # the docker-archive names its image and skopeo reads its one uncompressed layer
    with tarfile.open(tmp_path / "docker-archive-none-1") as tf:
        manifest = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
    assert manifest[0]["RepoTags"] == ["x/bash:slim"]


def test_config_and_history(base, tmp_path):
    out = tmp_path / "nss"
    assert _cli("slim", "--catalog", base["cat"], "--image", "nss", "-o", str(out), "--format", "oci") == 0
    index = json.loads((out / "index.json").read_text())
    mdesc = index["manifests"][0]
    # the default name: the source's ref (the bare tag "nss" of layout "oci", that is oci:nss)
    # with -slim on its tag
    assert mdesc["annotations"] == {"io.containerd.image.name": "oci:nss-slim",
                                    "org.opencontainers.image.ref.name": "nss-slim"}
    manifest = json.loads((out / "blobs/sha256" / mdesc["digest"][7:]).read_text())
    config = json.loads((out / "blobs/sha256" / manifest["config"]["digest"][7:]).read_text())
    assert config["config"]["User"] == "app"
    assert config["config"]["Entrypoint"] == ["id"] and config["config"]["Cmd"] == ["-un"]
    assert config["architecture"] == "amd64" and config["created"] == f.CREATED
    assert len(config["history"]) == 1 and "layerdb slim" in config["history"][0]["created_by"]
    assert len(config["rootfs"]["diff_ids"]) == 1


def test_bad_input_one_line_nothing_written(base, tmp_path, capsys):
    cat = base["cat"]
    out = tmp_path / "o.tar"
    assert _cli("slim", "--catalog", cat, "--image", "bash", "-o", str(out), "--keep", "/nope") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--keep /nope" in err
    assert not out.exists() and os.listdir(tmp_path) == []
    out.write_bytes(b"mine")
    assert _cli("slim", "--catalog", cat, "--image", "bash", "-o", str(out)) == 2
    assert "already exists" in capsys.readouterr().err and out.read_bytes() == b"mine"
    assert _cli("slim", "--catalog", cat, "--image", "bash", "-o", str(out), "--force") == 0
    assert out.read_bytes() != b"mine"
    capsys.readouterr()
    assert _cli("slim", "--catalog", cat, "--image", LAYOUT_TAG, "-o", str(tmp_path / "x.tar")) == 1
    err = capsys.readouterr().err
    assert "no Entrypoint or Cmd" in err and err.count("\n") == 1
    assert _cli("slim", "--catalog", cat, "--image", "bash", "-o", str(tmp_path / "y.tar"), "--tag", "Bad Name") == 2
    err = capsys.readouterr().err
    assert "--tag 'Bad Name': not an image name" in err and err.count("\n") == 1
    assert sorted(os.listdir(tmp_path)) == ["o.tar"]


def test_missing_library_named_then_allowed(base, tmp_path, capsys):
    cat = base["cat"]
    out = tmp_path / "o.tar"
    args = ["slim", "--catalog", cat, "--image", "bash", "--no-entrypoint", "--keep", "/opt/app/bin/orphan",
            "-o", str(out)]
    assert _cli(*args) == 1
    err = capsys.readouterr().err
    assert "/opt/app/bin/orphan needs liborphan.so.1, which the image does not have" in err
    assert err.count("\n") == 1 and not out.exists()
    assert _cli(*args, "--allow-missing") == 0
    assert "warning: /opt/app/bin/orphan needs liborphan.so.1" in capsys.readouterr().err
    assert out.exists()


def test_no_entrypoint_keeps_only_named(base):
    from layerdb.slim import slim as run

    res = run("bash", None, catalog_root=base["cat"], dry_run=True, entrypoint=False,
              keep=["/usr/bin/id"])
    rows = {p: r for p, _t, _s, r in res.plan.rows()}
    assert rows["/usr/bin/id"] == "--keep"
    assert "/usr/bin/bash" not in rows and "/etc/passwd" not in rows
    assert rows[f"/usr/lib/{TRIPLET}/libselinux.so.1"] == "needed by /usr/bin/id"


def test_keep_sql(base):
    from layerdb.slim import slim as run

    res = run("bash", None, catalog_root=base["cat"], dry_run=True, entrypoint=False,
              keep_sql="select path from fs where image_id = :image and path like '/etc/ld.so.conf%'"
                       " and type = 'file'")
    rows = {p: r for p, _t, _s, r in res.plan.rows()}
    assert rows["/etc/ld.so.conf"] == "--keep-sql"
    assert rows[f"/etc/ld.so.conf.d/{TRIPLET}.conf"] == "--keep-sql"
    with pytest.raises(LayerdbError, match="query (failed|refused)"):
        run("bash", None, catalog_root=base["cat"], dry_run=True, entrypoint=False,
            keep_sql="delete from image_meta")
    with pytest.raises(PathNotFound):
        run("bash", None, catalog_root=base["cat"], dry_run=True, entrypoint=False,
            keep_sql="select '/no/such/path'")


def test_dry_run_cli_lists_reasons_and_sizes(base, capsys):
    assert _cli("slim", "--catalog", base["cat"], "--image", "bash", "--dry-run", "--list-format", "csv") == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0] == "path,type,size,reason"
    assert "/usr/bin/bash,file," in out and ",entrypoint" in out
    assert "would keep" in err and "compressed" in err


# ld.so.cache in every format this machine's ldconfig writes ---------------------------------

@pytest.mark.parametrize("fmt", ["old", "compat", "new"])
def test_ld_cache_formats(tmp_path, fmt):
    if not shutil.which("ldconfig"):
        pytest.skip("ldconfig is needed")
    (tmp_path / "etc").mkdir()
    (tmp_path / "lib").mkdir()
    shutil.copy2(HOST_LIBS / "libz.so.1", tmp_path / "lib" / "libz.so.1")
    shutil.copy2(HOST_LIBS / "libc.so.6", tmp_path / "lib" / "libc.so.6")
    (tmp_path / "etc/ld.so.conf").write_text("/lib\n")
    r = subprocess.run(["ldconfig", "-r", str(tmp_path), "-c", fmt], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"this ldconfig cannot write the {fmt} format: {r.stderr.decode().strip()}")
    entries = parse_ld_cache((tmp_path / "etc/ld.so.cache").read_bytes())
    assert {(e.soname, e.path) for e in entries} >= {("libz.so.1", "/lib/libz.so.1"),
                                                    ("libc.so.6", "/lib/libc.so.6")}
    assert all(e.flags & 0xFF == 3 for e in entries)  # FLAG_ELF_LIBC6


def test_ld_cache_rejects_garbage():
    from layerdb.ldcache import LdCacheError

    with pytest.raises(LdCacheError):
        parse_ld_cache(b"not a cache")
    with pytest.raises(LdCacheError):
        parse_ld_cache(b"glibc-ld.so.cache1.1" + b"\xff" * 40)


def test_ld_conf():
    dirs, inc = parse_ld_conf("# c\ninclude ld.so.conf.d/*.conf\n/usr/local/lib\n/opt/x=libc6 /opt/y\nhwcap 0 a\n")
    assert dirs == ["/usr/local/lib", "/opt/x", "/opt/y"] and inc == ["/etc/ld.so.conf.d/*.conf"]


def test_elf_headers_of_a_real_binary():
    from layerdb.elf import read_elf

    with open("/usr/bin/bash", "rb") as fh:
        info = read_elf(fh, "bash")
    assert info.interp == "/lib64/ld-linux-x86-64.so.2" and "libc.so.6" in info.needed
    from layerdb.elf import ElfError

    with pytest.raises(ElfError):
        read_elf(io.BytesIO(b"\x7fELF" + b"\x02\x01\x01" + b"\0" * 9 + b"\xff" * 20), "bad")


# The loader's search without ld.so.cache, DT_RPATH inheritance, hostile ELF ----------------

XATTRS = {"SCHILY.xattr.security.capability": "\x01\x00\x00\x02\x00\x20" + "\x00" * 14,
          "SCHILY.xattr.user.note": "kept"}


def _host(path: str) -> bytes:
    return Path(path).read_bytes()


@pytest.fixture(scope="module")
def tar_cat(tmp_path_factory) -> str:
    """Images written with tarfile (no umoci): real host binaries in unusual places.

    - ``conf``: ``/usr/bin/id`` whose ``libselinux.so.1`` is only in ``/opt/weird/lib``, named
      by ``/etc/ld.so.conf.d/weird.conf`` (no ``ld.so.cache``); ``libpcre2-8.so.0`` in the
      default directory, with a same-named file that is not ELF earlier in the search.
    - ``rpath``: a program built with ``DT_RPATH=$ORIGIN/../deps`` (old dtags) needing
      ``libmid.so``, which has no RPATH and needs ``libleaf.so``: the loader finds the leaf
      through the program's RPATH.
    - ``garbage``: an entrypoint that starts like ELF and is not.
    """
    if not shutil.which("gcc"):
        pytest.skip("gcc is needed")
    work = tmp_path_factory.mktemp("tarimg")
    ld, libc = "usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "usr/lib/x86_64-linux-gnu/libc.so.6"
    base = [f.directory("usr"), f.directory("usr/bin"), f.directory("usr/lib"),
            f.directory("usr/lib/x86_64-linux-gnu"), f.directory("lib64"), f.directory("etc"),
            f.symlink("lib", "usr/lib"), f.symlink("bin", "usr/bin"),
            f.symlink("lib64/ld-linux-x86-64.so.2", "/" + ld),
            f.file(ld, _host("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), 0o755),
            f.file(libc, _host("/usr/lib/x86_64-linux-gnu/libc.so.6"), 0o755)]
    conf = base + [
        f.file("usr/bin/id", _host("/usr/bin/id"), 0o755),
        f.directory("opt"), f.directory("opt/weird"), f.directory("opt/weird/lib"),
        f.file("opt/weird/lib/libselinux.so.1", _host(str(HOST_LIBS / "libselinux.so.1"))),
        f.file("usr/lib/x86_64-linux-gnu/libpcre2-8.so.0",
               Path(HOST_LIBS / "libpcre2-8.so.0").resolve().read_bytes()),
        f.directory("etc/ld.so.conf.d"),
        f.file("etc/ld.so.conf", b"include /etc/ld.so.conf.d/*.conf\n"),
        f.file("etc/ld.so.conf.d/weird.conf", b"/opt/weird/lib\n/opt/notelf\n"),
        f.directory("opt/notelf"), f.file("opt/notelf/libpcre2-8.so.0", b"not a library\n")]
    src = work / "src"
    src.mkdir()
    (src / "leaf.c").write_text("int leaf(void) { return 7; }\n")
    (src / "mid.c").write_text("int leaf(void);\nint mid(void) { return leaf(); }\n")
    (src / "main.c").write_text("int mid(void);\nint main(void) { return mid(); }\n")
    _run("gcc", "-shared", "-fPIC", "-Wl,-soname,libleaf.so", "-o", str(src / "libleaf.so"), str(src / "leaf.c"))
    _run("gcc", "-shared", "-fPIC", "-Wl,-soname,libmid.so", "-o", str(src / "libmid.so"), str(src / "mid.c"),
         f"-L{src}", "-lleaf")
    _run("gcc", "-o", str(src / "prog"), str(src / "main.c"), f"-L{src}", "-lmid", "-Wl,--disable-new-dtags",
         "-Wl,-rpath,$ORIGIN/../deps", "-Wl,-rpath-link," + str(src))
    rpath = base + [f.directory("app"), f.directory("app/bin"), f.directory("app/deps"),
                    f.file("app/bin/prog", (src / "prog").read_bytes(), 0o755, pax=XATTRS),
                    f.file("app/deps/libmid.so", (src / "libmid.so").read_bytes()),
                    f.file("app/deps/libleaf.so", (src / "libleaf.so").read_bytes())]
    garbage = base + [f.file("usr/bin/bad", b"\x7fELF\x02\x01\x01" + b"\0" * 9 + b"\xff" * 64, 0o755)]
    ldpath = [m for m in conf if not m[0].name.startswith("etc/ld.so.conf")]
    specs = [f.ImageSpec([f.Layer(conf, compression="gzip")], tags=["conf"], cmd=("id", "-un")),
             f.ImageSpec([f.Layer(ldpath, compression="gzip")], tags=["ldpath"], cmd=("id", "-un"),
                         env=("PATH=/usr/bin", "LD_LIBRARY_PATH=/nowhere:opt/weird/lib")),
             f.ImageSpec([f.Layer(ldpath, compression="gzip")], tags=["noldpath"], cmd=("id", "-un"),
                         env=("PATH=/usr/bin",)),
             f.ImageSpec([f.Layer(rpath, compression="zstd")], tags=["rpath"], cmd=("/app/bin/prog",)),
             f.ImageSpec([f.Layer(garbage, compression="none")], tags=["garbage"], cmd=("/usr/bin/bad",))]
    f.write_oci_layout(work / "layout", specs)
    cat = work / "cat"
    rep = ingest([str(work / "layout")], catalog_root=str(cat), jobs=1)
    assert not rep.failed, rep.failed[0].error
    return str(cat)


def test_xattrs_carried(tar_cat, tmp_path):
    out = tmp_path / "o.tar"
    assert _cli("slim", "--catalog", tar_cat, "--image", "rpath", "-o", str(out), "--compression", "none") == 0
    with tarfile.open(out) as outer:
        index = json.load(outer.extractfile("index.json"))  # type: ignore[arg-type]
        manifest = json.load(outer.extractfile(  # type: ignore[arg-type]
            "blobs/sha256/" + index["manifests"][0]["digest"][7:]))
        layer = outer.extractfile("blobs/sha256/" + manifest["layers"][0]["digest"][7:])
        with tarfile.open(fileobj=layer) as tf:  # type: ignore[arg-type]
            prog = tf.getmember("app/bin/prog")
    assert {k: v for k, v in prog.pax_headers.items() if k.startswith("SCHILY.")} == XATTRS
    rep = ingest([str(out)], catalog_root=tar_cat, jobs=1)
    assert not rep.failed, rep.failed[0].error
    from layerdb.catalog import Catalog

    with Catalog(tar_cat) as c:
        rows = c.query("select image, xattrs from fs where path = '/app/bin/prog' order by image")[1]
    assert [r[0] for r in rows] == ["layout:rpath", "layout:rpath-slim"] and rows[0][1] == rows[1][1]
    assert rows[0][1]["user.note"] == b"kept"


def test_ld_so_conf_without_cache(tar_cat):
    rows = _plan_rows(tar_cat, "conf")
    assert rows["/opt/weird/lib/libselinux.so.1"] == "needed by /usr/bin/id"
    assert rows[f"/usr/lib/{TRIPLET}/libpcre2-8.so.0"] == "needed by /opt/weird/lib/libselinux.so.1"
    assert "/opt/notelf/libpcre2-8.so.0" not in rows  # not ELF: the loader passes it over
    assert rows["/lib64/ld-linux-x86-64.so.2"] == f"symlink to /usr/lib/{TRIPLET}/ld-linux-x86-64.so.2"
    assert "/etc/ld.so.cache" not in rows


def test_ld_library_path_of_the_image(tar_cat):
    rows = _plan_rows(tar_cat, "ldpath")  # relative entries are from WorkingDir (here /)
    assert rows["/opt/weird/lib/libselinux.so.1"] == "needed by /usr/bin/id"
    with pytest.raises(LayerdbError, match="/usr/bin/id needs libselinux.so.1, which the image does not have"):
        _plan_rows(tar_cat, "noldpath")  # the same files, no LD_LIBRARY_PATH, no ld.so.conf


def test_rpath_of_the_loader_is_searched(tar_cat):
    rows = _plan_rows(tar_cat, "rpath")
    assert rows["/app/deps/libmid.so"] == "needed by /app/bin/prog"
    assert rows["/app/deps/libleaf.so"] == "needed by /app/deps/libmid.so"


def test_garbage_elf_is_one_line(tar_cat, tmp_path, capsys):
    out = tmp_path / "o.tar"
    assert _cli("slim", "--catalog", tar_cat, "--image", "garbage", "-o", str(out)) == 1
    err = capsys.readouterr().err
    assert err.startswith("layerdb: error: /usr/bin/bad: unreadable ELF headers") and err.count("\n") == 1
    assert not out.exists()


def test_cache_bytes_are_verified(base):
    import dataclasses

    from layerdb.errors import DigestMismatch
    from layerdb.merged import open_view
    from layerdb.slim import ContentReader

    view = open_view(base["cat"], "bash")
    img = view.resolve_image("bash")
    e = view.lookup(img.id, ["/etc/passwd"])["/etc/passwd"]
    view.close()
    reader = ContentReader(base["cat"])
    try:
        assert b"".join(reader.iter_content(e)).startswith(b"root:x:0:0")
        with pytest.raises(DigestMismatch):
            b"".join(reader.iter_content(dataclasses.replace(e, sha256="0" * 64)))
    finally:
        reader.close()
