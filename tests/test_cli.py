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
    assert table[0].split()[:3] == ["NAME", "ID", "PLATFORM"] and table[1].startswith("sample:1")


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
        assert "has format 99, this layerdb reads format 1" in r.stderr
