"""The command line: help and README for every command, output formats, sql's stdin,
parameters and file output."""
from __future__ import annotations

import csv
import io
import json
import os
import pathlib
import sqlite3
import subprocess
import sys

import duckdb
import imagefactory as f
import pytest

from layerdb.catalog.layout import FORMAT_VERSION
from layerdb.cli import cli

README = (pathlib.Path(__file__).resolve().parents[1] / "README.md").read_text()


def _run(*args: str, home: pathlib.Path, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                          text=True, input=stdin, env={**os.environ, "LAYERDB_HOME": str(home)})


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> pathlib.Path:
    tmp = tmp_path_factory.mktemp("cli")
    f.write_oci_archive(tmp / "s.tar", [f.sample_image(tags=("sample:1",))])
    h = tmp / "home"
    r = _run("ingest", "-q", str(tmp / "s.tar"), home=h)
    assert r.returncode == 0, r.stderr
    return h


@pytest.mark.parametrize("name", sorted(cli.commands))
def test_every_command_has_help_example_and_readme_entry(name):
    r = subprocess.run([sys.executable, "-m", "layerdb.cli", name, "--help"], capture_output=True,
                       text=True)
    assert r.returncode == 0
    assert "Example" in r.stdout, f"{name} --help has no example"
    assert f"layerdb {name}" in README, f"README does not mention layerdb {name}"


def test_images_formats(home):
    j = json.loads(_run("images", "--format", "json", home=home).stdout)
    assert [(i["name"], i["layer_count"], i["working_dir"]) for i in j] == [("sample:1", 3, "/home/app")]
    rows = list(csv.DictReader(io.StringIO(_run("images", "--format", "csv", home=home).stdout)))
    assert rows[0]["name"] == "sample:1" and rows[0]["layer_count"] == "3"
    table = _run("images", home=home).stdout.splitlines()
    assert table[0].split()[:3] == ["NAME", "ID", "CONFIG_DIGEST"] and table[1].startswith("sample:1")
    # docker's IMAGE ID: 12 hex digits in a table, the full digest with --no-trunc and in JSON
    assert table[1].split()[2] == j[0]["config_digest"][7:19]
    full = _run("images", "--no-trunc", home=home).stdout.splitlines()
    assert full[1].split()[2] == j[0]["config_digest"] and len(j[0]["config_digest"]) == 71


def test_layers_listing(home):
    rows = json.loads(_run("layers", "sample:1", "--format", "json", home=home).stdout)
    assert [r["position"] for r in rows] == [0, 1, 2]
    assert [r["media_type"].rsplit(".", 1)[-1] for r in rows] == ["tar+gzip", "tar+zstd", "tar"]


def test_sql_stdin_params_and_outputs(home, tmp_path):
    q = "select path, size from fs where image = $img and path like $pat order by path"
    r = _run("sql", "-", "-p", "img", "sample:1", "-p", "pat", "/etc/%", "--format", "csv",
             home=home, stdin=q)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["path,size", "/etc/hello-hard.txt,6", "/etc/hello.txt,6"]
    out = tmp_path / "r.parquet"
    r = _run("sql", "select path, sha256 from fs where type = 'file'", "-o", str(out), home=home)
    assert r.returncode == 0, r.stderr
    n = duckdb.connect().execute(f"select count(*) from read_parquet('{out}')").fetchall()[0][0]
    assert n == 4  # hello.txt, app, suid, three (the hardlink is its own type)
    r = _run("sql", "select 1", "-o", str(tmp_path / "x.txt"), home=home)
    assert r.returncode == 2 and "unknown output type" in r.stderr


def test_version_and_empty_catalog(tmp_path):
    r = _run("--version", home=tmp_path)
    assert r.returncode == 0 and "version" in r.stdout
    none = tmp_path / "none"
    for args in (["images"], ["layers", "x:1"], ["sql", "select 1"], ["ls", "x:1"],
                 ["inspect", "x:1"], ["extract", "--path", "/a"], ["report", "setuid"],
                 ["check"], ["diff", "a", "b"]):
        r = _run(*args, home=none)
        assert r.returncode == 1 and r.stdout == "", (args, r.stdout)
        assert r.stderr == f"layerdb: error: no catalog at {none}; run layerdb ingest first " \
                           "(or give --catalog DIR / $LAYERDB_HOME)\n", (args, r.stderr)
    assert not none.exists()  # reading never creates a catalog
    assert _run("report", "--list", home=none).returncode == 0  # needs no catalog


def test_sql_takes_colon_parameters_and_null(home):
    r = _run("sql", "select count(*) as n from fs where image = :img and (:min is null or size >= :min)",
             "-p", "img", "sample:1", "-p", "min", "null", "--format", "csv", home=home)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["n", "15"]


def test_catalog_of_another_format_is_refused(tmp_path):
    f.write_oci_archive(tmp_path / "s.tar", [f.sample_image(tags=("sample:1",))])
    h = tmp_path / "home"
    assert _run("ingest", "-q", str(tmp_path / "s.tar"), home=h).returncode == 0
    con = duckdb.connect(str(h / "catalog.duckdb"))
    con.execute("update catalog_format set version = 99")
    con.close()
    with sqlite3.connect(h / "lookup.sqlite") as lc:  # as a format-99 layerdb writes it too
        lc.execute("update meta set format = 99")
    for args in (["images"], ["ingest", "-q", str(tmp_path / "s.tar")]):
        r = _run(*args, home=h)
        assert r.returncode == 1 and r.stderr.count("\n") == 1
        assert f"has format 99, this layerdb reads format {FORMAT_VERSION}" in r.stderr


