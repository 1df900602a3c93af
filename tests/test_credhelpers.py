"""Credential helpers (``credHelpers``, ``credsStore``) chosen and run as docker does: which
helper a file names for a host, what it gets on stdin, what its answers mean, and one line
for every way it can fail. Fake helpers (tests/fake_helpers.py); no registry here (see
tests/test_registry.py for ingests that authenticate through them)."""
from __future__ import annotations

import base64
import json
import os
import pickle
import time

import pytest
from fake_helpers import NOT_FOUND, calls, write_helper

from layerdb.errors import RegistryError
from layerdb.sources import SourceOptions, credhelpers
from layerdb.sources.registry import Auth, Reference, credentials

HOST = "127.0.0.1:5000"
REF = Reference(HOST, "team/app", "v1")
SECRET = "hunter2-from-helper"


@pytest.fixture()
def bindir(tmp_path, monkeypatch):
    """Fake helpers' directory, first on PATH; no auth file of the machine's is read."""
    d = tmp_path / "bin"
    d.mkdir()
    monkeypatch.setenv("PATH", f"{d}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for var in ("REGISTRY_AUTH_FILE", "XDG_RUNTIME_DIR", "DOCKER_CONFIG", "XDG_CONFIG_HOME"):
        monkeypatch.delenv(var, raising=False)
    return d


def _config(path, **doc):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc))
    return str(path)


def _inline(user, password):
    return {"auth": base64.b64encode(f"{user}:{password}".encode()).decode()}


def _creds(auth: Auth) -> tuple[str, str, str]:
    return auth.username, auth.password, auth.identity_token


def test_cred_helper_wins_over_auths_and_gets_the_host(bindir, tmp_path):
    write_helper(bindir, "test", user="alice", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: "test"},
                  auths={HOST: _inline("alice", "wrong")}, credsStore="nope")
    assert _creds(credentials(REF, SourceOptions(auth_file=cfg))) == ("alice", SECRET, "")
    assert calls(bindir, "test") == [{"argv": ["get"], "stdin": HOST}]


def test_creds_store_is_asked_for_any_host_before_auths(bindir, tmp_path):
    write_helper(bindir, "store", user="bob", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credsStore="store",
                  auths={HOST: _inline("alice", "inline")})
    assert _creds(credentials(REF, SourceOptions(auth_file=cfg))) == ("bob", SECRET, "")
    other = Reference("registry.example.com:8443", "x")
    assert _creds(credentials(other, SourceOptions(auth_file=cfg))) == ("bob", SECRET, "")
    assert [c["stdin"] for c in calls(bindir, "store")] == [HOST, "registry.example.com:8443"]


def test_store_with_nothing_leaves_the_inline_auth_unused_as_docker_does(bindir, tmp_path):
    write_helper(bindir, "store", "not-found")
    cfg = _config(tmp_path / "config.json", credsStore="store",
                  auths={HOST: _inline("alice", "inline")})
    assert credentials(REF, SourceOptions(auth_file=cfg)) == Auth()
    assert len(calls(bindir, "store")) == 1


def test_helper_with_nothing_passes_on_to_the_next_file(bindir, tmp_path, monkeypatch):
    write_helper(bindir, "test", "not-found")
    first = _config(tmp_path / "auth.json", credHelpers={HOST: "test"},
                    auths={HOST: _inline("alice", "same-file")})
    monkeypatch.setenv("REGISTRY_AUTH_FILE", first)
    monkeypatch.setenv("DOCKER_CONFIG", str(tmp_path / "docker"))
    _config(tmp_path / "docker" / "config.json", auths={HOST: _inline("carol", "next-file")})
    assert _creds(credentials(REF, SourceOptions())) == ("carol", "next-file", "")
    assert calls(bindir, "test") == [{"argv": ["get"], "stdin": HOST}]


