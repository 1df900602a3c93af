"""The ``packages`` view and the version functions, for the catalog's DuckDB connection.

``define(con, files)`` registers the functions and creates two temp views:

- ``package_records``: every package record of every layer (the layers' Parquet files as
  written at ingest, os-release rows included);
- ``packages``: per image, the records a running container sees: a layer's row counts when its
  record file (``record_path``) is the entry the image shows at that path (the ``fs`` view's
  ``layer``), so a package whose record an upper layer removed or rewrote is gone (a jar
  nested in another, ``/app.jar!/BOOT-INF/lib/x.jar``, is in the outer jar's file).
  ``installed_position`` / ``installed_layer``: the lowest layer from which this exact
  version stayed in every rewrite of the record up to the visible one (the layer that
  installed it). OS packages' purls get the image's distribution (its visible os-release).

Functions (``ecosystem`` as in the ``ecosystem`` column; see ``versions``):
``version_key(ecosystem, v)`` -> BLOB ordered as the ecosystem orders versions;
``version_cmp(ecosystem, a, b)`` -> -1/0/1; ``version_lt``, ``version_le``, ``version_gt``,
``version_ge``, ``version_eq`` -> BOOLEAN.

Why a stored key and not only functions: a Python UDF costs ~0.1-0.2 ms a call (it parses both
versions); over 200,000 rows ``version_lt`` took 45 s where comparing the stored
``version_key`` with one constant key took 0.07 s, and ``max_by(version, version_key)`` 0.04 s
against 24 s keyed per row. So the key is computed once at ingest (in the worker), the reports
compare keys, and the functions are there for hand-written SQL after a selective filter.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .table import COLUMNS
from .versions import compare, version_key

_OS_ECOSYSTEMS = "('deb', 'apk', 'rpm')"


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def register_functions(con: Any) -> None:
    """The version functions, as Python scalar functions of this connection."""
    have = {r[0] for r in con.execute(
        "select function_name from duckdb_functions() where function_name like 'version_%'").fetchall()}

    def fn(name: str, f: Any, args: list, ret: str) -> None:
        if name not in have:  # a connection keeps them; views are defined again after commits
            con.create_function(name, f, args, ret)

    fn("version_key", version_key, ["VARCHAR", "VARCHAR"], "BLOB")
    fn("version_cmp", compare, ["VARCHAR"] * 3, "INTEGER")
    for name, test in (("lt", lambda c: c < 0), ("le", lambda c: c <= 0), ("gt", lambda c: c > 0),
                       ("ge", lambda c: c >= 0), ("eq", lambda c: c == 0)):
        fn(f"version_{name}", _predicate(test), ["VARCHAR"] * 3, "BOOLEAN")


def _predicate(test: Any) -> Any:
    def f(e: str, a: str, b: str) -> bool | None:
        c = compare(e, a, b)
        return None if c is None else test(c)

    return f


def records_sql(files: Sequence[str]) -> str:
    cols = ", ".join(f'"{n}"' for n, _ in COLUMNS)
    if not files:
        return "select " + ", ".join(f'cast(null as {t}) as "{n}"' for n, t in COLUMNS) + " where false"
    return f"select {cols} from read_parquet([{', '.join(_sql_str(f) for f in files)}])"


# A nested jar's record_path is ``/outer.jar!/BOOT-INF/lib/inner.jar``: its file is the part
# before the first ``!/``. A directory name may end in ``!`` too, so every prefix that ends
# before a ``!/`` (and the whole path) is tried: the one the layer has is the file.
_JAR_FILES = ("list_transform(range(1, len(string_split(r.record_path, '!/')) + 1), "
              "lambda i: array_to_string(string_split(r.record_path, '!/')[1:i], '!/'))")

PACKAGES_VIEW = f"""
create or replace temp view packages as
with rec as (  -- the file each record is in: a nested jar's record is in its outermost jar
  select r.*, unnest(case when r.ecosystem = 'maven' and contains(r.record_path, '!/')
                          then {_JAR_FILES} else [r.record_path] end) as file_path
  from package_records r),
