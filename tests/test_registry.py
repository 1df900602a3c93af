"""Ingest straight from a real registry (Debian's docker-registry on 127.0.0.1, images pushed
with skopeo): the merged view equals that of the archive skopeo writes of the same image;
platforms, tags, repositories, auth (htpasswd basic, a bearer realm), and a proxy that cuts,
corrupts, throttles, redirects and dies."""
from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import time

import imagefactory as f
import pytest
import registry_fixture as rf
from catalog_snapshot import snapshot, tmp_is_clean
from conformance import assert_valid_image
from fake_helpers import calls, write_helper

from layerdb.catalog import Catalog
from layerdb.digest import Digest
from layerdb.errors import SourceError
from layerdb.ingest import ingest
from layerdb.model import Platform
from layerdb.sources import SourceOptions, expand, open_source
from layerdb.sources.registry import Auth, Endpoint, RegistryBlob, parse_reference

pytestmark = pytest.mark.skipif(not rf.have_registry() and not os.environ.get("CI"),
                                reason="docker-registry and skopeo are needed")

USER, PASSWORD = "alice", "s3cret-pw"


@pytest.fixture(scope="module")
def reg(umoci_images, tmp_path_factory):
    """One registry for the module: app/gzip:v1,v2,v3 and app/zstd:v1 (umoci image, gzip and
    zstd layers), app/docker:v1 (Docker v2s2 manifest), app/multi:v1 (amd64+arm64 index)."""
    if not rf.have_registry():
        pytest.fail("docker-registry is missing; scripts/setup.sh installs it")
    work = tmp_path_factory.mktemp("registry")
    r = rf.Registry(work / "reg")
    try:
        r.push(f"oci:{umoci_images['oci-gzip']}:v1", "app/gzip:v1")
        for tag in ("v2", "v3"):
            r.push(f"oci:{umoci_images['oci-gzip']}:v1", f"app/gzip:{tag}")
        r.push(f"oci:{umoci_images['oci-zstd']}:v1", "app/zstd:v1")
        r.push(f"docker-archive:{umoci_images['docker-archive']}", "app/docker:v1", "--format", "v2s2")
        f.write_oci_layout(work / "multi", [f.IndexSpec(
            [f.sample_image(platform="linux/amd64"),
             f.sample_image(platform="linux/arm64", compressions=("zstd", "gzip", "none"))],
            tags=["multi"])])
        r.push(f"oci:{work / 'multi'}:multi", "app/multi:v1", "--all")
        yield r
    finally:
        r.stop()


@pytest.fixture()
def opts(tmp_path):
    return SourceOptions(tls_verify=False, retries=3, backoff=0.05, timeout=10,
                         cache_dir=str(tmp_path / "json-cache"))


@pytest.fixture()
def proxy(reg):
    p = rf.Proxy(reg.host)
    yield p
    p.stop()


def _fs(root, image_id=None):
    with Catalog(str(root)) as cat:
        where = "where image_id = $i" if image_id else ""
        _, rows = cat.query(
            "select image_id, path, type, size, mode, uid, gid, coalesce(linkname, ''), "
            f"coalesce(sha256, ''), position from fs {where} order by image_id, path",
            {"i": image_id} if image_id else None)
    return rows


def _ids(root):
    with Catalog(str(root)) as cat:
        _, rows = cat.query("select id, platform, source from images order by platform")
    return rows


@pytest.mark.parametrize("repo,archive", [("app/gzip:v1", "oci-archive"),
                                          ("app/zstd:v1", "oci-archive"),
                                          ("app/docker:v1", "docker-archive")])