def test_global_catalog_option_works_for_every_command(home, tmp_path):
    """`layerdb --catalog X CMD` is `layerdb CMD --catalog X`, and wins over $LAYERDB_HOME; a
    command's own --catalog wins over both."""
    env = {**os.environ, "LAYERDB_HOME": str(tmp_path / "elsewhere")}

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                              text=True, env=env)

    before = run("images", "--catalog", str(home), "--format", "json")
    after = run("--catalog", str(home), "images", "--format", "json")
    assert before.returncode == after.returncode == 0 and before.stdout == after.stdout
    assert json.loads(after.stdout)[0]["name"] == "sample:1"
    for args in (["layers", "sample:1"], ["ls", "sample:1", "/etc"], ["inspect", "sample:1"],
                 ["sql", "select count(*) from fs"], ["report", "setuid"],
                 ["check", "--lowest-efficiency", "disabled", "--highest-user-wasted-percent", "disabled"],
                 ["extract", "--path", "/etc/hello.txt", "--image", "sample:1"]):
        r = run("--catalog", str(home), *args)
        assert r.returncode == 0, (args, r.stderr)
    r = run("--catalog", str(tmp_path / "nowhere"), "images", "--catalog", str(home))
    assert r.returncode == 0 and "sample:1" in r.stdout
    r = run("--catalog", str(tmp_path / "nowhere"), "images")
    assert r.returncode == 1 and f"no catalog at {tmp_path / 'nowhere'};" in r.stderr


def test_platform_shorthand_and_the_platforms_present(tmp_path):
    idx = f.IndexSpec([
        f.ImageSpec([f.Layer([f.file("arch", b"amd64")])], platform="linux/amd64"),
        f.ImageSpec([f.Layer([f.file("arch", b"arm64")])], platform="linux/arm64/v8"),
    ], tags=("multi:1",))
    f.write_oci_archive(tmp_path / "m.tar", [idx])
    h = tmp_path / "home"
    assert _run("ingest", "-q", str(tmp_path / "m.tar"), home=h).returncode == 0
    for plat in ("arm64", "aarch64", "linux/arm64", "linux/arm64/v8"):
        r = _run("extract", "--path", "/arch", "--image", "multi:1", "--platform", plat, home=h)
        assert r.returncode == 0 and r.stdout == "arm64", (plat, r.stderr)
    assert json.loads(_run("inspect", "multi:1", "--platform", "x86_64", home=h).stdout)["Platform"] == "linux/amd64"
    for args in (["layers", "multi:1"], ["ls", "multi:1"], ["report", "setuid", "--image", "multi:1"]):
        r = _run(*args, "--platform", "s390x", home=h)
        assert r.returncode == 2, (args, r.stderr)
        assert r.stderr == ("layerdb: error: no image matches 'multi:1' for platform linux/s390x; "
                            "present: linux/amd64, linux/arm64/v8\n"), (args, r.stderr)


def test_a_missing_param_value_names_the_parameter(home):
    for args in (["sql", "select $img", "-p", "img"], ["sql", "select $a", "-p", "a", "-p", "b", "1"],
                 ["report", "largest-files", "-p", "limit"]):
        r = _run(*args, home=home)
        name = args[args.index("-p") + 1]
        assert r.returncode == 2 and r.stdout == "", (args, r.stderr)
        assert r.stderr == f"layerdb: error: -p {name}: no VALUE given (use -p NAME VALUE, null for NULL)\n"


def test_error_lines_are_printable_and_bounded(monkeypatch, capsys):
    """The boundary itself never fails: bytes file names, control characters, 10 KB texts."""
    import click

    from layerdb import cli as cli_mod
    from layerdb.errors import SourceError

    def boom(exc: BaseException) -> click.Command:
        def run() -> None:
            raise exc
        return click.Command("boom", callback=run)

    cases = [
        (OSError(36, "File name too long", b"/o/" + b"\xff" * 10000), 1,
         r"^layerdb: error: /o/(\\xff)+\\?x?f?\.\.\.\[\d+ characters\]\.\.\.f?f?(\\xff)+: file name too long$"),
        (OSError(28, "No space left on device", "/x"), 1, r"^layerdb: error: /x: no space left on device$"),
        (SourceError("a.tar: ref \x1b]0;pwned\x07 \u202eevil\nlayerdb: fake line\r\u2028"), 1,
         r"^layerdb: error: a\.tar: ref \\x1b\]0;pwned\\x07 \\u202eevil\\x0alayerdb: fake line\\x0d\\u2028$"),
        (ValueError("line one\nline two"), 3,
         r"^layerdb: internal error: ValueError: line one \(set LAYERDB_DEBUG=1 for a traceback\)$"),
    ]
    import re

    monkeypatch.delenv("LAYERDB_DEBUG", raising=False)
    for exc, code, pattern in cases:
        cli_mod.cli.add_command(boom(exc))
        try:
            with pytest.raises(SystemExit) as e:
                cli_mod.main(["boom"])
        finally:
            cli_mod.cli.commands.pop("boom")
        err = capsys.readouterr().err
        assert e.value.code == code and err.count("\n") == 1 and len(err) < 1100, err
        assert re.match(pattern, err.rstrip("\n")), err
