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


def _format_option(f: Callable) -> Callable:
    return click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]),
                        default="table", show_default=True, help="Output format.")(f)


def _params_option(f: Callable) -> Callable:
    return click.option("-p", "--param", "params", type=(str, str), multiple=True,
                        metavar="NAME VALUE", help="Bind :NAME (or $NAME) to VALUE. Repeatable.")(f)


def _render(columns: list[str], rows: list, fmt: str) -> None:
    from .output import render

    render(columns, rows, fmt, sys.stdout)
