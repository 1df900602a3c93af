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

from .cli_options import (
    CONTEXT,
    GLOBAL_CATALOG,
    catalog_option,
    existing_catalog,
    format_option,
    params_option,
    platform_hint,
    platform_option,
    render_rows,
)
from .errors import LayerdbError, error_line


@click.group(context_settings=CONTEXT)
@click.option("--catalog", "catalog", metavar="DIR", default=None,
              help="Catalog directory for every command (as each command's --catalog).")
@click.version_option(package_name="layerdb")
@click.pass_context
def cli(ctx: click.Context, catalog: str | None) -> None:
    """layerdb: container images as a queryable database.

    Ingest image archives once (docker save, podman, skopeo, kaniko, OCI layouts); then every
    lookup is SQL and every file extraction a seek-and-read from a content-addressed cache.

    \b
      layerdb ingest *.tar
      layerdb images
      layerdb --catalog ./sample/catalog images
      layerdb sql "select image, path, size from fs where path like '%/app'"
      layerdb extract --entrypoint --image myapp:latest -o ./app
    """
    if catalog:
        ctx.meta[GLOBAL_CATALOG] = catalog


@cli.command(context_settings=CONTEXT)
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=False))
@click.option("-j", "--jobs", type=click.IntRange(1, 256), default=None,
              help="Worker processes that read (and download) layers in parallel (default: number of cores).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@click.option("--verify", is_flag=True,
              help="Read and check every blob, even of layers the cache holds already.")
@click.option("--wait", type=click.FloatRange(0), default=600.0, show_default=True,
              metavar="SECONDS", help="How long to wait for another ingest to finish.")
@click.option("--platform", default=None, metavar="OS/ARCH[/VARIANT]",
              help="Registry: the platform to take from an index (default: this machine's).")
@click.option("--all-platforms", is_flag=True, help="Registry: every platform of an index.")
@click.option("--all-tags", is_flag=True, help="docker://HOST/REPO: every tag of the repository.")
@click.option("--all-repositories", is_flag=True,
              help="docker://HOST: every tag of every repository of the registry.")
@click.option("--creds", default=None, metavar="USER:PASS",
              help="Registry credentials (else $REGISTRY_AUTH_FILE, auth.json, ~/.docker/config.json, "
                   "with their credHelpers and credsStore run: docker-credential-NAME get, "
                   "30 s at most).")
@click.option("--authfile", default=None, metavar="FILE",
              help="Registry credentials file (auth.json or config.json format; credHelpers and "
                   "credsStore are run).")
@click.option("--tls-verify", type=click.BOOL, default=True, metavar="BOOL",
              help="--tls-verify=false allows plain HTTP and unverified certificates.")
