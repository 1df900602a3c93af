"""The ``report``, ``check`` and ``diff`` commands: parse, one library call (``reports``,
``dive_rules``, ``diff``), render. Registered on the ``layerdb`` group by ``cli.py``; duckdb
loads only when they run."""
from __future__ import annotations

import sys

import click

from .cli_options import (
    CONTEXT,
    catalog_option,
    existing_catalog,
    format_option,
    params_option,
    platform_hint,
    platform_option,
    render_rows,
)


@click.command(context_settings=CONTEXT)
@click.argument("name", required=False)
@click.option("--list", "list_", is_flag=True, help="List the reports with their summaries.")
@click.option("--describe", is_flag=True,
              help="Print the report's full help and its parameters instead of running it.")
@click.option("--sql", "show_sql", is_flag=True,
              help="Print the report's SQL with the parameters written in, ready for "
                   "`layerdb sql`, instead of running it.")
@click.option("--image", default=None, metavar="REF",
              help="Only this image (ref, id or config digest); binds :image. Default: every "
                   "image.")
@platform_option("os/arch[/variant] when REF names several (arm64 means linux/arm64).")
@params_option
@format_option
@click.option("-o", "--output", default=None, metavar="FILE",
              help="Write the result to FILE instead (.parquet, .csv or .json by suffix; exact "
                   "values, as `layerdb sql -o`).")
@catalog_option
def report(name: str | None, list_: bool, describe: bool, show_sql: bool,
           image: str | None, platform: str | None, params: tuple, fmt: str,
           output: str | None, catalog: str | None) -> None:
    """Run the named report NAME (queries/NAME.sql) over every ingested image, or list them.

    Each report is one SQL file: its leading comment is its help (--describe), its
    parameters are -p NAME VALUE (null for none), and --image REF limits it to one image.
    The same SQL runs under `layerdb sql` (--sql prints it with the values filled in).

    \b
    Examples:
      layerdb report --list
      layerdb report efficiency --image myapp:latest --format json
      layerdb report secrets -p hidden 1
      layerdb report largest-files --image myapp:latest -p limit 10
      layerdb report files-duplicated -o duplicated.parquet
      layerdb sql "$(layerdb report setuid --sql -p hidden 1)"
    """
    from . import reports

    if list_ or not name:
        if name:
            raise click.UsageError("give a report NAME or --list, not both")
        render_rows(*reports.summaries(reports.list_reports()), fmt)
        return
    given = dict(params)
    if describe:
        click.echo(reports.describe(reports.get_report(name)))
        return
    catalog = existing_catalog(catalog)
    if show_sql:
        click.echo(reports.inline_sql(name, given, image=image, catalog_root=catalog,
                                      platform=platform), nl=False)
        return
    with platform_hint(catalog, image, platform):
        if output and output.lower().endswith(".parquet"):
            from .catalog import Catalog

            sql = reports.inline_sql(name, given, image=image, catalog_root=catalog,
                                     platform=platform)
            with Catalog(catalog, sandbox=True) as cat:
                cat.copy_to_parquet(sql, None, output)
            return
        if output:
            from .output import output_kind

            output_kind(output)  # a wrong suffix is refused before the report runs
        if output:
            from .output import write_result

            cols, rows = reports.run_report(name, given, image=image, catalog_root=catalog,
                                            platform=platform)
            write_result(cols, rows, output)
            return
        from .catalog import Catalog

        with Catalog(catalog) as cat:  # rows rendered as they are fetched
            cols, it = reports.iter_report(name, given, cat, image=image, platform=platform)
            render_rows(cols, it, fmt)


@click.command(context_settings=CONTEXT)
@click.option("--image", default=None, metavar="REF",
              help="The image to judge (ref, id or config digest). Default: every image.")
@platform_option("os/arch[/variant] when REF names several (arm64 means linux/arm64).")
@click.option("--lowest-efficiency", metavar="RATIO", default=None,
              help="Fail below this efficiency (default 0.9; 'disabled' to skip).")
@click.option("--highest-wasted-bytes", metavar="SIZE", default=None,
              help="Fail above this many wasted bytes, e.g. 20MB or 512KiB (default: disabled).")
@click.option("--highest-user-wasted-percent", metavar="RATIO", default=None,
              help="Fail when wasted bytes / user bytes (all layers but the base) exceed this "
                   "ratio (default 0.1; 'disabled' to skip).")
@click.option("--ci-config", metavar="FILE", default=None,
              help="dive's .dive-ci YAML (rules: lowest-efficiency, highest-wasted-bytes, "
                   "highest-user-wasted-percent). Default: ./.dive-ci when it exists. "
                   "Options given here override it.")
