"""The ``layerdb`` command: thin click commands over the library, one error boundary.

Heavy modules (duckdb, pyarrow) are imported inside commands, so ``--help`` loads neither and
``extract`` loads no pyarrow.
"""
from __future__ import annotations

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
              help="Worker processes that read (and download) layers in parallel (default: number of cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@click.option("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
              help="Registry: the platform to take from an index (default: this machine's).")
@click.option("--all-platforms", is_flag=True, help="Registry: every platform of an index.")
@click.option("--all-tags", is_flag=True, help="docker://HOST/REPO: every tag of the repository.")
@click.option("--all-repositories", is_flag=True,
              help="docker://HOST: every tag of every repository of the registry.")
@click.option("--creds", default=None, metavar="USER:PASS",
              help="Registry credentials (else $REGISTRY_AUTH_FILE, auth.json, ~/.docker/config.json).")
@click.option("--authfile", default=None, metavar="FILE", help="Registry credentials file (auth.json format).")
@click.option("--tls-verify", type=click.BOOL, default=True, metavar="BOOL",
              help="--tls-verify=false allows plain HTTP and unverified certificates.")
@_catalog_option
def ingest(paths: tuple[str, ...], jobs: int | None, quiet: bool, platform: str | None,
           all_platforms: bool, all_tags: bool, all_repositories: bool, creds: str | None,
           authfile: str | None, tls_verify: bool, catalog: str | None) -> None:
    """Ingest image archives, OCI layouts, streams and registry images into the catalog.

    PATHS are docker/podman/skopeo archives (legacy or Docker >= 25 layout), kaniko tarballs,
    OCI layout directories or oci-archive tarballs, each possibly gzip- or zstd-compressed as a
    whole; - (stdin), a FIFO or <(...) read once; skopeo-style docker-archive:PATH,
    oci:DIR[:TAG], oci-archive:PATH[:TAG]; or docker://HOST[:PORT]/REPO[:TAG|@DIGEST], read
    with the registry API (no daemon; only layers not in the cache are downloaded). Every blob
    is verified against its digest and every layer against its diff_id; an archive (or a
    registry image) with any problem is refused whole, leaving catalog and cache as they were.
    Layers already in the catalog are not read again. Registry requests are retried on
    connection errors, 5xx and 429 ($LAYERDB_REGISTRY_RETRIES, default 5). Exit status: 0 all
    ingested, 1 any refused.

    \b
    Examples:
      docker save myapp:latest | layerdb ingest -
      layerdb ingest docker://registry.example.com/team/app:v1 --creds me:secret
      layerdb ingest docker://localhost:5000/app --all-tags --tls-verify=false -j 8
    """
    from .ingest import ingest as run
    from .output import human_bytes

    show = not quiet and sys.stderr.isatty()
    progress, finish = _progress_bar() if show else (None, lambda: None)
    try:
        report = run(list(paths), catalog_root=catalog, jobs=jobs, progress=progress,
                     options=_source_options(platform, all_platforms, all_tags, all_repositories,
                                             creds, authfile, tls_verify))
    finally:
        finish()
    for a in report.archives:
        if a.error is not None:
            click.echo(f"layerdb: error: {a.error}", err=True)
        elif not quiet:
            from .model import familiar_ref

            names = sorted({familiar_ref(r) for i in a.images for r in i.refs}) or \
                sorted({i.id.short for i in a.images})
            click.echo(f"{a.path}: {len(a.images)} image(s) ({', '.join(names[:5])}"
                       f"{', ...' if len(names) > 5 else ''}), {a.new_images} new, "
                       f"{a.new_layers} new layer(s), {human_bytes(a.bytes_read)} read", err=True)
    if not quiet:
        click.echo(f"done in {report.seconds:.2f}s", err=True)
    if report.failed:
        sys.exit(1)


def _source_options(platform: str | None, all_platforms: bool, all_tags: bool,
                    all_repositories: bool, creds: str | None, authfile: str | None,
                    tls_verify: bool) -> Any:
    from .model import Platform
    from .sources import SourceOptions

    if platform and all_platforms:
        raise click.UsageError("--platform and --all-platforms exclude each other")
    want = None
    if platform:
        want = Platform.parse(platform if "/" in platform else f"linux/{platform}")
        if not want.os or not want.architecture:
            raise click.BadParameter(f"{platform!r}: expected OS/ARCH[/VARIANT]", param_hint="--platform")
    return SourceOptions.from_env(platform=want, all_platforms=all_platforms, all_tags=all_tags,
                                  all_repositories=all_repositories, creds=creds,
                                  auth_file=authfile, tls_verify=tls_verify)


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
            "select name, substr(id, 8, 12) as id, platform, layer_count as layers, size, "
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
@click.option("-o", "--output", default=None, metavar="FILE|DIR",
              help="Where to write (default: stdout; a directory goes out as a tar stream).")
@click.option("--keep-setuid", is_flag=True, help="Keep setuid/setgid bits (dropped by default).")
@_catalog_option
def extract(path: str | None, entrypoint: bool, image: str | None, platform: str | None,
            output: str | None, keep_setuid: bool, catalog: str | None) -> None:
    """Extract a file or directory from an image's merged filesystem.

    Symlinks are followed inside the image, hardlinks give their target's bytes, every file is
    checked against the catalog's sha256. A directory with -o DIR is copied into DIR (like
    `cp -r SRC/. DIR`); a file goes to -o FILE, or into -o DIR/ under its own name.

    \b
    Examples:
      layerdb extract --path /home/app/app --image myapp:latest -o ./app
      layerdb extract --entrypoint --image myapp:latest -o ./app
      layerdb extract --path / --image myapp:latest -o rootfs
    """
    from .errors import UsageError
    from .extract import extract as run

    if not path and not entrypoint:
        raise UsageError("give --path PATH or --entrypoint")
    if path and entrypoint:
        raise UsageError("give --path or --entrypoint, not both")
    res = run(path=path, image=image, output=output, catalog_root=catalog, platform=platform,
              entrypoint=entrypoint, keep_setuid=keep_setuid)
    for w in res.warnings:
        click.echo(f"layerdb: warning: {w}", err=True)
    if output not in (None, "-"):
        click.echo(f"{res.image.name}:{res.path} -> {res.output} ({res.files} file(s), "
                   f"{res.bytes} bytes)", err=True)


from .report_commands import check, diff, report  # noqa: E402

cli.add_command(report)
cli.add_command(check)
cli.add_command(diff)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group; turns every ``LayerdbError`` into one line."""
    try:
        cli.main(args=argv, prog_name="layerdb", standalone_mode=False)
    except LayerdbError as e:
        click.echo(f"layerdb: error: {e}", err=True)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
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
        try:
            sys.stdout = None  # type: ignore[assignment]
        finally:
            os._exit(141)
    except OSError as e:
        click.echo(f"layerdb: error: {e.filename + ': ' if e.filename else ''}{e.strerror or e}",
                   err=True)
        sys.exit(1)
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("LAYERDB_DEBUG"):
            raise
        click.echo(f"layerdb: internal error: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
                   " (set LAYERDB_DEBUG=1 for a traceback)", err=True)
        sys.exit(3)
    sys.exit(0)


if __name__ == "__main__":
    main()