vis as (
  select f.image, f.image_id, f.position, r.* exclude (file_path)
  from rec r join fs f on f.layer = r.layer and f.path = r.file_path),
os as (
  select image_id, name as os_id, nullif(version, '') as os_version from vis
  where ecosystem = 'os'
  qualify row_number() over (partition by image_id order by record_path = '/etc/os-release' desc) = 1),
hist as (  -- each record of each layer of the image, at its position
  select l.image_id, l.position, r.record_path, r.ecosystem, r.name, r.arch, r.version
  from image_layer_rows l join package_records r on r.layer = l.diff_id
  where r.ecosystem <> 'os'),
brk as (  -- the highest rewrite of a record below the visible one that lacks this version
  select v.image_id, v.record_path, v.ecosystem, v.name, v.arch, v.version,
         max(h.position) as below
  from vis v join (select distinct image_id, position, record_path from hist) h
    on h.image_id = v.image_id and h.record_path = v.record_path and h.position < v.position
  where not exists (
    select 1 from hist s where s.image_id = h.image_id and s.position = h.position
      and s.record_path = h.record_path and s.ecosystem = v.ecosystem and s.name = v.name
      and s.version = v.version and s.arch is not distinct from v.arch)
  group by all),
inst as (
  select v.image_id, v.record_path, v.ecosystem, v.name, v.arch, v.version,
         min(h.position) as installed_position
  from vis v join hist h
    on h.image_id = v.image_id and h.record_path = v.record_path and h.ecosystem = v.ecosystem
   and h.name = v.name and h.version = v.version and h.arch is not distinct from v.arch
   and h.position <= v.position
  left join brk b
    on b.image_id = v.image_id and b.record_path = v.record_path and b.ecosystem = v.ecosystem
   and b.name = v.name and b.version = v.version and b.arch is not distinct from v.arch
  where h.position > coalesce(b.below, -1)
  group by all)
select v.image, v.image_id, v.ecosystem, v.name, v.version, v.source, v.arch,
       case when v.ecosystem in {_OS_ECOSYSTEMS} and o.os_id is not null
                 and (v.purl not like '%?%' or v.purl like '%?arch=%')
            then regexp_replace(v.purl, '^(pkg:[a-z]+/)[^/]+/([^?]*)(\\?arch=[^&]*)?(&distro=[^&]*)?',
                                '\\1' || o.os_id || '/\\2\\3' ||
                                case when o.os_version is null then ''
                                     when v.purl like '%?%' then '&distro=' || o.os_id || '-' || o.os_version
                                     else '?distro=' || o.os_id || '-' || o.os_version end)
            else v.purl end as purl,
       v.record_path, v.position, v.layer,
       coalesce(i.installed_position, v.position) as installed_position,
       l.diff_id as installed_layer,
       o.os_id || coalesce('-' || o.os_version, '') as distro,
       v.version_key
from vis v
left join os o on o.image_id = v.image_id
left join inst i
  on i.image_id = v.image_id and i.record_path = v.record_path and i.ecosystem = v.ecosystem
 and i.name = v.name and i.version = v.version and i.arch is not distinct from v.arch
left join image_layer_rows l
  on l.image_id = v.image_id and l.position = coalesce(i.installed_position, v.position)
where v.ecosystem <> 'os'
"""


def define(con: Any, files: Sequence[str]) -> None:
    """Register the version functions and the ``package_records`` and ``packages`` views on
    ``con`` (which must already have ``fs`` and ``image_layer_rows``). ``files``: the
    package Parquet files of the catalog's committed layers."""
    register_functions(con)
    con.execute(f"create or replace temp view package_records as {records_sql(files)}")
    con.execute(PACKAGES_VIEW)
