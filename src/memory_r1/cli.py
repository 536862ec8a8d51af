"""`memr1`: the command-line entry point. Thin: parse options, call the library, print results.

Heavy modules (torch, transformers, qdrant, ray, verl) are imported inside the commands so that
`memr1 --help` starts fast.
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="memr1",
    help="Memory-R1 on LoCoMo: build memories, answer, evaluate and train the agents with RL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="LoCoMo data: statistics, download, validation.", no_args_is_help=True)
bench_app = typer.Typer(help="Speed benchmarks (write JSON into benchmarks/results/).", no_args_is_help=True)
train_app = typer.Typer(help="RL training of the Memory Manager and the Answer Agent (verl on Ray).", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(train_app, name="train")
app.add_typer(bench_app, name="bench")

log = logging.getLogger("memory_r1")


class _State:
    debug = False


def _configure_logging(debug: bool, verbose: bool) -> None:
    from rich.logging import RichHandler

    level = logging.DEBUG if debug else logging.INFO if verbose else logging.WARNING
    logging.basicConfig(
        level=level,
        format="%(message)s",
        handlers=[RichHandler(console=_stderr_console(), show_path=debug, rich_tracebacks=debug)],
        force=True,
    )


def _stderr_console():
    from rich.console import Console

    return Console(stderr=True)


@app.callback()
def _main(
    debug: Annotated[bool, typer.Option("--debug", help="Full tracebacks and debug logs.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Info-level logs.")] = False,
) -> None:
    _State.debug = debug
    _configure_logging(debug, verbose)


def fail(message: str, code: int = 2) -> None:
    """One clean line on stderr and an exit code; the traceback only with --debug."""
    if _State.debug and sys.exc_info()[0] is not None:
        logging.getLogger("memory_r1").exception(message)
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code)


DataOpt = Annotated[
    Optional[Path],
    typer.Option("--data", help="LoCoMo json (else $MEMR1_LOCOMO, ../shared/data/locomo, user cache)."),
]


@data_app.command("stats")
def data_stats(
    split: Annotated[
        Optional[list[str]], typer.Option("--split", help="train, val or test (repeatable; default all).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object instead of a table.")] = False,
    include_adversarial: Annotated[
        bool, typer.Option("--include-adversarial", help="Keep category 5 (adversarial) questions.")
    ] = False,
    data: DataOpt = None,
) -> None:
    """Conversations, sessions, turns and QA per category for each split."""
    from memory_r1.data import SPLITS, DataNotFoundError, LocomoDataError, load_locomo, resolve_locomo_path
    from memory_r1.data.splits import split_conversations

    names = split or list(SPLITS)
    try:
        path = resolve_locomo_path(data)
        convs = load_locomo(path)
        stats = {n: split_conversations(convs, n, include_adversarial).stats() for n in names}
    except (LocomoDataError, DataNotFoundError, ValueError) as exc:
        fail(str(exc))
    if as_json:
        typer.echo(json.dumps(stats))
        return
    from rich.console import Console
    from rich.table import Table

    from memory_r1.types import CATEGORY_LABELS

    cats = ["1", "2", "3", "4"] + (["5"] if include_adversarial else [])
    table = Table(title="LoCoMo splits", caption=f"data: {path}")
    table.add_column("split")
    for col in ["convs", "sessions", "turns", "QA"] + [CATEGORY_LABELS[int(c)] for c in cats]:
        table.add_column(col, justify="right")
    for n, s in stats.items():
        table.add_row(
            n,
            str(len(s["conversations"])),
            str(s["sessions"]),
            str(s["turns"]),
            str(s["qa"]),
            *[str(s["by_category"][c]) for c in cats],
        )
    Console().print(table)


@data_app.command("download")
def data_download(
    dest: Annotated[Optional[Path], typer.Option("--dest", help="Target file (default: user cache).")] = None,
    url: Annotated[
        Optional[str], typer.Option("--url", help="A mirror of the pinned file (the sha256 is still checked).")
    ] = None,
) -> None:
    """Fetch the pinned locomo10.json into the user cache; refuse a file whose sha256 differs."""
    from memory_r1.data.paths import LOCOMO_URL, DownloadError, download_locomo

    try:
        path = download_locomo(dest, url=url or LOCOMO_URL)
    except DownloadError as exc:
        fail(str(exc))
    typer.echo(str(path))


@data_app.command("validate")
def data_validate(data: DataOpt = None) -> None:
    """Load and check a LoCoMo file; one line per problem found (the first one), exit 2 if bad."""
    from memory_r1.data import DataNotFoundError, LocomoDataError, load_locomo, resolve_locomo_path
    from memory_r1.data.paths import sha256_file

    try:
        path = resolve_locomo_path(data)
        convs = load_locomo(path)
    except (LocomoDataError, DataNotFoundError) as exc:
        fail(str(exc))
    n_qa = sum(len(c.qa) for c in convs)
    typer.echo(f"ok: {path} ({len(convs)} conversations, {n_qa} QA, sha256 {sha256_file(path)[:12]})")


def _benchmarks_dir() -> Path:
    from memory_r1.data.paths import repo_root

    return repo_root() / "benchmarks"


@bench_app.command("list")
def bench_list() -> None:
    """The benchmark scripts of this checkout."""
    for p in sorted(_benchmarks_dir().glob("*.py")):
        typer.echo(p.stem)


@bench_app.command(
    "run", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
)
def bench_run(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Benchmark name (see `memr1 bench list`).")],
) -> None:
    """Run benchmarks/NAME.py with the remaining arguments; it writes benchmarks/results/NAME.json."""
    import runpy

    script = _benchmarks_dir() / f"{name}.py"
    if not script.is_file():
        fail(f"no benchmark {name!r} in {_benchmarks_dir()}")
    sys.argv = [str(script), *ctx.args]
    runpy.run_path(str(script), run_name="__main__")


@train_app.command("answer")
def train_answer() -> None:
    """Train the Answer Agent (not available yet: RL training lands with issue #4)."""
    fail("RL training is not available in this version yet (tracked in issue #4)")


@train_app.command("manager")
def train_manager() -> None:
    """Train the Memory Manager (not available yet: RL training lands with issue #4)."""
    fail("RL training is not available in this version yet (tracked in issue #4)")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
