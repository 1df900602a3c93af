"""Every report in queries/, and the ``report``, ``check`` and ``diff`` commands, against one
fixture catalog: dive's own test image rebuilt with real umoci layers (tests/dive_fixture.py)
and a small fleet built with tarfile (api and worker share a base layer; tool is one layer).

Numbers are exact and worked out by hand in the comments; where dive disagrees with the
issue's definitions, ``*_dive`` holds what dive 0.13.1 itself prints for these images.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import dive_fixture
import imagefactory
import pytest
from click.testing import CliRunner

from layerdb import diff, dive_rules, reports
from layerdb.cli import cli
from layerdb.errors import CatalogError, ImageNotFound, ReportError, UsageError
from layerdb.ingest import ingest

S = dive_fixture.SOMEFILE  # 1000: /somefile.txt and every copy of it
DIVE = "dive-test:latest"
API, WORKER, TOOL, EDGE = "shop/api:1", "shop/worker:1", "other/tool:1", "edge/replace:1"


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    if not imagefactory.have_tools():
        if os.environ.get("CI"):  # CI installs them (scripts/setup.sh): missing is a failure
            pytest.fail("umoci and skopeo are missing; scripts/setup.sh installs them")
        pytest.skip("umoci and skopeo are needed to build dive's test image")
    work = tmp_path_factory.mktemp("reports")
    return {"dive": dive_fixture.build_dive_archive(work / "dive"),
            "fleet": dive_fixture.write_fleet(work / "fleet"), "work": work}


@pytest.fixture(scope="module")
def cat(built: dict[str, Path]) -> str:
    root = str(built["work"] / "catalog")
    rep = ingest([str(built["dive"]), str(built["fleet"])], catalog_root=root, jobs=1)
    assert not rep.failed, [a.error for a in rep.archives]
    return root


def rows(cat: str, name: str, image: str | None = None, **params: Any) -> list[dict]:
    cols, rs = reports.run_report(name, params, image=image, catalog_root=cat)
    return [dict(zip(cols, r)) for r in rs]


def pick(rs: list[dict], *keys: str) -> list[tuple]:
    return [tuple(r[k] for k in keys) for r in rs]


def run_cli(cat: str, *args: str) -> Any:
    """Run a command in an empty working directory (``check`` reads ./.dive-ci if present)."""
    runner = CliRunner()
    with runner.isolated_filesystem():
        return runner.invoke(cli, [*args, "--catalog", cat], catch_exceptions=False)


# The loader ------------------------------------------------------------------------------------

def test_every_report_has_help_an_example_and_runs(cat: str) -> None:
    listed = reports.list_reports()
    assert [r.name for r in listed] == [
        "capabilities", "dedup", "diff", "dir-sizes", "efficiency-paths", "efficiency",
        "executables", "files-duplicated", "history", "largest-files", "layers-shared",
        "package-versions", "package-where", "packages", "secrets", "setuid", "similar-images", "world-writable"]
    for r in listed:
        assert r.summary and len(r.summary) <= 100 and r.summary.endswith(("." , "?)")), r.name
        assert f"Example: layerdb report {r.name}" in r.help or \
            (r.name == "diff" and "Example: layerdb report diff" in r.help), r.name
        assert "@param" not in r.help
        params = {"a": API, "b": WORKER} if r.name == "diff" else \
            {"name": "openssl"} if r.name == "package-where" else {}
        cols, _ = reports.run_report(r.name, params, catalog_root=cat)
        assert cols, r.name


RESTATED = [  # signs that a report works out for itself which marker deletes what
    (re.compile(r"\.wh\."), "parses whiteout marker names"),
    (re.compile(r"\bancestors\s*\("), "lists a path's ancestors (to match them to markers)"),
    (re.compile(r"\b(lead|lag)\s*\(\s*(\w+\.)?whiteout\b", re.I),
     "looks for the marker after an entry"),
    (re.compile(r"\bhides\s*(=|<>|!=|\blike\b|\bin\b)|(=|<>|!=)\s*(\w+\.)?hides\b"
                r"|starts_with\s*\([^)]*\bhides\b", re.I), "matches paths to what a marker hides"),
]


def restated_rules(sql: str) -> list[str]:
    code = "\n".join(line.split("--", 1)[0] for line in sql.splitlines())
    return [why for rx, why in RESTATED if rx.search(code)]


def test_no_report_restates_whiteout_rules() -> None:
    """Whiteout, opaque and ancestor rules live in catalog/fate.py alone (issue 8): a report
    reads which layer and which markers removed a member from ``members``
    (hidden_by_position, hidden_by_kind, hidden_by_markers, deletes_from_position)."""
    # the check catches what the reports did before the fate columns said it
    assert restated_rules("select h.*, e.prefix from (select *, unnest(ancestors(path)) as a "
                          "from hid) h join mk e on e.prefix = h.a") != []
    assert restated_rules("select lead(whiteout) over w as next_whiteout from m") != []
    assert restated_rules("select * from m join mk on starts_with(m.path, mk.hides || '/')") != []
    assert restated_rules("select * from m where name like '.wh.%'") != []
    found = {p.name: restated_rules(p.read_text()) for p in sorted(reports.queries_dir().glob("*.sql"))}
    assert found and {n: w for n, w in found.items() if w} == {}


def shared_runs(texts: dict[str, str], least: int = 8) -> list[tuple[str, str, int]]:
    """(file, file, lines) for every two files sharing a run of ``least`` or more lines of SQL
    (comments, blank lines and spacing aside): a block copied instead of included."""
    def code(text: str) -> list[str]:
        return [c for line in text.splitlines() if (c := " ".join(line.split("--", 1)[0].split()))]

    found = []
    names = sorted(texts)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            x, y = code(texts[a]), code(texts[b])
            run = [0] * (len(y) + 1)
            best = 0
            for u in x:  # longest common run of lines, row by row
                run = [0] + [run[j] + 1 if u == v else 0 for j, v in enumerate(y)]
                best = max(best, *run)
            if best >= least:
                found.append((a, b, best))
    return found


def test_dives_accounting_is_written_once() -> None:
    """dive's per-path accounting (images, members keyed by path, markers, what they delete,
    the paths that can count twice and the leaves among them) is queries/_dive-accounting.sql
    alone: efficiency and efficiency-paths include it, and no two query files share a block
    (the security reports' 5-line union of hidden members is the longest shared run today)."""
    d = reports.queries_dir()
    fragment = (d / "_dive-accounting.sql").read_text()
    body = "".join(line for line in fragment.splitlines(keepends=True) if not line.startswith("--"))
    # the check catches the copy there was: the block in both reports
    copied = shared_runs({"efficiency.sql": "with\n" + body + ",\nleaves as (select 1)",
                          "efficiency-paths.sql": "with\n" + body + ",\ncontrib as (select 2)",
                          "_dive-accounting.sql": fragment})
    assert [(a, b) for a, b, n in copied if n >= 50] == [
        ("_dive-accounting.sql", "efficiency-paths.sql"), ("_dive-accounting.sql", "efficiency.sql"),
        ("efficiency-paths.sql", "efficiency.sql")]
    assert shared_runs({"a.sql": "select 1\n" * 7, "b.sql": "select 1\n" * 7}) == []
    assert shared_runs({p.name: p.read_text() for p in sorted(d.glob("*.sql"))}) == []
    text = body.strip()
    for name in ("efficiency", "efficiency-paths"):
        r = reports.get_report(name)
        assert "-- @include _dive-accounting: ims, m, hid, mk, gone, units, unit_size, multi, cand, parents\n" \
            + text + ",\n" in r.body and r.body.count("unit_size as (") == 1, name
        assert "cand as" not in (d / f"{name}.sql").read_text(), name
    # a fragment is no report
    assert "_dive-accounting" not in [r.name for r in reports.list_reports()]
    with pytest.raises(ReportError, match=r"^no report named '_dive-accounting' \(reports: capabilities, "):
        reports.get_report("_dive-accounting")


def test_include_puts_the_fragment_in_the_report(cat: str, tmp_path: Path) -> None:
    (tmp_path / "_two.sql").write_text("-- Two tables for the tests.\n"
                                       "a as (select :x as v),  -- x from the report\n"
                                       "b as (select v + 1 as w from a)\n")
    rep = tmp_path / "r.sql"
    rep.write_text("-- Uses _two.\n-- @param x 1\nwith\n-- @include _two: a, b\n"
                   "c as (select w * :y as z from b)\nselect z from c\n")
    r = reports.load(rep)
    assert r.params == ("x", "y") and r.defaults == {"x": 1}
    assert r.body == ("with\n-- @include _two: a, b\na as (select :x as v),  -- x from the report\n"
                      "b as (select v + 1 as w from a),\nc as (select w * :y as z from b)\nselect z from c")
    assert r.sql == "\n\n" + r.body.replace(":x", "$x").replace(":y", "$y")
    from layerdb.catalog import Catalog

    with Catalog(cat) as c:
        assert c.query(r.sql, {"x": 4, "y": 10}) == (["z"], [(50,)])

    def fails(text: str, fragment: str | None = None) -> str:
        rep.write_text(text)
        if fragment is not None:
            (tmp_path / "_two.sql").write_text(fragment)
        with pytest.raises(ReportError) as e:
            reports.load(rep)
        return str(e.value)

    assert fails("-- R.\nwith\n-- @include _two: b, a\nselect 1") == \
        f"{rep}:3: _two.sql defines a, b (the @include line lists b, a)"
    assert fails("-- R.\nwith\n-- @include _none: a\nselect 1") == f"{rep}:3: no fragment _none.sql beside the report"
    assert fails("-- R.\nwith\n-- @include efficiency: a\nselect 1").startswith(
        f"{rep}:3: @include takes a fragment's name, which starts with _")
    assert fails("-- R.\nwith\n-- @include _two: a\nselect 1", "-- @param z 1\na as (select :z)\n") == \
        f"{tmp_path / '_two.sql'}: a fragment has no directives (its report has the parameters)"
    assert fails("-- R.\nwith\n-- @include _two: a\nselect 1", "-- T.\na as (select 1)\n\n b as (select ')\n") == \
        f"{tmp_path / '_two.sql'}:3: unterminated quote"


def test_colon_after_a_name_number_or_bracket_is_a_slice_not_a_parameter() -> None:
    sql, names = reports._convert("select l[1:n], l[a:b], x[:y] from t where v = :v", "t")
    assert names == ["y", "v"]
    assert sql == "select l[1:n], l[a:b], x[$y] from t where v = $v"


# Efficiency, the way dive reports it ------------------------------------------------------------

def test_efficiency_of_dives_recipe(cat: str) -> None:
    """Layers (umoci, mtimes pinned, so each holds only what its step changed):
      0 /bin/busybox 9000, /bin/sh hardlink 0, /etc/passwd 100, dirs   -> 9100
      1 /somefile.txt S    2 mkdir -p .../really/nested (dirs)  3 somefile1 S
      4 chmod 444 somefile1: S again     5 somefile2 S    6 somefile3 S
      7 .wh.somefile3 + /root/saved.txt S    8 /root/.saved.txt S
      9 /root/.wh.example    10 /root/.data/tag.sh 200    11 again1 S   12 again2 S
      13 chmod +x /root/saved.txt: S again                            (S = 1000)
    size = 9100 + 10*S + 200 = 19300; user size = 19300 - 9100 = 10200.
    Per path (cumulative / smallest): busybox 9000/9000, passwd 100/100, somefile S/S,
    somefile1 2S/S, somefile2 S/S, somefile3 S (+0: a whiteout of a file)/0, saved 2S/S,
    .saved S/S, tag.sh 200/200, again1 S/S, again2 S/S, and /root/example, deleted as a
    directory holding somefile1 + somefile2 in the stack below: 2S/2S.
      sum(cumulative) = 9300 + 12S = 21300;  sum(smallest) = 9300 + 9S = 18300
      efficiency = 18300 / 21300 = 0.8591549295774648
    dive 0.13.1 prints 0.844559585492228 = 16300 / 19300: layer 7 holds only
    /root/example/.wh.somefile3.txt, so its tree has /root/example as an implied node, which
    stacking copies over the real directory; /root/example then counts as a file: 0 / 0.
    dive's wasted bytes: somefile1 2S + somefile3 S + saved 2S = 5000 (the kept copy of saved
    counted); the bytes really hidden: somefile1 twice, somefile2, somefile3, the first saved
    = 5000 too, but made of other paths (see test_efficiency_paths_of_dives_recipe).
      wasted / user size = 5000 / 10200 = 0.49019607843137253
    """
    (r,) = rows(cat, "efficiency", image=DIVE)
    assert r["image"] == DIVE and r["layers"] == 14
    assert (r["size_bytes"], r["user_size_bytes"]) == (19300, 10200)
    assert r["efficiency"] == 18300 / 21300 == 0.8591549295774648
    assert r["efficiency_dive"] == 16300 / 19300 == 0.844559585492228
    assert (r["wasted_bytes"], r["wasted_bytes_dive"]) == (5000, 5000)
    assert r["wasted_user_percent"] == r["wasted_user_percent_dive"] == 5000 / 10200
    # paths met in two or more layers: somefile1, somefile3, saved; hidden members: the 5
    # files above, /root/example, really, nested, and /root of layers 0, 2 and 9
    assert (r["inefficient_paths"], r["hidden_entries"]) == (3, 11)


def test_efficiency_with_an_opaque_directory(cat: str) -> None:
    """shop/api:1: base 8060 bytes; app layer 3864 (server.py 500, run.sh 60, .env 20,
    server.key 64, id_rsa 100, opt/data/a 1000, opt/data/b 2000, credentials 30, .npmrc 40,
    config.json 50); cleanup layer: .wh.id_rsa, opaque /opt/data + c 500, server.py 550.
    size = 8060 + 3864 + 1050 = 12974, user size 4914. Every leaf once: sum(cumulative) =
    12974 (a whiteout of a file adds 0; the opaque marker deletes the files a and b: 0 each).
    smallest drops: server.py 550 (min 500 of 1050), id_rsa 100, a 1000, b 2000:
      efficiency = (12974 - 3650) / 12974 = 9324 / 12974
    dive ignores the opaque marker: (12974 - 650) / 12974 = 12324 / 12974 = 0.94989979...
    (dive 0.13.1 prints 0.9498997995991983), wasted server.py 1050 + id_rsa 100 = 1150.
    Really hidden: server.py v1 500 + id_rsa 100 + a 1000 + b 2000 = 3600."""
    (r,) = rows(cat, "efficiency", image=API)
    assert (r["size_bytes"], r["user_size_bytes"]) == (12974, 4914)
    assert r["efficiency"] == 9324 / 12974
    assert r["efficiency_dive"] == 12324 / 12974 == 0.9498997995991983
    assert (r["wasted_bytes"], r["wasted_bytes_dive"]) == (3600, 1150)
    assert r["wasted_user_percent"] == 3600 / 4914
    assert r["wasted_user_percent_dive"] == 1150 / 4914
    # hidden: server.py v1, id_rsa, a, b and the /opt/data directory entry of layer 1
    assert (r["inefficient_paths"], r["hidden_entries"]) == (4, 5)
    by_name = {r["image"]: r for r in rows(cat, "efficiency")}
    assert list(by_name) == [DIVE, EDGE, TOOL, API, WORKER]
    assert pick([by_name[WORKER], by_name[TOOL]], "size_bytes", "user_size_bytes",
                "efficiency", "wasted_bytes", "wasted_user_percent_dive") == [
        (9320, 1260, 1.0, 0, 0.0), (3900, 0, 1.0, 0, 0.0)]


def test_efficiency_when_every_file_is_set_twice(cat: str) -> None:
    """edge/replace:1: layer 0 /data/x 10, /a 10; layer 1 /a 20, and the file /data 5 over the
    directory /data (hiding /data/x). size 45, user size 25. Per path: /a 30/10, /data/x 10/10,
    /data 5/5 (the directory was not a leaf): efficiency = 25 / 45, the same for dive (no
    whiteout; dive 0.13.1 prints 0.5555555555555556 too). Hidden: /a's first copy 10 and
    /data/x 10; dive counts /a's 30."""
    (r,) = rows(cat, "efficiency", image=EDGE)
    assert (r["size_bytes"], r["user_size_bytes"]) == (45, 25)
    assert r["efficiency"] == r["efficiency_dive"] == 25 / 45
    assert (r["wasted_bytes"], r["wasted_bytes_dive"]) == (20, 30)
    assert (r["wasted_user_percent"], r["wasted_user_percent_dive"]) == (20 / 25, 30 / 25)
    assert (r["inefficient_paths"], r["hidden_entries"]) == (1, 3)


def test_hidden_entries_are_the_members_missing_from_fs(cat: str) -> None:
    from layerdb.catalog import Catalog

    with Catalog(cat) as c:
        _, got = c.query(
            "select i.name, (select count(*) from image_layers il join files f "
            " on f.layer = il.diff_id where il.image_id = i.id and f.whiteout = 'none') - "
            "(select count(*) from fs where fs.image_id = i.id) from images i order by 1")
    eff = {r["image"]: r["hidden_entries"] for r in rows(cat, "efficiency")}
    assert dict(got) == eff == {DIVE: 11, EDGE: 3, TOOL: 0, API: 5, WORKER: 0}


def test_efficiency_paths_of_dives_recipe(cat: str) -> None:
    got = pick(rows(cat, "efficiency-paths", image=DIVE), "path", "count", "cumulative_bytes",
               "wasted_bytes", "layers", "deleted_at", "dive")
    assert got == [
        ("/root/example/somefile1.txt", 2, 2 * S, 2 * S, [3, 4], 9, True),
        ("/root/saved.txt", 2, 2 * S, S, [7, 13], None, True),
        # dive does not list it: one copy, deleted with its directory by rm -rf
        ("/root/example/somefile2.txt", 1, S, S, [5], 9, False),
        ("/root/example/somefile3.txt", 2, S, S, [6, 7], 7, True),
    ]
    assert len(rows(cat, "efficiency-paths", image=DIVE, limit=2)) == 2


def test_efficiency_paths_with_an_opaque_directory(cat: str) -> None:
    got = pick(rows(cat, "efficiency-paths"), "image", "path", "count", "cumulative_bytes",
               "wasted_bytes", "layers", "deleted_at", "dive")
    assert [g for g in got if g[0] == API] == [
        (API, "/opt/data/b", 2, 2000, 2000, [1, 2], 2, False),
        (API, "/app/server.py", 2, 1050, 500, [1, 2], None, True),
        (API, "/opt/data/a", 2, 1000, 1000, [1, 2], 2, False),
        (API, "/root/.ssh/id_rsa", 2, 100, 100, [1, 2], 2, True),
    ]
    assert {g[0] for g in got} == {DIVE, EDGE, API}
    assert [g for g in got if g[0] == EDGE] == [
        (EDGE, "/a", 2, 30, 10, [0, 1], None, True),
        # hidden when the file /data replaced its directory, in layer 1
        (EDGE, "/data/x", 1, 10, 10, [0], 1, False)]


# History -------------------------------------------------------------------------------------

def test_history_of_dives_recipe(cat: str) -> None:
    got = pick(rows(cat, "history", image=DIVE), "position", "size", "members", "added",
               "modified", "unchanged", "removed", "removed_bytes", "hidden_bytes",
               "created_by")
    steps = [what for what, _ in dive_fixture.STEPS]
    assert got == [
        # /, /bin, busybox, sh, /etc, passwd, /root, /tmp: the root itself is not counted
        (0, 9100, 8, 7, 0, 0, 0, 0, 0, steps[0]),
        (1, S, 1, 1, 0, 0, 0, 0, 0, steps[1]),
        (2, 0, 4, 3, 0, 1, 0, 0, 0, steps[2]),  # /root written again as it was
        (3, S, 1, 1, 0, 0, 0, 0, S, steps[3]),
        (4, S, 1, 0, 1, 0, 0, 0, S, steps[4]),  # mode 0644 -> 0444
        (5, S, 1, 1, 0, 0, 0, 0, S, steps[5]),
        (6, S, 1, 1, 0, 0, 0, 0, S, steps[6]),
        (7, S, 2, 1, 0, 0, 1, S, S, steps[7]),  # deletes somefile3, adds saved.txt
        (8, S, 1, 1, 0, 0, 0, 0, 0, steps[8]),
        (9, 0, 2, 0, 0, 1, 1, 2 * S, 0, steps[9]),  # somefile1 + somefile2 (+ 3 dirs)
        (10, 200, 3, 2, 0, 1, 0, 0, 0, steps[10]),
        (11, S, 1, 1, 0, 0, 0, 0, 0, steps[11]),
        (12, S, 1, 1, 0, 0, 0, 0, 0, steps[12]),
        (13, S, 1, 0, 1, 0, 0, 0, 0, steps[13]),  # chmod +x
    ]


def test_history_with_whiteout_and_opaque_directory(cat: str) -> None:
    got = pick(rows(cat, "history", image=API), "position", "size", "members", "added",
               "modified", "unchanged", "removed", "removed_bytes", "hidden_bytes")
    assert got == [
        (0, 8060, 19, 19, 0, 0, 0, 0, 0),
        (1, 3864, 20, 20, 0, 0, 0, 0, 3600),
        # c added; server.py changed; /opt/data written again; .wh.id_rsa and the opaque
        # marker remove id_rsa 100 + a 1000 + b 2000
        (2, 1050, 5, 1, 1, 1, 2, 3100, 0),
    ]


def test_history_of_a_file_over_a_directory(cat: str) -> None:
    got = pick(rows(cat, "history", image=EDGE), "position", "size", "members", "added",
               "modified", "unchanged", "removed", "removed_bytes", "hidden_bytes")
    # layer 1: /a new content, /data a file where a directory was (modified, type), and the
    # 10 bytes of /data/x gone with its directory, without any whiteout
    assert got == [(0, 20, 3, 3, 0, 0, 0, 0, 20), (1, 25, 2, 0, 2, 0, 0, 10, 0)]


# Fleet-wide dedup ------------------------------------------------------------------------------

def test_layers_shared(cat: str) -> None:
    base = imagefactory.build_image(dive_fixture.fleet_specs()[0])
    got = rows(cat, "layers-shared")
    assert pick(got, "diff_id", "images", "refs", "size", "bytes_saved", "positions",
                "image_names", "members") == [
        (base.diff_ids[0], 2, 2, len(base.layer_tars[0]), len(base.layer_tars[0]), [0],
         [API, WORKER], 19)]
    assert rows(cat, "layers-shared", image=WORKER) == got
    assert rows(cat, "layers-shared", image=TOOL) == []


def test_files_duplicated(cat: str) -> None:
    got = pick(rows(cat, "files-duplicated"), "size", "copies", "layers", "images",
               "bytes_saved", "paths", "image_names")
    assert got == [
        # /somefile.txt and its copies: layers 1, 3, 4, 5, 6, 7, 8, 11, 12, 13
        (S, 10, 10, 1, 9 * S, ["/root/.data/saved.again2.txt", "/root/.saved.txt",
                               "/root/example/somefile1.txt", "/root/example/somefile2.txt",
                               "/root/example/somefile3.txt"], [DIVE]),
        (3000, 2, 2, 3, 3000, ["/lib/libc.so", "/usr/lib/libc.so"], [TOOL, API, WORKER]),
        (500, 2, 2, 2, 500, ["/app/server.py"], [API, WORKER]),
        (100, 2, 2, 3, 100, ["/etc/passwd"], [TOOL, API, WORKER]),
        (60, 2, 2, 2, 60, ["/app/run.sh"], [API, WORKER]),
    ]
    assert got[0][0] == len(dive_fixture._bytes(S, "readme"))
    assert pick(rows(cat, "files-duplicated", image=TOOL), "size") == [(3000,), (100,)]
    assert pick(rows(cat, "files-duplicated", min_size=500, limit=2), "size") == [(S,), (3000,)]


def _layer_tar_sizes(built: dict[str, Path]) -> dict[str, list[tuple[str, int]]]:
    """image -> [(diff_id, uncompressed tar bytes)], read from the archives, not the catalog."""
    import hashlib

    out: dict[str, list[tuple[str, int]]] = {}
    with tarfile.open(built["dive"]) as tf:
        (m,) = json.load(tf.extractfile("manifest.json"))  # type: ignore[arg-type]
        layers = []
        for name in m["Layers"]:
            data = tf.extractfile(name).read()  # type: ignore[union-attr]
            layers.append(("sha256:" + hashlib.sha256(data).hexdigest(), len(data)))
        out[DIVE] = layers
    for spec in dive_fixture.fleet_specs():
        b = imagefactory.build_image(spec)
        out[spec.tags[0]] = [(d, len(t)) for d, t in zip(b.diff_ids, b.layer_tars)]
    return out


def test_dedup_summary(cat: str, built: dict[str, Path]) -> None:
    sizes = _layer_tar_sizes(built)
    shipped = sum(n for ls in sizes.values() for _, n in ls)
    distinct = dict(x for ls in sizes.values() for x in ls)
    layer_dedup = sum(distinct.values())
    # duplicate contents: somefile 9 x 1000, libc 3000, server.py 500, passwd 100, run.sh 60
    file_dedup = layer_dedup - 12660
    got = rows(cat, "dedup", top=3)
    totals = [r for r in got if r["section"] == "total"]
    assert pick(totals, "item", "bytes", "saved_bytes", "count") == [
        ("as shipped", shipped, 0, 22),
        ("after layer dedup", layer_dedup, shipped - layer_dedup, 21),
        # dive: busybox, passwd, somefile, tag.sh; api, worker, tool: 22; edge: 4
        ("after file dedup", file_dedup, shipped - file_dedup, 30),
        ("compressed, as shipped", shipped, 0, 22),  # the fixtures' layers are uncompressed
        ("layerdb cache", totals[4]["bytes"], shipped - totals[4]["bytes"], 21),
    ]
    assert totals[0]["detail"] == "5 images, 22 layer references"
    assert [r["ratio"] for r in totals[:3]] == [1.0, shipped / layer_dedup, shipped / file_dedup]
    assert 0 < totals[4]["bytes"] < layer_dedup
    top = [r for r in got if r["section"] == "top"]
    assert pick(top, "rank", "item", "bytes", "saved_bytes", "count") == [
        (1, "/root/.data/saved.again2.txt", S, 9 * S, 10),
        (2, "/lib/libc.so", 3000, 3000, 2),
        (3, "/app/server.py", 500, 500, 2)]
    assert top[1]["detail"].endswith(f" in {TOOL}, {API}, {WORKER}")


def test_similar_images(cat: str) -> None:
    got = pick(rows(cat, "similar-images"), "image_a", "image_b", "common_bytes", "share",
               "shared_layers", "unshared_common_bytes", "bytes_a", "bytes_b")
    # api 9374 bytes of distinct contents, worker 9320, tool 3900; api and worker share the
    # base's 8060 and run.sh's 60 (in different layers); tool has libc 3000 and passwd 100
    assert got == [
        (API, WORKER, 8120, 8120 / (9374 + 9320 - 8120), 1, 60, 9374, 9320),
        (TOOL, WORKER, 3100, 3100 / (3900 + 9320 - 3100), 0, 3100, 3900, 9320),
        (TOOL, API, 3100, 3100 / (3900 + 9374 - 3100), 0, 3100, 3900, 9374),
    ]
    assert [r["image_b"] for r in rows(cat, "similar-images", image=TOOL)] == [WORKER, API]
    assert len(rows(cat, "similar-images", limit=1)) == 1


# Security and hygiene --------------------------------------------------------------------------

def test_setuid(cat: str) -> None:
    got = pick(rows(cat, "setuid"), "image", "path", "mode", "setuid", "setgid", "gid")
    assert got == [(API, "/usr/bin/passwd", "4755", True, False, 0),
                   (API, "/usr/bin/wall", "2755", False, True, 5),
                   (WORKER, "/usr/bin/passwd", "4755", True, False, 0),
                   (WORKER, "/usr/bin/wall", "2755", False, True, 5)]


def test_world_writable(cat: str) -> None:
    got = pick(rows(cat, "world-writable"), "image", "path", "type", "mode", "sticky")
    assert got == [(DIVE, "/tmp", "dir", "1777", True),
                   (API, "/tmp", "dir", "1777", True),
                   (API, "/var/tmp", "dir", "1777", True),
                   (API, "/var/tmp/scratch", "file", "0666", False),
                   (WORKER, "/tmp", "dir", "1777", True),
                   (WORKER, "/var/tmp", "dir", "1777", True),
                   (WORKER, "/var/tmp/scratch", "file", "0666", False)]


def test_capabilities_are_decoded(cat: str) -> None:
    got = pick(rows(cat, "capabilities", image=API), "path", "capabilities", "permitted",
               "inheritable", "effective", "version", "rootid")
    assert got == [("/usr/bin/ping", "cap_net_raw=ep", "cap_net_raw", "", True, 2, None)]
    assert len(rows(cat, "capabilities")) == 2


def test_secrets_and_the_one_deleted_in_an_upper_layer(cat: str) -> None:
    want = [(API, "/app/.env", "environment file", 1, "visible"),
            (API, "/app/tls/server.key", "private key", 1, "visible"),
            (API, "/home/u/.aws/credentials", "aws credentials", 1, "visible"),
            (API, "/home/u/.docker/config.json", "registry credentials", 1, "visible"),
            (API, "/home/u/.npmrc", "package registry token", 1, "visible")]
    cols = ("image", "path", "kind", "position", "status")
    # the CA bundle (/etc/ssl/certs/ca-certificates.pem) is not a secret
    assert pick(rows(cat, "secrets"), *cols) == want
    hidden = pick(rows(cat, "secrets", hidden=1), *cols)
    assert hidden == want + [(API, "/root/.ssh/id_rsa", "ssh private key", 1, "hidden")]


def test_executables(cat: str) -> None:
    got = pick(rows(cat, "executables"), "image", "path", "type", "mode", "setid")
    assert got == [
        (DIVE, "/bin/busybox", "file", "0755", False),
        (DIVE, "/bin/sh", "hardlink", "0755", False),
        (DIVE, "/root/saved.txt", "file", "0755", False),  # chmod +x, the last step
        (TOOL, "/bin/tool", "file", "0755", False),
        (API, "/app/run.sh", "file", "0755", False),
        (API, "/bin/busybox", "file", "0755", False),
        (API, "/usr/bin/passwd", "file", "4755", True),
        (API, "/usr/bin/ping", "file", "0755", False),
        (API, "/usr/bin/wall", "file", "2755", True),
        (WORKER, "/bin/busybox", "file", "0755", False),  # run.sh is 0644 in worker
        (WORKER, "/usr/bin/passwd", "file", "4755", True),
        (WORKER, "/usr/bin/ping", "file", "0755", False),
        (WORKER, "/usr/bin/wall", "file", "2755", True)]
    assert pick(rows(cat, "executables", image=API, under="/usr/bin/"), "path") == [
        ("/usr/bin/passwd",), ("/usr/bin/ping",), ("/usr/bin/wall",)]


def test_largest_files(cat: str) -> None:
    assert pick(rows(cat, "largest-files", image=API, limit=3), "path", "size", "status") == [
        ("/bin/busybox", 4000, "visible"), ("/usr/lib/libc.so", 3000, "visible"),
        ("/app/server.py", 550, "visible")]
    assert pick(rows(cat, "largest-files", image=API, limit=4, hidden=1), "path", "size",
                "position", "status") == [
        ("/bin/busybox", 4000, 0, "visible"), ("/usr/lib/libc.so", 3000, 0, "visible"),
        ("/opt/data/b", 2000, 1, "hidden"), ("/opt/data/a", 1000, 1, "hidden")]
    assert pick(rows(cat, "largest-files", limit=1), "image", "path", "size") == [
        (DIVE, "/bin/busybox", 9000), (EDGE, "/a", 20), (TOOL, "/lib/libc.so", 3000),
        (API, "/bin/busybox", 4000), (WORKER, "/bin/busybox", 4000)]
    assert pick(rows(cat, "largest-files", image=EDGE, limit=None, hidden=1), "path", "size",
                "status") == [("/a", 20, "visible"), ("/a", 10, "hidden"),
                              ("/data/x", 10, "hidden"), ("/data", 5, "visible")]


def test_dir_sizes(cat: str) -> None:
    cols = ("dir", "depth", "files", "bytes", "hidden_files", "hidden_bytes")
    assert pick(rows(cat, "dir-sizes", image=API, depth=1, hidden=1), *cols) == [
        ("/", 0, 16, 9374, 4, 3600), ("/app", 1, 4, 694, 1, 500), ("/bin", 1, 1, 4000, 0, 0),
        ("/etc", 1, 2, 150, 0, 0), ("/home", 1, 3, 120, 0, 0), ("/opt", 1, 1, 500, 2, 3000),
        ("/root", 1, 0, 0, 1, 100), ("/usr", 1, 4, 3900, 0, 0), ("/var", 1, 1, 10, 0, 0)]
    # without the switch, no hidden bytes and no directory that holds only hidden files
    dive = pick(rows(cat, "dir-sizes", image=DIVE), *cols)
    assert dive == [("/", 0, 8, 9000 + 100 + 5 * S + 200, 0, 0), ("/bin", 1, 1, 9000, 0, 0),
                    ("/etc", 1, 1, 100, 0, 0), ("/root", 1, 4, 3 * S + 200, 0, 0),
                    ("/root/.data", 2, 2, S + 200, 0, 0), ("/tmp", 1, 1, S, 0, 0)]


# Diff ------------------------------------------------------------------------------------------

def test_diff_between_api_and_worker(cat: str) -> None:
    d = diff.diff_images(API, WORKER, catalog_root=cat)
    got = [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7]) for r in d.rows]
    assert d.columns == ["change", "path", "type", "size_a", "size_b", "size_delta", "what",
                         "detail"]
    changed = [g for g in got if g[0] == "changed"]
    assert changed == [
        ("changed", "/app", "dir", 0, 0, 0, "owner", "owner 1000:1000 -> 0:0"),
        ("changed", "/app/current", "symlink", 0, 0, 0, "link", "link server.py -> worker.py"),
        ("changed", "/app/run.sh", "file", 60, 60, 0, "mode", "mode 0755 -> 0644"),
        ("changed", "/app/server.py", "file", 550, 500, -50, "content", ""),
    ]
    assert [g[1] for g in got if g[0] == "added"] == ["/app/worker.py"]
    assert [g[1] for g in got if g[0] == "removed"] == [
        "/app/.env", "/app/tls", "/app/tls/server.key", "/home", "/home/u", "/home/u/.aws",
        "/home/u/.aws/credentials", "/home/u/.docker", "/home/u/.docker/config.json",
        "/home/u/.npmrc", "/opt", "/opt/data", "/opt/data/c", "/root/.ssh"]
    # removed: .env 20 + server.key 64 + credentials 30 + config.json 50 + .npmrc 40 + c 500
    assert d.totals == {"added": (1, 700), "removed": (14, -704), "changed": (4, -50)}
    assert diff.diff_images(API, API, catalog_root=cat).rows == []


