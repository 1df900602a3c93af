"""The ``rm``, ``gc`` and ``verify`` commands: parse, one call into
``catalog.housekeeping``, render. Registered on the ``layerdb`` group by ``cli.py``."""
from __future__ import annotations

import sys

import click

from .cli_options import CONTEXT, catalog_option, format_option, render_rows

_WAIT = click.option("--wait", "wait", type=click.FloatRange(0), default=600.0, show_default=True,
                     metavar="SECONDS", help="How long to wait for a running ingest to finish.")


@click.command(name="rm", context_settings=CONTEXT)
@click.argument("images", nargs=-1, required=True)
@click.option("--platform", default=None, help="os/arch[/variant] when a ref names several.")
@_WAIT
@catalog_option
def rm(images: tuple[str, ...], platform: str | None, wait: float, catalog: str | None) -> None:
    """Remove images from the catalog (like `docker rmi`).

    A ref that names an image with other refs is only untagged; the image's last ref, or its
    id, forgets the image. Its layers and files stay until `layerdb gc` (another image may
    share them).

    \b
    Examples:
      layerdb rm myapp:old
      layerdb rm sha256:3f2a9c1b && layerdb gc
    """
    from .catalog.housekeeping import remove

    out = remove(catalog, list(images), platform=platform, wait=wait)
    for r in out.untagged:
        click.echo(f"Untagged: {r}")
    for i in out.deleted:
        click.echo(f"Deleted: {i}")


@click.command(context_settings=CONTEXT)
@click.option("-n", "--dry-run", is_flag=True, help="Say what would go, remove nothing.")
@_WAIT
@catalog_option
def gc(dry_run: bool, wait: float, catalog: str | None) -> None:
    """Remove what no image uses: layers (cache, member tables, indexes), the member tables
    of removed images, and staging files left by interrupted ingests. Prints what it freed.

    It takes the writer's lock (no ingest runs meanwhile); readers keep working.

    \b
    Example:
      layerdb rm myapp:old && layerdb gc
    """
    from .catalog.housekeeping import collect
    from .output import human_bytes

    out = collect(catalog, dry_run=dry_run, wait=wait)
    verb = "would free" if dry_run else "freed"
    click.echo(f"{len(out.layers)} unused layer(s), {out.files} file(s): {verb} "
               f"{human_bytes(out.bytes)}")


@click.command(context_settings=CONTEXT)
@click.option("--image", default=None, metavar="REF", help="Only this image's layers and tables.")
@click.option("--platform", default=None, help="os/arch[/variant] when REF names several.")
@format_option
@catalog_option
def verify(image: str | None, platform: str | None, fmt: str, catalog: str | None) -> None:
    """Check the cache and the catalog's files: re-hash every cached layer against its diff_id,
    and check each member table, layer index and fate file against the catalog's counts.

    Exit status 0 when all is well, 1 naming each damaged file and how to repair it
    (re-ingest its source; `layerdb gc` first drops a damaged layer no image uses).

    \b
    Examples:
      layerdb verify
      layerdb verify --image myapp:latest --format json
    """
    from .catalog.housekeeping import verify as run

    n, problems = run(catalog, image=image, platform=platform)
    if problems:
        render_rows(["what", "id", "file", "problem", "repair"],
                [(p.what, p.id, p.file, p.problem, p.repair) for p in problems], fmt)
        click.echo(f"layerdb: error: {len(problems)} problem(s) in {n} checked item(s)", err=True)
        sys.exit(1)
    if fmt == "table":
        click.echo(f"{n} item(s) checked: all well", err=True)
    else:
        render_rows(["what", "id", "file", "problem", "repair"], [], fmt)