@catalog_option
def ingest(paths: tuple[str, ...], jobs: int | None, quiet: bool, verify: bool, wait: float,
           platform: str | None, all_platforms: bool, all_tags: bool, all_repositories: bool,
           creds: str | None, authfile: str | None, tls_verify: bool, catalog: str | None) -> None:
    """Ingest image archives, OCI layouts, streams and registry images into the catalog.

    PATHS are docker/podman/skopeo archives (legacy or Docker >= 25 layout), kaniko tarballs,
    OCI layout directories or oci-archive tarballs, each possibly gzip- or zstd-compressed as a
    whole; - (stdin), a FIFO or <(...) read once; skopeo-style docker-archive:PATH,
    oci:DIR[:TAG], oci-archive:PATH[:TAG]; or docker://HOST[:PORT]/REPO[:TAG|@DIGEST], read
    with the registry API (no daemon; only layers not in the cache are downloaded). Every blob
    is verified against its digest and every layer against its diff_id; an archive (or a
    registry image) with any problem is refused whole, leaving catalog and cache as they were.
    Layers already in the catalog are not read again; a blob digest not seen before is still
    read and checked before it is recorded (--verify: every blob). A bare OCI tag (an
    index.json ref.name of just v1) is recorded as ARCHIVE:v1, ARCHIVE the archive's file name
    without .tar/.tar.gz/.oci (app-v1.tar -> app-v1:v1); a ref that moves to another image (a
    retag) is said on stderr: ref app:latest moved from sha256:... to sha256:... Registry requests are retried on
    connection errors, 5xx and 429 ($LAYERDB_REGISTRY_RETRIES, default 5). Exit status: 0 all
    ingested, 1 any refused.

    \b
    Limits (past one, the archive is refused with one line):
      JSON documents (index.json, manifest.json, manifests, configs): 4 MiB each, nested at
        most 100 levels; config fields must have their JSON types (Env an array of strings...)
      an archive compressed as a whole: decompressed (to a temporary file under the catalog)
        to at most 100x its size + 64 MiB; $LAYERDB_MAX_ARCHIVE_RATIO changes the 100
      a credential helper (docker-credential-NAME): 30 s to answer, 64 KiB of output

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

    def on(ev: dict) -> None:
        if ev["event"] == "wait" and not quiet:
            click.echo(f"layerdb: {ev['message']}", err=True)
        elif ev["event"] == "moved":  # a retag: said even with -q (it changes what a name means)
            from .errors import error_line

            olds = ", ".join(f"{o[:19]}…" for o in ev["from"])
            line = f"ref {ev['ref']} moved from {olds} to {ev['to'][:19]}…"
            click.echo(f"layerdb: {error_line(line)}", err=True)
        elif ev["event"] == "renamed":  # an older catalog's bare tag, now ARCHIVE:TAG
            if not quiet:
                from .errors import error_line

                line = f"ref {ev['ref']} of {ev['image'][:19]}… is now {ev['to']}"
                click.echo(f"layerdb: {error_line(line)}", err=True)
        elif progress is not None:
            progress(ev)

    try:
        report = run(list(paths), catalog_root=catalog, jobs=jobs, progress=on, verify=verify,
                     wait=wait, options=_source_options(platform, all_platforms, all_tags,
                                                        all_repositories, creds, authfile, tls_verify))
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
@format_option
@catalog_option
def images(fmt: str, catalog: str | None) -> None:
    """List ingested images.

    id is the manifest digest (layerdb's image id); config_digest is docker's IMAGE ID.
    Twins (one image saved as docker-archive and as OCI) are two rows with one
    config_digest; --image takes either digest, a ref, a repository or a tag, or a
    digest reference as docker's (repo@sha256:<64 hex>: that manifest, or that index's images).

    \b
    Examples:
      layerdb images
      layerdb images --no-trunc
      layerdb images --format json
    """
    from .catalog import Catalog

    with Catalog(existing_catalog(catalog)) as cat:
        cols, rows = cat.query(
            "select name, id, config_digest, platform, layer_count as layers, size, "
            "compressed_size, array_to_string(refs, ',') as refs, created from images "
            "order by name, platform" if fmt == "table" else
            "select id, name, refs, config_digest, platform, created, entrypoint, cmd, "
            "working_dir, env, \"user\", layer_count, size, compressed_size, source, ingested_at "
            "from images order by name, platform")
    render_rows(cols, rows, fmt)


@cli.command(context_settings=CONTEXT)
@click.argument("image")
@platform_option()
@format_option
@catalog_option
def layers(image: str, platform: str | None, fmt: str, catalog: str | None) -> None:
    """List the layers of IMAGE (a ref, image id or config digest), base first.

    \b
    Example:
      layerdb layers myapp:latest
    """
    from .catalog import Catalog

    root = existing_catalog(catalog)
    with platform_hint(root, image, platform), Catalog(root) as cat:
        img = cat.resolve_image(image, platform)
        cols, rows = cat.query(
            "select l.position, l.diff_id, l.digest, l.media_type, l.compressed_size, l.size, "
            "m.member_count as members, l.created_by from image_layers l "
            "left join layer_meta m on m.diff_id = l.diff_id where l.image_id = $id "
            "order by l.position", {"id": img.id})
    render_rows(cols, rows, fmt)


@cli.command(context_settings=CONTEXT)
@click.argument("query")
@params_option
@format_option
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the result to FILE instead (.parquet, .csv or .json by suffix).")
@click.option("--table", "tables", multiple=True, metavar="NAME=FILE",
              help="Make FILE (.csv, .json or .parquet) readable as the view NAME. Repeatable.")
@catalog_option
def sql(query: str, params: tuple, fmt: str, output: str | None, tables: tuple[str, ...],
        catalog: str | None) -> None:
    """Run a DuckDB SQL QUERY (or - to read it from stdin) over the catalog.

    Tables and views: images, image_layers, layers, files (every tar member of every layer),
    members (every member of every image's layers, with its fate) and fs (each image's merged
    filesystem). See docs/catalog.md for the columns.

    The query only reads: statements that write (COPY, CREATE, INSERT, ATTACH, INSTALL,
    SET...) are refused, and it can read no file but the catalog's own and those named with
    --table. -o is the one way out.

    \b
    Examples:
      layerdb sql "select image, path, size from fs where path like '%/app'"
      layerdb sql "select path, size from fs where image = :img and size > 1e6" -p img myapp:latest
      layerdb sql "select * from files" -o files.parquet
      layerdb sql "select f.image, f.path from fs f join cves c on c.sha256 = f.sha256" --table cves=cves.csv
    """
    from .catalog import Catalog
    from .errors import UsageError

    named: dict[str, str] = {}
    for t in tables:
        name, sep, path = t.partition("=")
        if not sep or not name.isidentifier() or not path:
            raise UsageError(f"--table {t!r}: give NAME=FILE (NAME a plain identifier)")
        if not os.path.isfile(path):
            raise UsageError(f"--table {name}: {path}: no such file")
        named[name] = path

    if query == "-":
        query = sys.stdin.read()
    bound = _bind(query, dict(params))
    if bound:  # reports write parameters as :name; DuckDB wants $name
        from .reports import to_duckdb

        query = to_duckdb(query)
    with Catalog(existing_catalog(catalog), sandbox=True, tables=named) as cat:
        if output:
            _write_result(cat, query, bound, output)
            return
        cols, rows = cat.query(query, bound)
    render_rows(cols, rows, fmt)


def _bind(query: str, params: dict[str, str]) -> dict[str, Any]:
    """Values for $name / :name parameters: numbers stay numbers, ``null`` is NULL."""
    from .reports import parse_value

    return {k: parse_value(v) for k, v in params.items()}


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
@platform_option("os/arch[/variant] when a ref has several (arm64 means linux/arm64).")
@click.option("--layer", type=click.IntRange(0), default=None, metavar="N",
              help="Read the member as stored in layer N (0 = base; see `layerdb layers`), even "
                   "when an upper layer hides or deletes it.")
@click.option("-o", "--output", default=None, metavar="FILE|DIR",
              help="Where to write (default: stdout; a directory goes out as a tar stream).")
@click.option("--keep-setuid", is_flag=True, help="Keep setuid/setgid bits (dropped by default).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bar, no summary.")
@catalog_option
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
    root = existing_catalog(catalog)
    to_file = output not in (None, "-")
    show = to_file and not quiet and sys.stderr.isatty()
    progress, finish = _extract_bar() if show else (None, lambda: None)
    try:
        with platform_hint(root, image, platform):
            res = run(path=path, image=image, output=output, catalog_root=root, platform=platform,
                      entrypoint=entrypoint, keep_setuid=keep_setuid, layer=layer,
                      progress=progress)
    finally:
        finish()
    for w in res.warnings:
        click.echo(f"layerdb: warning: {error_line(w)}", err=True)
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


@cli.command(context_settings=CONTEXT)
@click.option("--image", default=None, help="Image ref, id or config digest (optional when the "
              "catalog holds one image).")
@click.option("--platform", default=None, help="os/arch[/variant] when a ref has several.")
@click.option("-o", "--output", default=None, metavar="OUT",
              help="Where to write the new image (an archive file, or a directory for --format oci).")
@click.option("--format", "fmt", type=click.Choice(["oci-archive", "docker-archive", "oci"]),
              default="oci-archive", show_default=True, help="Output: oci-archive, a docker-archive "
              "that docker load and podman load take, or an OCI layout directory.")
@click.option("--tag", default=None, metavar="NAME:TAG",
              help="The new image's name (default: the source's first ref with -slim on its tag).")
@click.option("--keep", "keep", multiple=True, metavar="PATH",
              help="Also keep PATH (a file, or a directory and all below it), with its own needs "
                   "when executable. Repeatable. Relative paths are from WorkingDir.")
@click.option("--keep-sql", default=None, metavar="QUERY",
              help="Also keep the paths in the first column of QUERY, run read-only over the "
                   "catalog (:image is the image's id).")
@click.option("--no-entrypoint", is_flag=True,
              help="Keep only what --keep/--keep-sql name (and their needs), not the entrypoint.")
@click.option("--compression", type=click.Choice(["gzip", "zstd", "none"]), default=None,
              help="Layer compression (default: gzip; none for docker-archive).")
@click.option("--allow-missing", is_flag=True,
              help="Go on (with a warning) when a needed library or interpreter is not in the image.")
@click.option("--dry-run", is_flag=True,
              help="Print what would be kept, one row per path with its reason, and the sizes; "
                   "write nothing.")
@click.option("--list-format", "list_fmt", type=click.Choice(["table", "json", "csv"]),
              default="table", show_default=True, help="Format of the --dry-run list.")
@click.option("--force", is_flag=True, help="Replace OUT if it exists.")
@catalog_option
def slim(image: str | None, platform: str | None, output: str | None, fmt: str, tag: str | None,
         keep: tuple[str, ...], keep_sql: str | None, no_entrypoint: bool, compression: str | None,
         allow_missing: bool, dry_run: bool, list_fmt: str, force: bool, catalog: str | None) -> None:
    """Repack what an image needs to run into a new, much smaller one-layer image.

    Kept: the entrypoint (as extract --entrypoint finds it), its ELF interpreter and libraries
    (transitively, searched as the image's loader searches: RPATH/RUNPATH with $ORIGIN,
    LD_LIBRARY_PATH, /etc/ld.so.cache or ld.so.conf, default directories), #! interpreters
    (/usr/bin/env NAME through the image's PATH), and what libc reads at run time without a
    header naming it: /etc/passwd and /etc/group, /etc/ld.so.cache, /etc/nsswitch.conf and its
    NSS modules (passwd, group, hosts), the CA bundle. Symlinks stay symlinks, hardlinks stay
    hardlinks, parent directories keep their modes and owners, xattrs are carried. Built from
    the cache: no daemon, no unpacking; the same input and options give byte-identical output.
    Limits: 4096 DT_NEEDED per object and 100,000 objects analysed (past them: one error
    line); /etc/ld.so.cache 64 MiB, nsswitch.conf and the loader's path files 1 MiB each (past
    them the file is not read, with a warning for the first two).

    \b
    Examples:
      layerdb slim --image myapp:latest -o myapp-slim.tar
      layerdb slim --image myapp:latest --dry-run
      layerdb slim --image py:3 --keep /usr/lib/python3.11 -o py.tar --format docker-archive
      layerdb slim --image myapp --keep-sql "select path from fs where image_id = :image
        and path like '/usr/share/zoneinfo/%'" -o out.tar --tag myapp:slim
    """
    from .output import human_bytes
    from .slim import slim as run

    res = run(image, output, catalog_root=catalog, platform=platform, keep=keep, keep_sql=keep_sql,
              entrypoint=not no_entrypoint, allow_missing=allow_missing, fmt=fmt, tag=tag,
              compression=compression, dry_run=dry_run, force=force)
    p = res.plan
    for w in p.warnings:
        click.echo(f"layerdb: warning: {error_line(w)}", err=True)
    if dry_run:
        render_rows(["path", "type", "size", "reason"], p.rows(), list_fmt)
        click.echo(f"{p.image.name}: would keep {len(p.kept)} paths, {human_bytes(p.kept_bytes)} of "
                   f"files; the image's layers are {human_bytes(p.image_size)} "
                   f"({human_bytes(p.image_compressed)} compressed)", err=True)
        return
    out = res.written
    assert out is not None
    click.echo(f"{p.image.name} -> {out.output} ({out.format}): {len(p.kept)} paths, layer "
               f"{human_bytes(out.layer.tar_size)} ({human_bytes(out.layer.size)} {out.layer.compression}); "
               f"was {human_bytes(p.image_size)} ({human_bytes(p.image_compressed)} compressed)",
               err=True)


@cli.command(context_settings=CONTEXT)
@click.argument("image")
@platform_option()
@click.option("--config", "only_config", is_flag=True,
              help="Print only the config document (as `skopeo inspect --config`).")
@click.option("--manifest", "only_manifest", is_flag=True,
              help="Print only the manifest (as `skopeo inspect --raw`).")
@click.option("--raw", is_flag=True, help="With --config or --manifest: the document exactly as "
              "stored (its sha256 is the config digest / image id), not re-indented.")
@click.option("--format", "fmt", type=click.Choice(["json", "table"]), default="json",
              show_default=True, help="json: one object (docker inspect's fields); table: one "
              "field per line.")
@catalog_option
def inspect(image: str, platform: str | None, only_config: bool, only_manifest: bool, raw: bool,
            fmt: str, catalog: str | None) -> None:
    """Show IMAGE's config and manifest: Entrypoint, Cmd, Env, WorkingDir, User, Labels,
    ExposedPorts, history, the layers' diff_ids and the manifest, as ingested.

    \b
    Examples:
      layerdb inspect myapp:latest
      layerdb inspect myapp:latest --config | jq .config.Env
      layerdb inspect myapp:latest --format table
      layerdb inspect myapp:latest --config --raw | sha256sum   # the config digest
    """
    import json

    from .errors import UsageError
    from .inspection import inspect_image, table_lines

    if only_config and only_manifest:
        raise UsageError("give --config or --manifest, not both")
    if raw and not (only_config or only_manifest):
        raise UsageError("--raw goes with --config or --manifest")
    root = existing_catalog(catalog)
    with platform_hint(root, image, platform):
        ins = inspect_image(root, image, platform)
    if only_config or only_manifest:
        text = ins.config_text if only_config else ins.manifest_text
        if raw:
            click.echo(text, nl=False)
            return
        doc = ins.config() if only_config else ins.manifest()
        click.echo(json.dumps(doc, indent=2, ensure_ascii=False))
        return
    if fmt == "json":
        click.echo(json.dumps(ins.summary(), indent=2, ensure_ascii=False))
        return
    from .errors import printable

    pairs = table_lines(ins)
    width = max(len(k) for k, _ in pairs)
    for k, v in pairs:
        click.echo(f"{k + ':':<{width + 1}} {printable(v)}")


@cli.command(name="ls", context_settings=CONTEXT)
@click.argument("image")
@click.argument("path", required=False)
@click.option("-l", "long", is_flag=True, help="Long listing: mode, owner, group, size, mtime "
              "(UTC), name -> link target (as ls -l).")
@click.option("--tree", is_flag=True, help="Everything below PATH, drawn as a tree.")
@click.option("--layer", "layer", type=int, default=None, metavar="N",
              help="Only layer N's own members (0 = base), marked A added, M modified, D removed "
                   "(a whiteout), O opaque directory (as dive's layer view).")
@platform_option()
@click.option("--format", "fmt", type=click.Choice(["table", "json", "csv"]), default="table",
              show_default=True, help="Output format (json/csv: one row per entry, exact values).")
@catalog_option
def ls(image: str, path: str | None, long: bool, tree: bool, layer: int | None,
       platform: str | None, fmt: str, catalog: str | None) -> None:
    """List PATH (default /; relative to WorkingDir) in IMAGE's merged filesystem, as a running
    container sees it; or, with --layer N, what layer N itself adds, changes and removes.

    \b
    Examples:
      layerdb ls myapp:latest /etc
      layerdb ls myapp:latest /usr/local -l
      layerdb ls myapp:latest / --tree
      layerdb ls myapp:latest --layer 2 -l
    """
    from . import listing

    root = existing_catalog(catalog)
    with platform_hint(root, image, platform):
        if layer is not None:
            img, rows = listing.layer_rows(root, image, platform, layer, path)
        else:
            img, rows = listing.merged_rows(root, image, platform, path, recursive=tree)
    top = listing.absolute(path, img.working_dir)
    if fmt != "table":
        render_rows(*listing.records(rows), fmt)
        return
    if tree:
        lines = listing.tree_lines(rows, top, long)
    else:
        full = layer is not None or (len(rows) == 1 and rows[0].entry.path == top)
        lines = listing.long_lines(rows, full) if long else listing.short_lines(rows, full)
    for line in lines:
        click.echo(line)


from .housekeeping_commands import gc, rm, verify  # noqa: E402
from .report_commands import check, diff, report  # noqa: E402

cli.add_command(report)
cli.add_command(check)
cli.add_command(diff)
cli.add_command(rm)
cli.add_command(gc)
cli.add_command(verify)


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the click group; the one error boundary. A ``LayerdbError`` becomes
    one line (``layerdb: error: ...``, control characters escaped, a huge one shortened; a
    SQL error keeps DuckDB's hint and its pointer at the query below it) and its exit code."""
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        cli.main(args=args, prog_name="layerdb", standalone_mode=False)
    except LayerdbError as e:
        text, from_duckdb = _error_text(e)
        _say("layerdb: error: ", text, lines=from_duckdb)
        sys.exit(e.exit_code)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except click.BadOptionUsage as e:
        if e.option_name in ("-p", "--param"):
            _say("layerdb: error: ", _missing_param(args))
            sys.exit(2)
        _show(e)
        sys.exit(2)
    except SystemExit as e:
        # click turns EPIPE on stdout into a silent exit 1 (and wraps stdout); end as cat does
        if type(sys.stdout).__name__ == "PacifyFlushWrapper" or (e.code and _stdout_gone()):
            _closed_pipe()
        raise
    except click.ClickException as e:
        _show(e)
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
        from .errors import is_disk_full, printable

        what = "no space left on device" if is_disk_full(e) else (e.strerror or str(e)).lower()
        name = f"{printable(os.fsdecode(e.filename))}: " if e.filename is not None else ""
        _say("layerdb: error: ", name + what)
        sys.exit(1)
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        from .settings import settings

        if settings().debug:
            raise
        from .errors import printable

        text = printable(e).split("\\x0a")[0]
        _say("layerdb: internal error: ", f"{type(e).__name__}: {text} (set LAYERDB_DEBUG=1 for a traceback)")
        sys.exit(3)
    try:
        sys.stdout.flush()  # here, not at exit: a reader that went away ends us quietly
    except BrokenPipeError:
        _closed_pipe()
    sys.exit(0)


