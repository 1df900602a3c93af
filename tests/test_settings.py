"""Settings are read once, in settings.py: a bad ``LAYERDB_…`` value fails no import and no
command that does not use it, and gives one error line naming the variable where it is used."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import imagefactory as f
import pytest

from layerdb.errors import UsageError
from layerdb.settings import Settings

BAD = {"LAYERDB_ZSTD_LEVEL": "abc", "LAYERDB_QUERY_MEMORY": "1GB'; set x = 1; --",
       "LAYERDB_MAX_ARCHIVE_RATIO": "lots", "LAYERDB_REGISTRY_RETRIES": "many",
       "LAYERDB_REGISTRY_TIMEOUT": "nan", "LAYERDB_PACKAGES": "maybe"}


def _layerdb(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", "from layerdb.cli import main; main()", *args],
                          capture_output=True, text=True, env={**os.environ, **env})


def test_bad_values_fail_no_import() -> None:
    code = ("import layerdb.cli, layerdb.store, layerdb.ingest, layerdb.packages.scan, "
            "layerdb.sources._open, layerdb.reports, layerdb.catalog.db; print('ok')")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       env={**os.environ, **BAD})
    assert (r.returncode, r.stdout, r.stderr) == (0, "ok\n", "")


@pytest.mark.parametrize(("name", "attr", "message"), [
    ("LAYERDB_ZSTD_LEVEL", "zstd_level", "LAYERDB_ZSTD_LEVEL='abc': not a zstd level from 1 to 19"),
    ("LAYERDB_QUERY_MEMORY", "query_memory",
     "LAYERDB_QUERY_MEMORY=\"1GB'; set x = 1; --\": not a size (e.g. 512MB, 1GB, or off)"),
    ("LAYERDB_MAX_ARCHIVE_RATIO", "max_archive_ratio",
     "LAYERDB_MAX_ARCHIVE_RATIO='lots': not a ratio above 0 (e.g. 200)"),
    ("LAYERDB_REGISTRY_RETRIES", "registry_retries",
     "LAYERDB_REGISTRY_RETRIES='many': not a whole number of attempts"),
    ("LAYERDB_REGISTRY_TIMEOUT", "registry_timeout", "LAYERDB_REGISTRY_TIMEOUT='nan': not a number of seconds"),
])
def test_a_bad_value_is_an_error_where_it_is_used(name: str, attr: str, message: str) -> None:
    s = Settings(BAD)
    with pytest.raises(UsageError) as e:
        getattr(s, attr)
    assert str(e.value) == message
    good = Settings({k: v for k, v in BAD.items() if k != name})
    assert getattr(good, attr) == getattr(Settings({}), attr)


def test_defaults_and_values() -> None:
    s = Settings({"XDG_DATA_HOME": "/d", "XDG_CACHE_HOME": "/c", "HOME": "/ignored"})
    assert (s.home, s.cache_dir, s.query_memory, s.zstd_level, s.packages, s.debug) == (
        "/d/layerdb", "/c/layerdb", "700MB", 1, True, False)
    assert (s.max_archive_ratio, s.registry_retries, s.registry_backoff, s.registry_timeout,
            s.registry_page) == (100.0, 5, 0.5, 60.0, 100)
    s = Settings({"LAYERDB_HOME": "/h", "LAYERDB_QUERY_MEMORY": "off", "LAYERDB_ZSTD_LEVEL": "19",
                  "LAYERDB_PACKAGES": "0", "LAYERDB_DEBUG": "1", "LAYERDB_REGISTRY_PAGE": "7"})
    assert (s.home, s.query_memory, s.zstd_level, s.packages, s.debug, s.registry_page) == (
        "/h", "", 19, False, True, 7)
    assert Settings({"LAYERDB_QUERY_MEMORY": " 512 MiB "}).query_memory == "512MiB"


def test_cli_bad_level_fails_ingest_only(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    f.write_docker_archive(archive, [f.sample_image()])
    cat = str(tmp_path / "cat")
    r = _layerdb("--catalog", cat, "ingest", str(archive), env={"LAYERDB_ZSTD_LEVEL": "0"})
    errors = [line for line in r.stderr.splitlines() if "error" in line]
    assert r.returncode != 0 and "Traceback" not in r.stderr
    assert errors == ["layerdb: error: LAYERDB_ZSTD_LEVEL='0': not a zstd level from 1 to 19"]
    r = _layerdb("--catalog", cat, "images", "--format", "csv", env={})
    assert r.returncode != 0 or r.stdout.count("\n") == 1  # nothing recorded

    assert _layerdb("--catalog", cat, "ingest", str(archive), env={}).returncode == 0
    # a command that compresses nothing does not care
    r = _layerdb("--catalog", cat, "images", "--format", "csv", env={"LAYERDB_ZSTD_LEVEL": "0"})
    assert r.returncode == 0 and "example.com/sample:v1" in r.stdout


def test_cli_query_memory_is_a_quoted_checked_value(tmp_path: Path) -> None:
    archive = tmp_path / "img.tar"
    f.write_docker_archive(archive, [f.sample_image()])
    cat = str(tmp_path / "cat")
    assert _layerdb("--catalog", cat, "ingest", str(archive), env={}).returncode == 0
    q = "select current_setting('memory_limit') as m"
    r = _layerdb("--catalog", cat, "sql", q, "--format", "csv", env={"LAYERDB_QUERY_MEMORY": "512MB"})
    assert (r.returncode, r.stdout) == (0, "m\n488.2 MiB\n")
    r = _layerdb("--catalog", cat, "sql", q, env={"LAYERDB_QUERY_MEMORY": BAD["LAYERDB_QUERY_MEMORY"]})
    assert r.returncode == 2 and r.stdout == ""
    assert r.stderr.splitlines() == [
        "layerdb: error: LAYERDB_QUERY_MEMORY=\"1GB'; set x = 1; --\": not a size (e.g. 512MB, 1GB, or off)"]