def test_merged_view_equals_the_archive_skopeo_writes(reg, opts, tmp_path, repo, archive):
    rep = ingest([f"docker://{reg.host}/{repo}"], catalog_root=str(tmp_path / "a"),
                 jobs=2 if "gzip" in repo else 1, options=opts)
    assert not rep.failed, rep.failed[0].error
    tar = tmp_path / "copy.tar"
    reg.pull(repo, f"{archive}:{tar}" + (f":x/{repo}" if archive == "docker-archive" else ""))
    rep2 = ingest([str(tar)], catalog_root=str(tmp_path / "b"), jobs=1)
    assert not rep2.failed, rep2.failed[0].error
    (img_a, plat, source), = _ids(tmp_path / "a")
    (img_b, _, _), = _ids(tmp_path / "b")
    assert source == f"docker://{reg.host}/{repo.split(':')[0]}@{img_a}"
    a = [r[1:] for r in _fs(tmp_path / "a", img_a)]
    b = [r[1:] for r in _fs(tmp_path / "b", img_b)]
    assert a == b and len(a) > 20
    if archive == "oci-archive":  # the same manifest bytes: the same image id
        assert img_a == img_b
    assert tmp_is_clean(tmp_path / "a")


def test_registry_source_passes_conformance(reg, opts, scratch):
    src = open_source(f"docker://{reg.host}/app/zstd:v1", str(scratch), opts)
    try:
        images = list(src.images())
    finally:
        src.close()
    assert len(images) == 1
    for img in images:
        assert_valid_image(img)
        blob = img.layers[0].blob
        assert isinstance(blob, RegistryBlob)
        assert pickle.loads(pickle.dumps(blob)) == blob


@pytest.mark.parametrize("kw,want", [
    ({}, ["linux/amd64"]),  # the host's platform (the CI machines are amd64)
    ({"platform": Platform("linux", "arm64")}, ["linux/arm64"]),
    ({"all_platforms": True}, ["linux/amd64", "linux/arm64"]),
])
def test_index_platforms(reg, opts, scratch, kw, want):
    from dataclasses import replace

    src = open_source(f"docker://{reg.host}/app/multi:v1", str(scratch), replace(opts, **kw))
    try:
        got = sorted(str(i.platform) for i in src.images())
    finally:
        src.close()
    assert got == want


def test_absent_platform_lists_those_present(reg, opts, scratch):
    from dataclasses import replace

    src = open_source(f"docker://{reg.host}/app/multi:v1", str(scratch),
                      replace(opts, platform=Platform("linux", "s390x")))
    with pytest.raises(SourceError, match=r"no image for platform linux/s390x.*linux/amd64, linux/arm64"):
        list(src.images())
    src.close()


def test_all_tags_and_all_repositories_follow_pagination(reg, opts, proxy):
    from dataclasses import replace

    small = replace(opts, page_size=1, all_tags=True)
    got = [p for p, e in expand([f"docker://{proxy.host}/app/gzip"], small)]
    assert got == [f"docker://{proxy.host}/app/gzip:{t}" for t in ("v1", "v2", "v3")]
    every = [p for p, e in expand([f"docker://{proxy.host}"], replace(small, all_repositories=True))]
    assert sorted(every) == sorted(
        [f"docker://{proxy.host}/app/{r}" for r in
         ("docker:v1", "gzip:v1", "gzip:v2", "gzip:v3", "multi:v1", "zstd:v1")])
    # distribution 2.8 pages its catalog (n=1: one repository a page, Link followed); its
    # tags list ignores n and answers in one page
    assert proxy.count(lambda m, p: p.startswith("/v2/_catalog")) == 4


def test_rescan_of_unchanged_repository_costs_only_manifest_requests(reg, opts, proxy, tmp_path):
    from dataclasses import replace

    o = replace(opts, all_tags=True)
    first = ingest([f"docker://{proxy.host}/app/gzip"], catalog_root=str(tmp_path), options=o, jobs=2)
    assert not first.failed and len(first.archives) == 3
    assert sum(a.new_layers for a in first.archives) == 5  # three tags, one image, read once
    before = snapshot(tmp_path)
    proxy.requests.clear()
    again = ingest([f"docker://{proxy.host}/app/gzip"], catalog_root=str(tmp_path), options=o, jobs=1)
    assert not again.failed
    paths = [p for _, p, _, _ in proxy.requests]
    assert not [p for p in paths if "/blobs/" in p]
    assert len([p for p in paths if "/manifests/" in p]) == 3
    assert snapshot(tmp_path) == before


