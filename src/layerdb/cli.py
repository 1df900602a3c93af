"""The ``layerdb`` command: thin click commands over the library, one error boundary.

Heavy modules (duckdb, pyarrow) are imported inside commands, so ``--help`` loads neither and
``extract`` loads no pyarrow.
"""
from __future__ import annotations

import errno
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from .cli_options import CONTEXT, _catalog_option, _format_option, _params_option, _render
from .errors import LayerdbError


@click.group(context_settings=CONTEXT)
@click.version_option(package_name="layerdb")
def cli() -> None:
    """layerdb: container images as a queryable database.

    Ingest image archives once (docker save, podman, skopeo, kaniko, OCI layouts); then every
    lookup is SQL and every file extraction a seek-and-read from a content-addressed cache.

    \b
      layerdb ingest *.tar
      layerdb images
      layerdb sql "select image, path, size from fs where path like '%/app'"
      layerdb extract --entrypoint --image myapp:latest -o ./app
    """


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Worker processes that read layers in parallel (default: number of cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@_catalog_option
def ingest(paths: tuple[str, ...], jobs: int | None, quiet: bool, catalog: str | None) -> None:
    """Ingest image archives and OCI layouts into the catalog.

    PATHS are docker/podman/skopeo archives (legacy or Docker >= 25 layout), kaniko tarballs,
    OCI layout directories or oci-archive tarballs, each possibly gzip- or zstd-compressed as a
    whole. Every blob is verified against its digest and every layer against its diff_id; an
    archive with any problem is refused whole, leaving catalog and cache as they were. Layers
    already in the catalog are not read again. Exit status: 0 all ingested, 1 any refused.

    \b
    Example:
      docker save myapp:latest | gzip > myapp.tar.gz && layerdb ingest myapp.tar.gz
    """
    from .ingest import ingest as run
    from .output import human_bytes

    show = not quiet and sys.stderr.isatty()
    progress, finish = _progress_bar() if show else (None, lambda: None)
    try:
        report = run(list(paths), catalog_root=catalog, jobs=jobs, progress=progress)
    finally:
        finish()
    for a in report.archives:
        if a.error is not None:
            click.echo(f"layerdb: error: {_shown(a.error)}", err=True)
        elif not quiet:
            from .model import familiar_ref

            names = sorted({familiar_ref(r) for i in a.images for r in i.refs}) or \
                sorted({i.id.short for i in a.images})
            from .output import printable

            click.echo(printable(f"{a.path}: {len(a.images)} image(s) ({', '.join(names[:5])}"
                       f"{', ...' if len(names) > 5 else ''}), {a.new_images} new, "
                       f"{a.new_layers} new layer(s), {human_bytes(a.bytes_read)} read"), err=True)
    if not quiet:
        click.echo(f"done in {report.seconds:.2f}s", err=True)
    if report.failed:
        sys.exit(1)


def _progress_bar() -> tuple[Callable[[dict], None], Callable[[], None]]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(),
                   TransferSpeedColumn(), TimeRemainingColumn(), transient=True,
                   console=None)
    bar.start()
    tasks: dict[str, Any] = {}

    def on(ev: dict) -> None:
        if ev["event"] == "archive":
            tasks[ev["path"]] = bar.add_task(os.path.basename(ev["path"])[:40], total=ev["bytes"] or 1)
            if not ev["bytes"]:
                bar.update(tasks[ev["path"]], completed=1)
        elif ev["event"] == "layer" and ev["path"] in tasks:
            bar.advance(tasks[ev["path"]], ev["bytes"])

    return on, bar.stop


@cli.command(context_settings=CONTEXT)
@_format_option
@_catalog_option
def images(fmt: str, catalog: str | None) -> None:
    """List ingested images.

    \b
    Example:
      layerdb images --format json
    """
    from .catalog import Catalog

    with Catalog(catalog) as cat:
        cols, rows = cat.query(
            "select name, id, platform, layer_count as layers, size, "
            "compressed_size, array_to_string(refs, ',') as refs, created from images "
            "order by name, platform" if fmt == "table" else
            "select id, name, refs, config_digest, platform, created, entrypoint, cmd, "
            "working_dir, env, \"user\", layer_count, size, compressed_size, source, ingested_at "
            "from images order by name, platform")
    _render(cols, rows, fmt)


