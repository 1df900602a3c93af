"""Decorators and helpers shared by the commands of ``cli.py`` and ``report_commands.py``
(which must not import ``layerdb.cli``). Nothing heavy is imported here."""
from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


#: where the group's own ``--catalog`` (``layerdb --catalog DIR COMMAND``) is kept; ctx.meta is
#: shared by a context and its children
GLOBAL_CATALOG = "layerdb.catalog"


def _pick_catalog(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """A command's ``--catalog`` wins, then the group's (``layerdb --catalog DIR ...``); None
    leaves it to ``settings().home`` ($LAYERDB_HOME, then the XDG default)."""
    return value or ctx.meta.get(GLOBAL_CATALOG) or None


def catalog_option(f: Callable) -> Callable:
    """``--catalog DIR``, falling back to the group's (``layerdb --catalog DIR COMMAND``)."""
    return click.option(
        "--catalog", "catalog", metavar="DIR", default=None,
        callback=_pick_catalog,
        help="Catalog directory (default: $LAYERDB_HOME, else $XDG_DATA_HOME/layerdb, "
             "else ~/.local/share/layerdb). Also `layerdb --catalog DIR COMMAND`.")(f)


def existing_catalog(root: str | None) -> str:
    """The catalog directory a read command uses; ``NoCatalog`` when it holds no catalog
    (reading never creates one, and an empty table would hide a wrong path)."""
    from .catalog.layout import Layout
    from .errors import NoCatalog

    layout = Layout.at(root)
    path = layout.root
    if not layout.exists():
        raise NoCatalog(f"no catalog at {path}; run layerdb ingest first "
                        "(or give --catalog DIR / $LAYERDB_HOME)")
    return path


def _norm_platform(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """``arm64`` -> ``linux/arm64``, ``x86_64`` -> ``linux/amd64`` (see ``Platform.parse``)."""
    if not value:
        return value
    from .model import Platform

    return str(Platform.parse(value)) if value.strip() else None


def platform_option(help: str = "os/arch[/variant] when IMAGE names several (arm64 means "
                     "linux/arm64).") -> Callable[[Callable], Callable]:
    """``--platform os/arch[/variant]``, normalised as ``Platform.parse`` reads it."""
    return click.option("--platform", default=None, callback=_norm_platform, help=help)


@contextmanager
def platform_hint(root: str | None, ref: str | None, platform: str | None) -> Iterator[None]:
    """When no image matches ``ref`` for ``platform``, say which platforms there are."""
    from .errors import ImageNotFound

    try:
        yield
    except ImageNotFound as e:
        if not platform:
            raise
        present = _platforms_of(root, ref)
        if not present:
            raise
        raise ImageNotFound(f"{e}; present: {', '.join(present)}") from e


def _platforms_of(root: str | None, ref: str | None) -> list[str]:
    from .merged import open_view
    from .selection import matching

    try:
        view = open_view(root)
        try:
            rows = view.images()
        finally:
            view.close()
    except Exception:  # noqa: BLE001 - only a hint
        return []
    if ref:
        rows = matching(rows, ref)[1]
    return sorted({r.platform for r in rows})


def _no_trunc(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta["layerdb.no_trunc"] = value
    return value


def format_option(f: Callable) -> Callable:
    """``--format table|json|csv`` and ``--no-trunc`` (tables: full digests and exact numbers
    instead of 12-digit digests and human sizes; ``render_rows`` reads it)."""
    f = click.option("--no-trunc", is_flag=True, expose_value=False, callback=_no_trunc,
                     help="Tables: full digests and exact byte counts (default: 12-digit "
                          "digests, sizes like 121 MB). JSON and CSV are always exact.")(f)
    return click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
                        default="table", show_default=True, help="Output format.")(f)


def _check_params(ctx: click.Context, param: click.Parameter, value: tuple) -> tuple:
    for name, v in value:  # `-p a -p b 1` reads as a=-p: name the parameter left without value
        if v in ("-p", "--param") or name in ("-p", "--param"):
            from .errors import UsageError

            raise UsageError(f"-p {name}: no VALUE given (use -p NAME VALUE, null for NULL)")
    return value


def params_option(f: Callable) -> Callable:
    """``-p NAME VALUE`` (repeatable): the values of a query's ``:NAME`` parameters."""
    return click.option("-p", "--param", "params", type=(str, str), multiple=True,
                        metavar="NAME VALUE", callback=_check_params,
                        help="Bind :NAME (or $NAME) to VALUE. Repeatable.")(f)


def render_rows(columns: list[str], rows: list, fmt: str) -> None:
    """Write (columns, rows) to stdout as ``--format`` says, honouring ``--no-trunc``."""
    from .output import render

    ctx = click.get_current_context(silent=True)
    no_trunc = bool(ctx and ctx.meta.get("layerdb.no_trunc"))
    render(columns, rows, fmt, sys.stdout, no_trunc=no_trunc)