def test_cached_layer_is_never_downloaded(reg, opts, proxy, tmp_path, umoci_images):
    ingest([umoci_images["oci-gzip"]], catalog_root=str(tmp_path), jobs=1)  # the same layers, from a file
    rep = ingest([f"docker://{proxy.host}/app/zstd:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert not rep.failed and rep.archives[0].new_images == 1
    blobs = [p for _, p, _, _ in proxy.requests if "/blobs/" in p]
    assert len(blobs) == 1  # the config only (zstd blobs, but the diff_ids are cached)


@pytest.fixture(scope="module")
def private(umoci_images, tmp_path_factory):
    """A second registry, with htpasswd basic auth (USER, PASSWORD): private/app:v1 and :v2
    (one image)."""
    r = rf.Registry(tmp_path_factory.mktemp("private") / "reg", htpasswd=(USER, PASSWORD))
    try:
        for tag in ("v1", "v2"):
            r.push(f"oci:{umoci_images['oci-gzip']}:v1", f"private/app:{tag}")
        yield r
    finally:
        r.stop()


@pytest.fixture()
def bindir(tmp_path, monkeypatch):
    """No auth file of the machine's is read, no cache of the machine's used (settings read
    again); returns a directory first on PATH, for fake credential helpers."""
    from layerdb.settings import settings

    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LAYERDB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("LAYERDB_REGISTRY_RETRIES", "2")
    monkeypatch.setenv("LAYERDB_REGISTRY_BACKOFF", "0.05")
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    settings.cache_clear()
    yield d
    settings.cache_clear()


def _b64(user, password):
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def _cli(*args):
    """``layerdb ingest -q -j 1 ARGS`` in this process (fake helpers' timeouts can be
    shortened): (exit code, stdout, stderr)."""
    from click.testing import CliRunner

    from layerdb.cli import cli

    res = CliRunner().invoke(cli, ["ingest", "-q", "-j", "1", "--tls-verify=false", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    return res.exit_code, res.stdout, res.stderr


def test_basic_auth_htpasswd(private, tmp_path, opts, bindir, monkeypatch):
    from dataclasses import replace

    r = private
    ref = f"docker://{r.host}/private/app:v1"
    rep = ingest([ref], catalog_root=str(tmp_path / "c0"), options=opts, jobs=1)
    assert "authentication required" in str(rep.archives[0].error)
    bad = ingest([ref], catalog_root=str(tmp_path / "c0"), options=replace(opts, creds=f"{USER}:nope"))
    assert "authentication failed" in str(bad.archives[0].error)
    assert not (tmp_path / "c0" / "catalog.duckdb").exists() or not _ids(tmp_path / "c0")
    ok = ingest([ref], catalog_root=str(tmp_path / "c1"), jobs=2,
                options=replace(opts, creds=f"{USER}:{PASSWORD}"))
    assert not ok.failed, ok.failed[0].error
    auth = tmp_path / "auth.json"
    token = _b64(USER, PASSWORD)
    auth.write_text(json.dumps({"auths": {r.host: {"auth": token}}}))
    monkeypatch.setenv("REGISTRY_AUTH_FILE", str(auth))
    ok2 = ingest([ref], catalog_root=str(tmp_path / "c2"), jobs=2, options=opts)
    assert not ok2.failed, ok2.failed[0].error
    assert _fs(tmp_path / "c1") == _fs(tmp_path / "c2")
    # credentials are never stored in the catalog
    for p in (tmp_path / "c1").rglob("*"):
        if p.is_file():
            assert PASSWORD.encode() not in p.read_bytes() and token.encode() not in p.read_bytes()


def test_cred_helpers_and_store_authenticate(private, tmp_path, opts, bindir, monkeypatch, umoci_images):
    from dataclasses import replace

    refs = [f"docker://{private.host}/private/app:{t}" for t in ("v1", "v2")]
    ok = ingest(refs[:1], catalog_root=str(tmp_path / "c1"), jobs=1,
                options=replace(opts, creds=f"{USER}:{PASSWORD}"))
    assert not ok.failed, ok.failed[0].error
    write_helper(bindir, "test", user=USER, secret=PASSWORD)
    write_helper(bindir, "store", user=USER, secret=PASSWORD)
    docker = tmp_path / "docker"
    docker.mkdir()
    monkeypatch.setenv("DOCKER_CONFIG", str(docker))
    # credHelpers beats the (wrong) auths entry and the store of the same file
    (docker / "config.json").write_text(json.dumps({
        "credHelpers": {private.host: "test"}, "credsStore": "store",
        "auths": {private.host: {"auth": _b64(USER, "wrong")}}}))
    rep = ingest(refs, catalog_root=str(tmp_path / "c2"), jobs=2, options=opts)
    assert not rep.failed, rep.failed[0].error
    assert calls(bindir, "test") == [{"argv": ["get"], "stdin": private.host}]  # once for both
    assert calls(bindir, "store") == []
    # the store alone (what docker login writes with one); a local archive asks nothing
    (docker / "config.json").write_text(json.dumps({"auths": {private.host: {}}, "credsStore": "store"}))
    rep = ingest([umoci_images["oci-archive"], refs[0]], catalog_root=str(tmp_path / "c3"), jobs=2,
                 options=opts)
    assert not rep.failed, rep.failed[0].error
    assert calls(bindir, "store") == [{"argv": ["get"], "stdin": private.host}]
    (img, _, _), = _ids(tmp_path / "c1")
    assert [i for i, _, _ in _ids(tmp_path / "c2")] == [img]
    assert _fs(tmp_path / "c1") == _fs(tmp_path / "c2") == _fs(tmp_path / "c3", img)
    for p in (tmp_path / "c2").rglob("*"):
        if p.is_file():
            assert PASSWORD.encode() not in p.read_bytes()


def test_helper_without_credentials_means_anonymous(private, tmp_path, bindir, monkeypatch):
    write_helper(bindir, "test", "not-found")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {private.host: "test"},
                               "auths": {private.host: {"auth": _b64(USER, PASSWORD)}}}))
    ref = f"docker://{private.host}/private/app:v1"
    code, out, err = _cli("--authfile", str(cfg), "--catalog", str(tmp_path / "c"), ref)
    assert (code, out, err) == (1, "", f"layerdb: error: {ref}: authentication required "
                                       "(give --creds USER:PASS or log in: auth.json)\n")
    assert calls(bindir, "test") == [{"argv": ["get"], "stdin": private.host}]


@pytest.mark.parametrize("mode,msg", [
    (None, "not found on PATH"),
    ("fail", "failed (exit status 1): keychain is locked"),
    ("garbled", "malformed answer: not JSON"),
    ("huge", "answer larger than 65536 bytes"),
    ("slow", "no answer within 0.5 s"),
])
def test_helper_failure_is_one_line_and_changes_nothing(private, tmp_path, bindir, monkeypatch,
                                                       umoci_images, mode, msg):
    from layerdb.sources import credhelpers

    monkeypatch.setattr(credhelpers, "TIMEOUT", 0.5)
    cat = tmp_path / "c"
    ingest([umoci_images["oci-archive"]], catalog_root=str(cat), jobs=1)
    before = snapshot(cat)
    if mode:
        write_helper(bindir, "test", mode, user=USER, secret=PASSWORD)
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credsStore": "test"}))
    ref = f"docker://{private.host}/private/app:v1"
    code, out, err = _cli("--authfile", str(cfg), "--catalog", str(cat), ref)
    assert (code, out) == (1, "")
    assert err == (f"layerdb: error: docker-credential-test: {msg} (credsStore for {private.host} "
                   f"in {cfg})\n")
    assert PASSWORD not in err and _b64(USER, PASSWORD) not in err
    assert snapshot(cat) == before and tmp_is_clean(cat)


def test_identity_token_is_traded_at_the_realm(reg, opts, proxy, tmp_path, bindir):
    from dataclasses import replace

    proxy.faults.bearer = True
    proxy.faults.token_users = {}  # no username and password will do
    proxy.faults.refresh_tokens = {"idtok-good"}
    ref = f"docker://{proxy.host}/app/gzip:v1"
    for name, secret in (("good", "idtok-good"), ("bad", "idtok-bad")):
        write_helper(bindir, name, user="<token>", secret=secret)
        (tmp_path / f"{name}.json").write_text(json.dumps({"credHelpers": {proxy.host: name}}))
    rep = ingest([ref], catalog_root=str(tmp_path / "c1"), jobs=2,
                 options=replace(opts, auth_file=str(tmp_path / "good.json")))
    assert not rep.failed, rep.failed[0].error
    assert proxy.token_forms and all(f == {
        "grant_type": "refresh_token", "refresh_token": "idtok-good", "client_id": "layerdb",
        "service": "test", "scope": "repository:app/gzip:pull"} for f in proxy.token_forms)
    assert not [p for m, p, _, _ in proxy.requests if m == "GET" and p.startswith("/token")]
    blob_gets = [(s, h) for m, p, s, h in proxy.requests if "/blobs/" in p and m == "GET"]
    assert blob_gets and all(s == 200 and h["authorization"].startswith("Bearer ")
                             for s, h in blob_gets)
    bad = ingest([ref], catalog_root=str(tmp_path / "c2"), jobs=1,
                 options=replace(opts, auth_file=str(tmp_path / "bad.json")))
    assert str(bad.archives[0].error) == f"{ref}: authentication failed: the token service answered 401"
    assert "idtok-bad" not in str(bad.archives[0].error)


def test_identity_token_cannot_answer_basic_auth(private, opts, tmp_path, bindir):
    from dataclasses import replace

    write_helper(bindir, "tok", user="<token>", secret="idtok-x")
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps({"credHelpers": {private.host: "tok"}}))
    ref = f"docker://{private.host}/private/app:v1"
    rep = ingest([ref], catalog_root=str(tmp_path / "c"), jobs=1, options=replace(opts, auth_file=str(cfg)))
    assert str(rep.archives[0].error) == (f"{ref}: the registry asks for basic auth, which an "
                                          "identity token (a credential helper's <token>) cannot answer")