@cli.command(context_settings=CONTEXT)
@click.argument("image")
@click.option("--platform", default=None, help="os/arch[/variant] when IMAGE names several.")
@_format_option
@_catalog_option
def layers(image: str, platform: str | None, fmt: str, catalog: str | None) -> None:
    """List the layers of IMAGE (a ref, image id or config digest), base first.

    \b
    Example:
      layerdb layers myapp:latest
    """
    from .catalog import Catalog

    with Catalog(catalog) as cat:
        img = cat.resolve_image(image, platform)
        cols, rows = cat.query(
            "select l.position, l.diff_id, l.digest, l.media_type, l.compressed_size, l.size, "
            "m.member_count as members, l.created_by from image_layers l "
            "left join layer_meta m on m.diff_id = l.diff_id where l.image_id = $id "
            "order by l.position", {"id": img.id})
    _render(cols, rows, fmt)


@cli.command(context_settings=CONTEXT)
@click.argument("query")
@_params_option
@_format_option
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the result to FILE instead (.parquet, .csv or .json by suffix).")
@_catalog_option
def sql(query: str, params: tuple, fmt: str, output: str | None, catalog: str | None) -> None:
    """Run a DuckDB SQL QUERY (or - to read it from stdin) over the catalog.

    Tables and views: images, image_layers, layers, files (every tar member of every layer)
    and fs (each image's merged filesystem). See docs/catalog.md for the columns.

    \b
    Examples:
      layerdb sql "select image, path, size from fs where path like '%/app'"
      layerdb sql "select path, size from fs where image = :img and size > 1e6" -p img myapp:latest
      layerdb sql "select * from files" -o files.parquet
    """
    from .catalog import Catalog

    if query == "-":
        query = sys.stdin.read()
    bound = _bind(query, dict(params))
    if bound:  # reports write parameters as :name; DuckDB wants $name
        from .reports import to_duckdb

        query = to_duckdb(query)
    with Catalog(catalog) as cat:
        if output:
            _write_result(cat, query, bound, output)
            return
        cols, rows = cat.query(query, bound)
    _render(cols, rows, fmt)


def _bind(query: str, params: dict[str, str]) -> dict[str, Any]:
    """Values for $name / :name parameters: numbers stay numbers, ``null`` is NULL."""
    from .reports import _value

    return {k: _value(v) for k, v in params.items()}


def _write_result(cat: Any, query: str, bound: dict[str, Any], output: str) -> None:
    from .errors import UsageError

    ext = os.path.splitext(output)[1].lower()
    if ext == ".parquet":
        cat.copy_to_parquet(query, bound, output)
        return
    if ext not in (".csv", ".json"):
        raise UsageError(f"{output}: unknown output type (use .parquet, .csv or .json)")
    from .output import render

    cols, rows = cat.query(query, bound)
    with open(output, "w", encoding="utf-8", newline="") as f:
        render(cols, rows, ext[1:], f)


@cli.command(context_settings=CONTEXT)
@click.option("--path", "path", default=None, help="Path inside the image (absolute, or relative "
              "to its WorkingDir).")
@click.option("--entrypoint", is_flag=True,
              help="Extract the executable the image runs (Entrypoint/Cmd, WorkingDir, PATH).")
@click.option("--image", default=None, help="Image ref, id or config digest. Optional when the "
              "path is in only one image.")
@click.option("--platform", default=None, help="os/arch[/variant] when a ref has several.")
@click.option("--layer", type=click.IntRange(0), default=None, metavar="N",
              help="Read the member as stored in layer N (0 = base; see `layerdb layers`), even "
                   "when an upper layer hides or deletes it.")
@click.option("-o", "--output", default=None, metavar="FILE|DIR",
              help="Where to write (default: stdout; a directory goes out as a tar stream).")
