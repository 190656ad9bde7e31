"""``python -m bench ingest|backfill|analytics [--quick|--full|--tiny] [--database-url URL]``."""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench import figures, plot, report


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="bench", required=True)
    for name, text in (
        ("ingest", "webhook ingest throughput, latency, memory, start-up"),
        ("backfill", "backfill items/s against a fake Studio API"),
        ("analytics", "flow analytics at 10 M steps (--full; --quick: 1 M) against raw steps"),
    ):
        command = sub.add_parser(name, help=text)
        size = command.add_mutually_exclusive_group()
        size.add_argument(
            "--quick",
            dest="mode",
            action="store_const",
            const="quick",
            help="under 2 minutes (default)",
        )
        size.add_argument(
            "--full",
            dest="mode",
            action="store_const",
            const="full",
            help="under 10 minutes; writes docs/benchmarks.md and its plots",
        )
        size.add_argument(
            "--tiny",
            dest="mode",
            action="store_const",
            const="tiny",
            help="seconds; for the smoke test, figures meaningless",
        )
        command.add_argument(
            "--database-url",
            help="a Postgres server to use (its role must CREATE DATABASE);"
            " default: an embedded one in a temp dir",
        )
        command.add_argument(
            "--results-dir",
            type=Path,
            default=report.RESULTS,
            help="where the JSON goes (default bench/results)",
        )
        command.add_argument(
            "--docs",
            action=argparse.BooleanOptionalAction,
            default=None,
            help="update docs/benchmarks.md and the plot (default: --full only)",
        )
        if name == "ingest":
            command.add_argument(
                "--profile",
                type=Path,
                help="py-spy the sink during the max phase; collapsed stacks here",
            )
        command.set_defaults(mode="quick")
    return parser


async def _ingest(args: argparse.Namespace, workdir: Path) -> list[figures.Figure]:
    from bench import ingest

    results = await ingest.run(ingest.MODES[args.mode], args.database_url, workdir, args.profile)
    found = figures.ingest_figures(results)
    results["figures"] = [f.as_dict() for f in found]
    path = report.write_json("ingest", results, args.results_dir)
    print(f"\nresults: {path}")
    docs = args.docs if args.docs is not None else args.mode == "full"
    if plot.available() and args.mode != "tiny":
        image = report.ROOT / "docs" / "benchmarks-ingest.png" if docs else path.with_suffix(".png")
        plot.ingest_plot(results, image)
        print(f"plot: {image}")
    elif args.mode != "tiny":
        print("plot: skipped (pip install matplotlib)")
    if docs:
        _ingest_docs(results, found)
    return found


def _ingest_docs(results: dict[str, Any], found: list[figures.Figure]) -> None:
    content = "\n\n".join(
        [
            f"Measured {results['started']} with `python -m bench ingest --{results['mode']}`"
            f" ({results['seconds']} s).",
            figures.markdown_table(found),
            "Offered-load sweep (open loop; latency counted from the moment each delivery was"
            " due, all answers):",
            figures.sweep_table(results),
            "![throughput and p99 latency against offered load](benchmarks-ingest.png)",
        ]
    )
    report.replace_section("ingest", content)
    print(f"docs: {report.DOCS}")


async def _analytics(args: argparse.Namespace, workdir: Path) -> list[figures.Figure]:
    from bench import analytics

    results = await analytics.run(analytics.MODES[args.mode], args.database_url)
    found = analytics.figures(results)
    results["figures"] = [f.as_dict() for f in found]
    path = report.write_json("analytics", results, args.results_dir)
    print(f"\nresults: {path}")
    if args.docs if args.docs is not None else args.mode == "full":
        _analytics_docs(results, found)
    return found


def _analytics_docs(results: dict[str, Any], found: list[figures.Figure]) -> None:
    data = results["data"]
    command = f"python -m bench analytics --{results['mode']}"
    content = "\n\n".join(
        [
            f"Measured {results['started']} with `{command}` ({results['seconds']} s): one"
            f" flow, {data['steps']:,} steps of {data['executions']:,} executions over 30"
            " days, two revisions and a subflow; queries warm, median of 7 runs, on this"
            " 2-core machine. The raw figure is the same transition_stats aggregated from"
            " sink.steps in the same run.",
            figures.markdown_table(found),
        ]
    )
    report.replace_section("analytics", content)
    print(f"docs: {report.DOCS}")


async def _backfill(args: argparse.Namespace, workdir: Path) -> list[figures.Figure]:
    from bench.backfill import main as backfill_main

    return await backfill_main(args, workdir)


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="sink-bench-") as tmp:
        workdir = Path(tmp)
        runner = {"ingest": _ingest, "analytics": _analytics}.get(args.bench, _backfill)
        try:
            import uvloop

            found = uvloop.run(runner(args, workdir))
        except ImportError:
            found = asyncio.run(runner(args, workdir))
        except Exception:
            log = workdir / "sink.log"
            if log.exists():
                print(
                    f"--- sink log (last 3000 chars) ---\n{log.read_text()[-3000:]}",
                    file=sys.stderr,
                )
            raise
    figures.print_figures(f"{args.bench} ({args.mode})", found)
    return 0


if __name__ == "__main__":
    sys.exit(main())