def test_diff_command_and_report_agree(cat: str) -> None:
    res = run_cli(cat, "diff", API, WORKER, "--format", "json")
    assert res.exit_code == 0
    out = json.loads(res.stdout)
    assert len(out) == 19 and out[0]["path"] == "/app"
    assert res.stderr.strip() == (f"{API} -> {WORKER}: 1 added (+700 B), 14 removed (-704 B), "
                                  "4 changed (-50 B)")
    assert out == rows(cat, "diff", a=API, b=WORKER)
    with pytest.raises(ImageNotFound):
        diff.diff_images(API, "nope:1", catalog_root=cat)


# check: dive's CI rules ------------------------------------------------------------------------

def test_check_fails_dives_recipe_with_dives_defaults(cat: str) -> None:
    res = run_cli(cat, "check", "--image", DIVE)
    assert res.exit_code == 1
    assert res.stdout.splitlines()[1:] == [
        "  FAIL: lowest-efficiency: image efficiency is too low "
        "(efficiency=0.859155 < threshold=0.9)",
        "  SKIP: highest-wasted-bytes: rule disabled",
        "  FAIL: highest-user-wasted-percent: too many bytes wasted, relative to the user "
        "bytes added (user-wasted-percent=0.490196 > threshold=0.1)",
        "Result: FAIL [total:3] [passed:0] [failed:2] [skipped:1]"]
    dive = run_cli(cat, "check", "--image", DIVE, "--dive", "--format", "json")
    assert dive.exit_code == 1
    assert [(r["rule"], r["status"], r["value"]) for r in json.loads(dive.stdout)] == [
        ("lowest-efficiency", "FAIL", 0.844559585492228),  # what dive --ci prints
        ("highest-wasted-bytes", "SKIP", 5000),
        ("highest-user-wasted-percent", "FAIL", 5000 / 10200)]