@click.option("--keep-setuid", is_flag=True, help="Keep setuid/setgid bits (dropped by default).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@_catalog_option
def extract(path: str | None, entrypoint: bool, image: str | None, platform: str | None,
            layer: int | None, output: str | None, keep_setuid: bool, quiet: bool,
            catalog: str | None) -> None:
    """Extract a file or directory from an image's merged filesystem.

    Symlinks are followed inside the image, hardlinks give their target's bytes, every file is
    checked against the catalog's sha256. A directory with -o DIR is copied into DIR (like
    `cp -r SRC/. DIR`); a file goes to -o FILE, or into -o DIR/ under its own name. To stdout,
    a directory is a tar stream holding exactly what -o DIR would write (nothing outside it,
    no devices, hardlinks as copies, no setuid bits unless --keep-setuid). A tar stream or
    binary content is never written to a terminal. Entries that cannot be written safely
    (a parent that is a symlink, a dangling hardlink, a NUL in a name, a name over 255
    bytes, a device) are skipped with one warning each.

    \b
    Examples:
      layerdb extract --path /home/app/app --image myapp:latest -o ./app
      layerdb extract --entrypoint --image myapp:latest -o ./app
      layerdb extract --path / --image myapp:latest -o rootfs
      layerdb extract --path /root/.ssh/id_rsa --layer 2 --image myapp:latest -o id_rsa
      layerdb extract --path /etc --image myapp:latest | tar -t
    """
    from .errors import UsageError
    from .extract import extract as run
    from .output import human_size, printable

    if not path and not entrypoint:
        raise UsageError("give --path PATH or --entrypoint")
    if path and entrypoint:
        raise UsageError("give --path or --entrypoint, not both")
    to_file = output not in (None, "-")
    show = to_file and not quiet and sys.stderr.isatty()
    progress, finish = _extract_bar() if show else (None, lambda: None)
    try:
        res = run(path=path, image=image, output=output, catalog_root=catalog, platform=platform,
                  entrypoint=entrypoint, keep_setuid=keep_setuid, layer=layer, progress=progress)
    finally:
        finish()
    for w in res.warnings:
        click.echo(f"layerdb: warning: {printable(w)}", err=True)
    if to_file and not quiet:
        where = f" (layer {res.layer})" if res.layer is not None else ""
        click.echo(printable(f"{res.image.name}:{res.path}{where} -> {res.output} "
                             f"({res.files} file(s), {human_size(res.bytes)})"), err=True)


def _extract_bar() -> tuple[Callable[[int, int], None], Callable[[], None]]:
    """A progress bar on stderr, started on the first call (a single small file shows none)."""
    state: dict[str, Any] = {}

    def on(done: int, total: int) -> None:
        if "bar" not in state:
            if total < (8 << 20):
                return
            from rich.console import Console
            from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

            bar = state["bar"] = Progress(BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                                          transient=True, console=Console(stderr=True))
            bar.start()
            state["task"] = bar.add_task("extract", total=total)
        state["bar"].update(state["task"], completed=done, total=total)

    def finish() -> None:
        if "bar" in state:
            state["bar"].stop()

    return on, finish


from .report_commands import check, diff, report  # noqa: E402

cli.add_command(report)
cli.add_command(check)
cli.add_command(diff)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group; turns every ``LayerdbError`` into one line."""
    try:
        cli.main(args=argv, prog_name="layerdb", standalone_mode=False)
    except LayerdbError as e:
        click.echo(f"layerdb: error: {_shown(e)}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except SystemExit:
        # click turns EPIPE on stdout into a silent exit 1 (and wraps stdout); end as cat does
        if type(sys.stdout).__name__ == "PacifyFlushWrapper":
            _closed_pipe()
        raise
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code if e.exit_code else 2)
    except click.exceptions.Abort:
        click.echo("layerdb: aborted", err=True)
        sys.exit(130)
    except KeyboardInterrupt:
        click.echo("layerdb: interrupted", err=True)
        sys.exit(130)
    except BrokenPipeError:
        _closed_pipe()
    except OSError as e:
        if e.errno == errno.EPIPE:
            _closed_pipe()
        name = os.fsdecode(e.filename) + ": " if e.filename else ""
        click.echo(f"layerdb: error: {_shown(name + (e.strerror or str(e)))}", err=True)
        sys.exit(1)
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("LAYERDB_DEBUG"):
            raise
        click.echo(f"layerdb: internal error: {type(e).__name__}: {_shown(e, first_line=True)}"
                   " (set LAYERDB_DEBUG=1 for a traceback)", err=True)
        sys.exit(3)
    try:
        sys.stdout.flush()  # here, not at exit: a reader that went away ends us quietly
    except BrokenPipeError:
        _closed_pipe()
    sys.exit(0)


def _shown(e: object, first_line: bool = False) -> str:
    """An error for a terminal: one line (control characters, newlines too, escaped), bounded."""
    from .output import printable

    text = str(e)
    if first_line and text.strip():
        text = text.splitlines()[0]
    if len(text) > 2000:
        text = text[:2000] + "..."
    return printable(text)


def _closed_pipe() -> None:
    """The reader of stdout went away (``layerdb ... | head``): end as ``cat`` does, killed by
    SIGPIPE, with no message and nothing more flushed."""
    import signal

    try:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)
    except OSError:
        pass
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    os.kill(os.getpid(), signal.SIGPIPE)
    os._exit(128 + signal.SIGPIPE)  # not reached where SIGPIPE exists


if __name__ == "__main__":
    main()
