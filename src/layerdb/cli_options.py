"""Decorators and helpers shared by the commands of ``cli.py`` and ``report_commands.py``
(which must not import ``layerdb.cli``). Nothing heavy is imported here."""
from __future__ import annotations

import sys
from collections.abc import Callable

import click

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}


def _catalog_option(f: Callable) -> Callable:
    return click.option(
        "--catalog", "catalog", metavar="DIR", envvar="LAYERDB_HOME", default=None,
        help="Catalog directory (default: $LAYERDB_HOME, else $XDG_DATA_HOME/layerdb, "
             "else ~/.local/share/layerdb).")(f)


def _no_trunc(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    ctx.meta["layerdb.no_trunc"] = value
    return value


def _format_option(f: Callable) -> Callable:
    """``--format table|json|csv`` and ``--no-trunc`` (tables: full digests and exact numbers
    instead of 12-digit digests and human sizes; ``_render`` reads it)."""
    f = click.option("--no-trunc", is_flag=True, expose_value=False, callback=_no_trunc,
                     help="Tables: full digests and exact byte counts (default: 12-digit "
                          "digests, sizes like 121 MB). JSON and CSV are always exact.")(f)
    return click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
                        default="table", show_default=True, help="Output format.")(f)


def _params_option(f: Callable) -> Callable:
    return click.option("-p", "--param", "params", type=(str, str), multiple=True,
                        metavar="NAME VALUE", help="Bind :NAME (or $NAME) to VALUE. Repeatable.")(f)


def _render(columns: list[str], rows: list, fmt: str) -> None:
    from .output import render

    ctx = click.get_current_context(silent=True)
    no_trunc = bool(ctx and ctx.meta.get("layerdb.no_trunc"))
    render(columns, rows, fmt, sys.stdout, no_trunc=no_trunc)