def test_bearer_token_realm(reg, opts, proxy, tmp_path):
    from dataclasses import replace

    proxy.faults.bearer = True
    proxy.faults.token_users = {USER: PASSWORD}
    ref = f"docker://{proxy.host}/app/gzip:v1"
    anon = ingest([ref], catalog_root=str(tmp_path / "c0"), options=opts, jobs=1)
    assert "authentication failed: the token service answered 401" in str(anon.archives[0].error)
    rep = ingest([ref], catalog_root=str(tmp_path / "c1"), jobs=2,
                 options=replace(opts, creds=f"{USER}:{PASSWORD}"))
    assert not rep.failed, rep.failed[0].error
    blob_gets = [(s, h) for m, p, s, h in proxy.requests if "/blobs/" in p and m == "GET"]
    assert blob_gets and all(s == 200 and h["authorization"].startswith("Bearer ")
                             for s, h in blob_gets)
    assert proxy.count(lambda m, p: p.startswith("/token")) <= 3  # workers reuse the token
    proxy.faults.token_users = None  # an anonymous realm
    anon2 = ingest([ref], catalog_root=str(tmp_path / "c2"), options=opts, jobs=1)
    assert not anon2.failed


def test_redirect_drops_authorization_on_another_host(reg, opts, proxy, tmp_path):
    from dataclasses import replace

    proxy.faults.bearer = True
    proxy.faults.redirect_blobs = True
    rep = ingest([f"docker://{proxy.host}/app/gzip:v1"], catalog_root=str(tmp_path), jobs=2,
                 options=replace(opts, creds=f"{USER}:{PASSWORD}"))
    assert not rep.failed, rep.failed[0].error
    direct = [h for _, p, s, h in proxy.requests if p.startswith("/direct/")]
    assert len(direct) == 6  # the config and five layers
    assert not any("authorization" in h for h in direct)