def test_check_thresholds_from_options(cat: str) -> None:
    ok = run_cli(cat, "check", "--image", DIVE, "--lowest-efficiency", "0.85",
                 "--highest-wasted-bytes", "5KB", "--highest-user-wasted-percent", "0.5")
    assert ok.exit_code == 0, ok.stdout
    assert ok.stdout.splitlines()[-1] == "Result: PASS [total:3] [passed:3] [failed:0] [skipped:0]"
    over = run_cli(cat, "check", "--image", DIVE, "--lowest-efficiency", "disabled",
                   "--highest-wasted-bytes", "4999", "--highest-user-wasted-percent", "disabled")
    assert over.exit_code == 1
    assert "FAIL: highest-wasted-bytes: too many bytes wasted (wasted-bytes=5000 > " \
           "threshold=4999)" in over.stdout
    with pytest.raises(UsageError, match=r"^highest-wasted-bytes: 'lots' is not a size"):
        run_cli(cat, "check", "--image", DIVE, "--highest-wasted-bytes", "lots")


def test_check_reads_dive_ci_and_options_override_it(cat: str, tmp_path: Path) -> None:
    cfg = tmp_path / ".dive-ci"
    cfg.write_text("# dive's CI config\nrules:\n"
                   "  # below 0.8 fails\n  lowest-efficiency: 0.8\n"
                   "  highest-wasted-bytes: \"disabled\"\n"
                   "  highest-user-wasted-percent: 0.6   # of user bytes\n")
    res = run_cli(cat, "check", "--ci-config", str(cfg), "--format", "json")
    assert res.exit_code == 1  # shop/api:1 wastes 73 % of its user bytes
    assert "using CI config: " + str(cfg) in res.stderr
    got = [(r["image"], r["rule"], r["status"]) for r in json.loads(res.stdout)]
    # every image, in name order, each judged by the three rules in dive's order:
    # dive-test 0.859 >= 0.8 and 0.49 <= 0.6; shop/api:1 0.719 < 0.8 and 0.733 > 0.6;
    # edge/replace:1 0.556 < 0.8 and 20 / 25 = 0.8 > 0.6
    assert got == [(img, rule, status) for img, statuses in [
        (DIVE, ("PASS", "SKIP", "PASS")), (EDGE, ("FAIL", "SKIP", "FAIL")),
        (TOOL, ("PASS", "SKIP", "PASS")),
        (API, ("FAIL", "SKIP", "FAIL")), (WORKER, ("PASS", "SKIP", "PASS"))]
        for rule, status in zip(dive_rules.RULES, statuses)]
    ok = run_cli(cat, "check", "--ci-config", str(cfg), "--image", API,
                 "--lowest-efficiency", "0.7", "--highest-user-wasted-percent", "0.75")
    assert ok.exit_code == 0, ok.stdout
    runner = CliRunner()  # like dive, ./.dive-ci is read when it is there
    with runner.isolated_filesystem():
        Path(".dive-ci").write_text("rules:\n  lowest-efficiency: 0.5\n"
                                    "  highest-user-wasted-percent: disabled\n")
        auto = runner.invoke(cli, ["check", "--image", EDGE, "--catalog", cat])
    assert auto.exit_code == 0 and "using CI config: .dive-ci" in auto.stderr
    assert "  SKIP: highest-user-wasted-percent: rule disabled" in auto.stdout