def test_empty_helper_entry_means_the_files_auths_not_its_store(bindir, tmp_path):
    write_helper(bindir, "store", user="bob", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: ""}, credsStore="store",
                  auths={HOST: _inline("alice", "inline")})
    assert _creds(credentials(REF, SourceOptions(auth_file=cfg))) == ("alice", "inline", "")
    assert calls(bindir, "store") == []


@pytest.mark.parametrize("key,matches", [
    ("https://127.0.0.1:5000/", True), ("http://127.0.0.1:5000/v2/", True),
    ("127.0.0.1:5000/team/app", False), ("127.0.0.1", False), ("127.0.0.1:50000", False)])
def test_cred_helper_keys_match_the_host_only(bindir, tmp_path, key, matches):
    write_helper(bindir, "test", user="alice", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={key: "test"})
    want = ("alice", SECRET, "") if matches else ("", "", "")
    assert _creds(credentials(REF, SourceOptions(auth_file=cfg))) == want
    assert len(calls(bindir, "test")) == int(matches)


@pytest.mark.parametrize("key", ["https://index.docker.io/v1/", "docker.io", "index.docker.io"])
def test_docker_hub_helper_gets_the_index_url(bindir, tmp_path, key):
    write_helper(bindir, "hub", user="dhuser", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={key: "hub"})
    hub = Reference("docker.io", "library/alpine", "3")
    assert _creds(credentials(hub, SourceOptions(auth_file=cfg))) == ("dhuser", SECRET, "")
    assert calls(bindir, "hub") == [{"argv": ["get"], "stdin": "https://index.docker.io/v1/"}]


def test_a_helper_runs_once_per_registry_within_one_options(bindir, tmp_path):
    write_helper(bindir, "test", user="alice", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: "test"})
    opts = SourceOptions(auth_file=cfg)
    for repo in ("a", "b/c", "a"):
        assert _creds(credentials(Reference(HOST, repo), opts)) == ("alice", SECRET, "")
    assert len(calls(bindir, "test")) == 1
    credentials(REF, SourceOptions(auth_file=cfg))  # another ingest asks again
    assert len(calls(bindir, "test")) == 2
    assert pickle.loads(pickle.dumps(opts)).helpers._got == {}  # answers never leave the process
    assert SECRET not in repr(opts) and SECRET not in repr(opts.helpers)


def test_creds_flag_runs_no_helper(bindir, tmp_path):
    write_helper(bindir, "test", user="alice", secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: "test"}, credsStore="test")
    assert _creds(credentials(REF, SourceOptions(auth_file=cfg, creds="u:p"))) == ("u", "p", "")
    assert calls(bindir, "test") == []


def test_token_username_means_an_identity_token(bindir, tmp_path):
    write_helper(bindir, "test", user="<token>", secret="idtok-123")
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: "test"})
    auth = credentials(REF, SourceOptions(auth_file=cfg))
    assert _creds(auth) == ("", "", "idtok-123") and auth.given
    assert "idtok-123" not in repr(auth)


def test_an_answer_with_neither_username_nor_secret_is_no_credentials(bindir, tmp_path):
    write_helper(bindir, "test", user="", secret="")
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: "test"})
    assert credentials(REF, SourceOptions(auth_file=cfg)) == Auth()


WHERE = "credHelpers entry for 127.0.0.1:5000 in {cfg}"