def _stdout_gone() -> bool:
    """Whether stdout is a pipe whose reader has gone (poll says POLLERR)."""
    import select

    try:
        p = select.poll()
        p.register(1, select.POLLOUT)
        return any(ev & select.POLLERR for _, ev in p.poll(0))
    except (OSError, ValueError):
        return False


def _error_text(e: BaseException) -> tuple[str, bool]:
    """The message of ``e`` (the catalog already put DuckDB's hint on its one line)."""
    try:
        return str(e), False
    except Exception:  # noqa: BLE001 - a broken __str__ must not break the boundary
        return type(e).__name__, False


def _say(prefix: str, text: str, lines: bool = False) -> None:
    """``prefix`` + ``text`` on one printable line (a newline in it shows as ``\\x0a``), never
    raising. ``lines`` (DuckDB's message): the hint lines up to the first blank one are joined
    to the first, the rest (its pointer into the query) go below as they are."""
    from .errors import error_line

    if not lines:
        _echo_err(prefix + error_line(text))
        return
    lines_ = text.splitlines() or [""]
    head = [lines_[0]]
    rest = lines_[1:]
    while rest and rest[0].strip():
        head.append(rest.pop(0).strip())
    while rest and not rest[0].strip():
        rest.pop(0)
    _echo_err("\n".join([prefix + error_line(" ".join(head))] + [error_line(r) for r in rest]))


def _echo_err(text: str) -> None:
    try:
        click.echo(text, err=True)
    except Exception:  # noqa: BLE001 - stderr itself is gone
        pass


def _missing_param(args: list[str]) -> str:
    """``-p NAME`` at the end of the line: name the parameter left without a value."""
    for i in range(len(args) - 1, -1, -1):
        a = args[i]
        if a in ("-p", "--param"):
            name = args[i + 1] if i + 1 < len(args) else ""
            if name:
                return f"-p {name}: no VALUE given (use -p NAME VALUE, null for NULL)"
            return "-p: no NAME and VALUE given (use -p NAME VALUE)"
    return "-p takes NAME VALUE"


def _show(e: click.ClickException) -> None:
    """click's usage error, with the message made printable (it may quote an argument)."""
    from .errors import error_line

    ctx = getattr(e, "ctx", None)
    if ctx is not None:
        hint = (f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.\n"
                if ctx.command.get_help_option(ctx) is not None else "")
        _echo_err(f"{ctx.get_usage()}\n{hint}")
    _echo_err(f"Error: {error_line(e.format_message())}")


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