def test_rules_parsing() -> None:
    assert [dive_rules.parse_bytes(t) for t in ("20MB", "20 MiB", "1.5kb", "512", "1G", "3ki")] == [
        20_000_000, 20_971_520, 1500, 512, 1_000_000_000, 3072]
    for bad in ("", "MB", "20 XB", "-1"):
        with pytest.raises(UsageError):
            dive_rules.parse_bytes(bad)
    text = "---\nrules:\n  lowest-efficiency: '0.95'\nplugins:\n  whatever: 1\n"
    assert dive_rules.parse_dive_ci(text) == {"lowest-efficiency": "0.95"}
    with pytest.raises(UsageError, match=r"^x:3: unknown rule 'lowest-efficency'"):
        dive_rules.parse_dive_ci("rules:\n  # typo\n  lowest-efficency: 0.9\n", "x")
    with pytest.raises(UsageError, match="tabs"):
        dive_rules.parse_dive_ci("rules:\n\tlowest-efficiency: 0.9\n")
    with pytest.raises(UsageError, match="expected 'key: value'"):
        dive_rules.parse_dive_ci("rules:\n  lowest-efficiency\n")
    assert dive_rules.load_rules(default_config=None) == dive_rules.Rules()
    r = dive_rules.load_rules(default_config=None, overrides={"highest-wasted-bytes": "20MB",
                                                          "lowest-efficiency": "disabled"})
    assert (r.lowest_efficiency, r.highest_wasted_bytes, r.highest_user_wasted_percent) == (
        None, 20_000_000, 0.1)
    with pytest.raises(UsageError, match="not a number"):
        dive_rules.load_rules(default_config=None, overrides={"lowest-efficiency": "high"})