@pytest.mark.parametrize("mode,user,msg", [
    (None, "alice", "docker-credential-test: not found on PATH ({where})"),
    ("fail", "alice", "docker-credential-test: failed (exit status 1): keychain is locked ({where})"),
    ("garbled", "alice", "docker-credential-test: malformed answer: not JSON ({where})"),
    ("list", "alice", "docker-credential-test: malformed answer: not a JSON object ({where})"),
    ("huge", "alice", "docker-credential-test: answer larger than 65536 bytes ({where})"),
    ("slow", "alice", "docker-credential-test: no answer within 0.5 s ({where})"),
    ("answer", "", "docker-credential-test: malformed answer: a Secret without a Username ({where})"),
])
def test_helper_failures_are_one_line_without_the_secret(bindir, tmp_path, monkeypatch, mode, user, msg):
    monkeypatch.setattr(credhelpers, "TIMEOUT", 0.5)
    if mode:
        write_helper(bindir, "test", mode, user=user, secret=SECRET)
    cfg = _config(tmp_path / "config.json", credHelpers={HOST: "test"},
                  auths={HOST: _inline("alice", "inline")})
    opts = SourceOptions(auth_file=cfg)
    t0 = time.monotonic()
    with pytest.raises(RegistryError) as e:
        credentials(REF, opts)
    assert str(e.value) == msg.format(where=WHERE.format(cfg=cfg))
    assert time.monotonic() - t0 < 5
    assert SECRET not in str(e.value) and e.value.__cause__ is None
    with pytest.raises(RegistryError) as again:  # remembered: not run a second time
        credentials(Reference(HOST, "other"), opts)
    assert str(again.value) == str(e.value)
    assert len(calls(bindir, "test")) == (1 if mode else 0)


def test_slow_helper_is_killed(bindir, tmp_path, monkeypatch):
    monkeypatch.setattr(credhelpers, "TIMEOUT", 0.5)
    prog = bindir / "docker-credential-sh"
    pidfile = tmp_path / "pid"
    prog.write_text(f"#!/bin/sh\necho $$ > {pidfile}\nsleep 30 &\necho $! >> {pidfile}\nwait\n")
    prog.chmod(0o755)
    with pytest.raises(RegistryError, match=r"^docker-credential-sh: no answer within 0.5 s \(credsStore"):
        credhelpers.run("sh", HOST, "credsStore for x in y")
    time.sleep(0.2)
    for pid in map(int, pidfile.read_text().split()):  # the helper and what it started: gone
        assert not os.path.exists(f"/proc/{pid}") or "zombie" in open(f"/proc/{pid}/status").read().lower()


def test_not_found_is_recognised_on_stderr_too(bindir):
    prog = bindir / "docker-credential-err"
    prog.write_text(f"#!/bin/sh\ncat >/dev/null\necho '{NOT_FOUND}' >&2\nexit 1\n")
    prog.chmod(0o755)
    assert credhelpers.run("err", HOST, "here") is None


def test_killed_helper_says_so(bindir):
    prog = bindir / "docker-credential-dies"
    prog.write_text("#!/bin/sh\nkill -9 $$\n")
    prog.chmod(0o755)
    with pytest.raises(RegistryError) as e:
        credhelpers.run("dies", HOST, "here")
    assert str(e.value) == "docker-credential-dies: failed (killed by signal 9) (here)"


@pytest.mark.parametrize("entry", ["../../bin/sh", "", 42])
def test_helper_names_are_plain_names(bindir, tmp_path, entry):
    cfg = _config(tmp_path / "config.json", credsStore=entry)
    if entry == "":  # no store: as docker reads it
        assert credentials(REF, SourceOptions(auth_file=cfg)) == Auth()
        return
    with pytest.raises(RegistryError) as e:
        credentials(REF, SourceOptions(auth_file=cfg))
    assert str(e.value) == (f"{cfg}: credsStore for 127.0.0.1:5000: invalid credential helper "
                            f"name {str(entry)!r}")


def test_a_helper_that_never_reads_stdin_still_answers(bindir):
    prog = bindir / "docker-credential-deaf"
    prog.write_text('#!/bin/sh\necho \'{"Username": "u", "Secret": "s"}\'\n')
    prog.chmod(0o755)
    for _ in range(20):  # exits before or after the URL is written: both are fine
        assert credhelpers.run("deaf", HOST, "here") == ("u", "s")


def test_a_helper_found_only_through_a_relative_path_entry_is_not_run(bindir, tmp_path, monkeypatch):
    write_helper(tmp_path / "rel", "test", user="alice", secret=SECRET)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"rel{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(RegistryError) as e:
        credhelpers.run("test", HOST, "here")
    assert str(e.value) == "docker-credential-test: found only through a relative PATH entry, not run (here)"
    assert calls(tmp_path / "rel", "test") == []
