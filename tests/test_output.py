"""Human output (issue 9 and 7): tables with human sizes and 12-digit digests (--no-trunc for
full values), exact JSON/CSV, control characters escaped in tables, report -o."""
from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import imagefactory as f
import pytest

from layerdb.ingest import ingest
from layerdb.output import human_size, printable, render

HOSTILE = "evil\x1b]0;pwned\x07\r\nRUN fake \u202etxt.exe"


@pytest.fixture(scope="module")
def cat(tmp_path_factory) -> str:
    tmp = tmp_path_factory.mktemp("out")
    big = bytes(range(256)) * 4096  # 1,048,576 bytes
    spec = f.ImageSpec([f.Layer([f.file("big", big), f.file("evil\x1bname", b"x")]),
                        f.Layer([f.file("small", b"12345")])], tags=("out:1",),
                       config_extra={"history": [{"created_by": HOSTILE},
                                                 {"created_by": "layer 1"}]})
    f.write_oci_archive(tmp / "o.tar", [spec])
    rep = ingest([str(tmp / "o.tar")], catalog_root=str(tmp / "cat"), jobs=1)
    assert not rep.failed, rep.failed[0].error
    return str(tmp / "cat")


def _run(cat: str, *args: str) -> str:
    p = subprocess.run([sys.executable, "-m", "layerdb.cli", *args], capture_output=True,
                       env={**os.environ, "LAYERDB_HOME": cat})
    assert p.returncode == 0, p.stderr
    return p.stdout.decode()


def test_human_size():
    assert [human_size(n) for n in (0, 999, 1000, 5590, 121_456_789, 1_234_567_890, 999_999,
                                    -2_500_000)] == [
        "0 B", "999 B", "1 kB", "5.59 kB", "121 MB", "1.23 GB", "1 MB", "-2.5 MB"]


def test_printable_escapes_controls_and_bidi():
    assert printable(HOSTILE) == "evil\\x1b]0;pwned\\x07\\x0d\\x0aRUN fake \\u202etxt.exe"
    assert printable("plain ünïcode\tx") == "plain ünïcode\\x09x"


def test_table_human_sizes_short_digests_and_no_trunc():
    d = "sha256:" + "ab" * 32
    cols = ["diff_id", "size", "compressed_size", "members", "ratio", "sha256"]
    rows = [(d, 121_456_789, 5590, 1234567, 0.123456789, "cd" * 32)]
    out = io.StringIO()
    render(cols, rows, "table", out)
    assert out.getvalue().split("\n")[1].split() == [
        "abababababab", "121", "MB", "5.59", "kB", "1234567", "0.1235", "cdcdcdcdcdcd"]
    out = io.StringIO()
    render(cols, rows, "table", out, no_trunc=True)
    assert out.getvalue().split("\n")[1].split() == [
        d, "121456789", "5590", "1234567", "0.123456789", "cd" * 32]
    out = io.StringIO()
    render(cols, rows, "csv", out)
    assert list(csv.reader(io.StringIO(out.getvalue())))[1] == [
        d, "121456789", "5590", "1234567", "0.123456789", "cd" * 32]


def test_layers_table_escapes_created_by_json_is_exact(cat):
    table = _run(cat, "layers", "out:1")
    assert "\x1b" not in table and "\r" not in table and "\u202e" not in table
    assert "evil\\x1b]0;pwned\\x07\\x0d\\x0aRUN fake \\u202etxt.exe" in table
    assert len(table.splitlines()) == 3  # header + 2 layers: no row broken by CR/LF
    rows = json.loads(_run(cat, "layers", "out:1", "--format", "json"))
    assert rows[0]["created_by"] == HOSTILE
    assert rows[0]["diff_id"].startswith("sha256:") and len(rows[0]["diff_id"]) == 71
    line = table.splitlines()[1]
    assert rows[0]["diff_id"][7:19] in line and rows[0]["diff_id"] not in line
    full = _run(cat, "layers", "out:1", "--no-trunc")
    assert rows[0]["diff_id"] in full and str(rows[0]["size"]) in full


def test_images_table_is_readable(cat):
    table = _run(cat, "images")
    img = json.loads(_run(cat, "images", "--format", "json"))[0]
    header, row = table.splitlines()
    assert img["id"][7:19] in row and img["id"] not in row
    assert "MB" in row and str(img["size"]) not in row.split()
    assert max(len(x) for x in table.splitlines()) < 160
    assert img["id"] in _run(cat, "images", "--no-trunc")


def test_sql_table_escapes_paths(cat):
    table = _run(cat, "sql", "select path from fs where path like '/evil%'")
    assert "\x1b" not in table and "/evil\\x1bname" in table
    rows = json.loads(_run(cat, "sql", "select path from fs where path like '/evil%'",
                           "--format", "json"))
    assert rows == [{"path": "/evil\x1bname"}]


def test_report_output_files(cat, tmp_path):
    want = json.loads(_run(cat, "report", "largest-files", "--format", "json"))
    _run(cat, "report", "largest-files", "-o", str(tmp_path / "r.json"))
    assert json.loads((tmp_path / "r.json").read_text()) == want
    _run(cat, "report", "largest-files", "-o", str(tmp_path / "r.csv"))
    got = list(csv.DictReader(io.StringIO((tmp_path / "r.csv").read_text())))
    assert [r["path"] for r in got] == [r["path"] for r in want]
    assert [int(r["size"]) for r in got] == [r["size"] for r in want]
    _run(cat, "report", "largest-files", "-o", str(tmp_path / "r.parquet"))
    import duckdb

    rows = duckdb.sql(f"select path, size from '{tmp_path / 'r.parquet'}'").fetchall()
    assert [(r["path"], r["size"]) for r in want] == rows
    p = subprocess.run([sys.executable, "-m", "layerdb.cli", "report", "largest-files", "-o",
                        str(tmp_path / "r.txt")], capture_output=True,
                       env={**os.environ, "LAYERDB_HOME": cat})
    assert p.returncode == 2 and b"unknown output type" in p.stderr
    assert not Path(tmp_path / "r.txt").exists()


def test_json_written_a_row_at_a_time_is_json_dump_byte_for_byte():
    """render's JSON streams rows (a diff of a million paths) and must print what
    json.dump(indent=2) of the whole list prints: nested lists and maps, empty ones, bytes,
    text beyond ASCII, NaN, no rows, repeated column names."""
    import datetime
    import decimal

    from layerdb.output import _plain, render

    cases = [
        (["a", "b"], []),
        (["a", "b"], [(1, "x"), (None, 2.5)]),
        (["a", "b", "c"], [([], {}, [1, [2, {"x": [3]}]]), ({"k": [1, 2]}, b"\xff\x00", "é\u202e"),
                           (float("nan"), True, decimal.Decimal("1.5"))]),
        (["x", "x"], [(1, 2)]),
        ([], [(), ()]),
        (["d", "t"], [(datetime.date(2020, 1, 2), (1, 2))]),
    ]
    for cols, rows in cases:
        got = io.StringIO()
        render(cols, iter(rows), "json", got)
        want = io.StringIO()
        json.dump([{c: _plain(v) for c, v in zip(cols, r)} for r in rows], want,
                  ensure_ascii=False, indent=2)
        assert got.getvalue() == want.getvalue() + "\n", cols