def test_blob_cut_mid_transfer_resumes_with_range(reg, opts, proxy, tmp_path):
    proxy.faults.cut_blobs = 2
    rep = ingest([f"docker://{proxy.host}/app/gzip:v1"], catalog_root=str(tmp_path), jobs=1,
                 options=opts)
    assert not rep.failed, rep.failed[0].error
    ranged = [h["range"] for _, p, s, h in proxy.requests if "range" in h]
    assert ranged and all(r.startswith("bytes=") and r != "bytes=0-" for r in ranged)
    (img, _, _), = _ids(tmp_path)
    assert len(_fs(tmp_path, img)) > 20


def test_cut_json_body_is_asked_again(reg, opts, proxy, tmp_path):
    proxy.faults.cut_blobs, proxy.faults.cut_min = 1, 2  # the config blob comes first
    rep = ingest([f"docker://{proxy.host}/app/zstd:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert not rep.failed, rep.failed[0].error
    blobs = [p for m, p, _, _ in proxy.requests if "/blobs/" in p and m == "GET"]
    assert blobs[0] == blobs[1] and len(blobs) == 7  # the config twice, then five layers


def test_wrong_bytes_are_refused_and_nothing_recorded(reg, opts, proxy, tmp_path, umoci_images):
    ingest([umoci_images["oci-archive"]], catalog_root=str(tmp_path), jobs=1)
    ingest([f"docker://{reg.host}/app/multi:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    before = snapshot(tmp_path)
    proxy.faults.corrupt_blobs = True
    rep = ingest([f"docker://{proxy.host}/app/docker:v1"], catalog_root=str(tmp_path),
                 options=opts, jobs=1)
    err = str(rep.archives[0].error)
    assert rep.failed and ("digest mismatch" in err or "corrupt" in err), err
    assert snapshot(tmp_path) == before and tmp_is_clean(tmp_path)


def test_429_then_success_honours_retry_after(reg, opts, proxy, tmp_path):
    proxy.faults.throttle = 2
    proxy.faults.retry_after = "1"
    t0 = time.monotonic()
    rep = ingest([f"docker://{proxy.host}/app/gzip:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert not rep.failed, rep.failed[0].error
    assert time.monotonic() - t0 >= 2.0  # two waits of Retry-After: 1 (backoff alone is 0.05 s)
    assert [s for _, _, s, _ in proxy.requests][:2] == [429, 429]


def test_registry_dying_mid_ingest_then_rerun_fetches_only_what_is_missing(reg, opts, proxy, tmp_path):
    first = ingest([f"docker://{proxy.host}/app/multi:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert not first.failed
    before = snapshot(tmp_path)
    proxy.faults.dead_after_blobs = proxy.blob_gets + 2  # the config and one layer, then nothing
    ref = f"docker://{proxy.host}/app/gzip:v1"
    rep = ingest([ref], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert rep.failed and "\n" not in str(rep.archives[0].error)
    assert str(rep.archives[0].error).startswith(ref)
    assert snapshot(tmp_path) == before and tmp_is_clean(tmp_path)
    proxy.faults.dead_after_blobs = None
    proxy.requests.clear()
    again = ingest([f"docker://{proxy.host}/app/multi:v1", ref], catalog_root=str(tmp_path),
                   options=opts, jobs=1)
    assert not again.failed, again.failed[0].error
    blobs = {p.rsplit("/", 1)[1] for m, p, _, _ in proxy.requests if "/blobs/" in p and m == "GET"}
    manifest = json.loads(subprocess.run(
        ["curl", "-s", "-H", "Accept: application/vnd.oci.image.manifest.v1+json",
         f"http://{reg.host}/v2/app/gzip/manifests/v1"], capture_output=True).stdout)
    # nothing of the image already in the catalog; the other's layers (its config is cached)
    assert blobs == {d["digest"] for d in manifest["layers"]}


def test_schema1_is_refused_in_one_line(reg, opts, proxy, tmp_path):
    proxy.faults.schema1 = True
    rep = ingest([f"docker://{proxy.host}/app/gzip:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert "schema 1 manifest" in str(rep.archives[0].error)


def test_no_retry_storm_against_a_closed_port(opts, tmp_path):
    port = rf.free_port()
    t0 = time.monotonic()
    rep = ingest([f"docker://127.0.0.1:{port}/x/y:v1"], catalog_root=str(tmp_path), options=opts, jobs=1)
    assert "connection refused" in str(rep.archives[0].error)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("text,err", [
    ("docker://", "not a registry reference"),
    ("docker://127.0.0.1:5000/UPPER:v1", "invalid repository name"),
    ("docker://127.0.0.1:5000/a:bad tag", "not a registry reference"),
    ("docker://127.0.0.1:5000/a@sha256:12", "invalid digest"),
])
def test_bad_references(text, err):
    with pytest.raises(SourceError, match=err):
        parse_reference(text)


def test_references():
    r = parse_reference("docker://127.0.0.1:5000/team/app@sha256:" + "a" * 64)
    assert (r.host, r.repo, r.tag, str(r.digest)) == ("127.0.0.1:5000", "team/app", "", "sha256:" + "a" * 64)
    r = parse_reference("docker://alpine")
    assert (r.host, r.repo, r.netloc) == ("docker.io", "library/alpine", "registry-1.docker.io")
    assert "u:p" not in repr(SourceOptions(creds="u:p"))
    blob = RegistryBlob(Endpoint("http", "h:1"), "r", Digest.from_hex("a" * 64), 1,
                        Auth("user", "pw-x", "tok-x"))
    assert "pw-x" not in repr(blob) and "tok-x" not in repr(blob)


def test_cli_ingest_from_registry(reg, tmp_path):
    env = {**os.environ, "LAYERDB_CACHE_DIR": str(tmp_path / "cache"), "LAYERDB_REGISTRY_RETRIES": "2",
           "LAYERDB_REGISTRY_BACKOFF": "0.05"}
    run = [sys.executable, "-m", "layerdb.cli", "ingest", "--catalog", str(tmp_path / "c")]
    ok = subprocess.run([*run, "--tls-verify=false", "--all-platforms",
                         f"docker://{reg.host}/app/multi:v1"], capture_output=True, text=True, env=env)
    assert ok.returncode == 0, ok.stderr
    assert "2 image(s)" in ok.stderr
    bad = subprocess.run([*run, f"docker://{reg.host}/app/multi:v1"], capture_output=True, text=True,
                         env=env)
    assert bad.returncode == 1
    lines = bad.stderr.strip().splitlines()
    assert lines[0].startswith("layerdb: error:") and "--tls-verify=false" in lines[0]
    assert "Traceback" not in bad.stderr



def test_skopeo_style_local_prefixes(umoci_images, scratch):
    def refs(path):
        src = open_source(path, str(scratch))
        try:
            return sorted(r for i in src.images() for r in i.refs)
        finally:
            src.close()

    # umoci's bare tag v1 is qualified by the layout's name; :v1 still picks it, as skopeo does
    assert refs(f"oci:{umoci_images['oci-gzip']}:v1") == ["oci-gzip:v1"]
    assert refs(f"oci:{umoci_images['oci-gzip']}") == ["oci-gzip:v1"]
    assert refs(f"docker-archive:{umoci_images['docker-archive']}") == refs(umoci_images["docker-archive"])
    assert refs(f"oci-archive:{umoci_images['oci-archive']}") == refs(umoci_images["oci-archive"])
    with pytest.raises(SourceError, match=r"no image tagged 'nope' \(tags: oci-gzip:v1\)"):
        refs(f"oci:{umoci_images['oci-gzip']}:nope")
    with pytest.raises(SourceError, match="not a docker archive"):
        refs(f"docker-archive:{umoci_images['oci-archive']}")
    with pytest.raises(SourceError, match="not an OCI layout directory"):
        refs(f"oci:{umoci_images['oci-archive']}")
    assert not os.listdir(scratch)