# The report command ----------------------------------------------------------------------------

def test_report_list_and_describe(cat: str) -> None:
    res = run_cli(cat, "report", "--list", "--format", "json")
    listed = json.loads(res.stdout)
    assert [r["name"] for r in listed] == [r.name for r in reports.list_reports()]
    assert {r["name"]: r["params"] for r in listed}["largest-files"] == "image, hidden, limit"
    assert run_cli(cat, "report").stdout == run_cli(cat, "report", "--list").stdout
    d = run_cli(cat, "report", "dir-sizes", "--describe").stdout
    assert d.startswith("dir-sizes: Bytes of regular files per directory")
    assert "  -p depth VALUE   (default 2)" in d and "  -p image VALUE   (all images, or" in d


def test_report_json_for_scripts(cat: str) -> None:
    res = run_cli(cat, "report", "efficiency", "--image", "dive-test", "--format", "json")
    (obj,) = json.loads(res.stdout)
    for key in ("image", "size_bytes", "user_size_bytes", "efficiency", "wasted_bytes",
                "wasted_bytes_dive", "wasted_user_percent_dive"):
        assert key in obj
    assert obj["wasted_bytes_dive"] == 5000
    csv = run_cli(cat, "report", "setuid", "-p", "image", WORKER, "--format", "csv").stdout
    assert csv.splitlines()[0].startswith("image,path,type,mode,setuid")
    assert len(csv.splitlines()) == 3


