"""Imports point one way, and heavy modules load only where they are needed."""
from __future__ import annotations

import ast
import pathlib
import subprocess
import sys

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "layerdb"


def _imports(path: pathlib.Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    pkg = path.relative_to(SRC.parent).with_suffix("").parts
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = list(pkg[: len(pkg) - node.level])
                mod = ".".join(base + ([node.module] if node.module else []))
                if node.module is None:
                    out.update(f"{mod}.{a.name}" for a in node.names)
                else:
                    out.add(mod)
            else:
                out.add(node.module or "")
    return out


def _modules() -> dict[str, set[str]]:
    mods = {}
    for p in SRC.rglob("*.py"):
        name = ".".join(p.relative_to(SRC.parent).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = _imports(p)
    return mods


def test_only_catalog_imports_duckdb():
    users = {m for m, imps in _modules().items() if any(i.split(".")[0] == "duckdb" for i in imps)}
    assert users == {"layerdb.catalog.db", "layerdb.catalog.writer"}


def test_nothing_imports_cli():
    for m, imps in _modules().items():
        assert "layerdb.cli" not in imps or m == "layerdb.cli", m


def test_foundations_import_nothing_of_layerdb_above_them():
    mods = _modules()
    allowed = {"layerdb.errors"}
    for m in ("layerdb.errors", "layerdb.digest"):
        inner = {i for i in mods[m] if i.startswith("layerdb")}
        assert inner <= allowed, (m, inner)


def test_sources_know_no_store_catalog_or_each_other():
    mods = _modules()
    for m, imps in mods.items():
        if not m.startswith("layerdb.sources"):
            continue
        for i in imps:
            assert not i.startswith(("layerdb.store", "layerdb.catalog", "layerdb.tarindex",
                                     "layerdb.ingest", "layerdb.extract", "layerdb.reports",
                                     "layerdb.dive_rules", "layerdb.diff")), (m, i)
        fmt = {"layerdb.sources.docker_archive", "layerdb.sources.oci_layout"}
        if m in fmt:
            assert not (imps & (fmt - {m})), (m, imps)


def _loaded(code: str) -> set[str]:
    out = subprocess.run([sys.executable, "-c", code + "\nimport sys\nprint(' '.join(sys.modules))"],
                         capture_output=True, text=True, check=True).stdout
    return set(out.split())


def test_help_loads_neither_duckdb_nor_pyarrow():
    mods = _loaded("from layerdb.cli import cli\n"
                   "try:\n    cli.main(['--help'], standalone_mode=False)\nexcept SystemExit:\n    pass")
    assert "duckdb" not in mods and "pyarrow" not in mods


def test_extract_path_loads_no_pyarrow():
    mods = _loaded("import layerdb.extract, layerdb.cli")
    assert "pyarrow" not in mods