@click.option("--dive", "dive_figures", is_flag=True,
              help="Judge dive's own figures (efficiency_dive, wasted_bytes_dive, ...), to get "
                   "the verdict `dive --ci` gives, instead of layerdb's.")
@format_option
@catalog_option
def check(image: str | None, platform: str | None, lowest_efficiency: str | None,
          highest_wasted_bytes: str | None, highest_user_wasted_percent: str | None,
          ci_config: str | None, dive_figures: bool, fmt: str, catalog: str | None) -> None:
    """Judge image efficiency by dive's CI rules; exit 1 when a rule fails.

    Figures are the `efficiency` report's: efficiency (dive's score, opaque directories
    counted), wasted_bytes (what upper layers shadow or delete) and wasted_user_percent
    (wasted / user bytes); --dive uses dive's own figures instead. Prints PASS, FAIL or SKIP
    per rule and image; exit status 0 when nothing failed, 1 when a rule failed.

    \b
    Examples:
      layerdb check --image myapp:latest
      layerdb check --image myapp:latest --lowest-efficiency 0.95 --highest-wasted-bytes 20MB
      layerdb check --ci-config .dive-ci --format json
    """
    from . import dive_rules

    rules = dive_rules.load_rules(ci_config, {
        "lowest-efficiency": lowest_efficiency,
        "highest-wasted-bytes": highest_wasted_bytes,
        "highest-user-wasted-percent": highest_user_wasted_percent})
    if rules.source != "defaults":
        click.echo(f"using CI config: {rules.source}", err=True)
    catalog = existing_catalog(catalog)
    with platform_hint(catalog, image, platform):
        summaries, results = dive_rules.check_images(image, rules, dive=dive_figures,
                                                     catalog_root=catalog, platform=platform)
    failed = sum(r.status == "FAIL" for r in results)
    if fmt != "table":
        cols = ["image", "image_id", "rule", "status", "value", "threshold", "message"]
        render_rows(cols, [tuple(getattr(r, c) for c in cols) for r in results], fmt)
    else:
        from .output import human_size, printable

        sfx = "_dive" if dive_figures else ""
        for s in summaries:
            pct = s["wasted_user_percent" + sfx]
            wasted = s["wasted_bytes" + sfx]
            click.echo(f"{printable(str(s['image']))} ({s['image_id'][7:19]}): efficiency "
                       f"{s['efficiency' + sfx]:.4f}, wasted "
                       f"{human_size(wasted) if wasted is not None else 'n/a'}, "
                       f"user wasted {'inf' if pct is None else f'{pct * 100:.2f}'} %"
                       f"{' (dive figures)' if dive_figures else ''}")
            for r in results:
                if r.image_id == s["image_id"]:
                    click.echo(f"  {r.status}: {r.rule}: {printable(str(r.message))}")
        count = {k: sum(r.status == k for r in results) for k in ("PASS", "FAIL", "SKIP")}
        click.echo(f"Result: {'FAIL' if failed else 'PASS'} [total:{len(results)}] "
                   f"[passed:{count['PASS']}] [failed:{count['FAIL']}] "
                   f"[skipped:{count['SKIP']}]")
    if failed:
        sys.exit(1)


@click.command(context_settings=CONTEXT)
@click.argument("image_a")
@click.argument("image_b")
@platform_option("os/arch[/variant] when a ref names several (arm64 means linux/arm64).")
@format_option
@catalog_option
def diff(image_a: str, image_b: str, platform: str | None, fmt: str,
         catalog: str | None) -> None:
    """Compare the merged filesystems of IMAGE_A and IMAGE_B.

    One row per path added (only in B), removed (only in A) or changed (type, content, mode,
    owner or link target), with both sizes and the difference; a summary goes to stderr.

    \b
    Examples:
      layerdb diff myapp:1 myapp:2
      layerdb diff myapp:1 myapp:2 --format json > changes.json
    """
    from .diff import stream_diff
    from .output import human_bytes, printable

    catalog = existing_catalog(catalog)
    with platform_hint(catalog, None, platform):
        d = stream_diff(image_a, image_b, catalog_root=catalog, platform=platform)
    render_rows(d.columns, d.rows, fmt)  # rows as they come (totals fill in meanwhile)
    parts = [f"{n} {k} ({'+' if b > 0 else '-' if b < 0 else ''}{human_bytes(abs(b))})"
             for k, (n, b) in d.totals.items()]
    click.echo(printable(f"{d.a} -> {d.b}: {', '.join(parts)}"), err=True)