def test_report_sql_runs_under_layerdb_sql(cat: str) -> None:
    from layerdb.catalog import Catalog

    text = run_cli(cat, "report", "secrets", "--sql", "-p", "hidden", "1", "--image", API).stdout
    assert text.startswith("/* layerdb report secrets: ") and ":image" not in text
    with Catalog(cat) as c:
        cols, got = c.query(text)
    assert [dict(zip(cols, r)) for r in got] == rows(cat, "secrets", image=API, hidden=1)
    res = run_cli(cat, "sql", text, "--format", "json")
    assert [r["path"] for r in json.loads(res.stdout)][-1] == "/root/.ssh/id_rsa"


def test_report_errors(cat: str) -> None:
    with pytest.raises(ReportError, match=r"^no report named 'nope' \(reports: capabilities, "):
        reports.run_report("nope", catalog_root=cat)
    with pytest.raises(ReportError, match=r"^report diff needs -p a VALUE$"):
        reports.run_report("diff", catalog_root=cat)
    with pytest.raises(ReportError, match=r"^report dedup does not take --image$"):
        reports.run_report("dedup", image=API, catalog_root=cat)
    with pytest.raises(ReportError, match=r"^report setuid has no parameter limit "):
        reports.run_report("setuid", {"limit": "3"}, catalog_root=cat)
    with pytest.raises(CatalogError):
        reports.run_report("largest-files", {"limit": "many"}, catalog_root=cat)
    p = subprocess.run([sys.executable, "-c", "from layerdb.cli import main; main()",
                        "report", "nope", "--catalog", cat], capture_output=True, text=True)
    assert p.returncode == 1 and p.stdout == ""
    assert p.stderr.startswith("layerdb: error: no report named 'nope'")


def test_commands_have_help_with_examples() -> None:
    for cmd in ("report", "check", "diff"):
        res = CliRunner().invoke(cli, [cmd, "--help"])
        assert res.exit_code == 0 and "Example" in res.stdout, cmd
