"""`memr1`: the command-line entry point. Thin: parse options, call the library, print results.

Heavy modules (torch, transformers, qdrant, ray, verl) are imported inside the commands so that
`memr1 --help` starts fast.
"""

from __future__ import annotations

import contextlib
import inspect
import json
import logging
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer
from typer.core import TyperCommand, TyperGroup

if TYPE_CHECKING:  # pragma: no cover
    from memory_r1.train.stages import Stage

app = typer.Typer(
    name="memr1",
    help="Memory-R1 on LoCoMo: build memories, answer, evaluate and train the agents with RL.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
data_app = typer.Typer(help="LoCoMo data: statistics, download, validation.", no_args_is_help=True)
bench_app = typer.Typer(help="Speed benchmarks (write JSON into benchmarks/results/).", no_args_is_help=True)


class _TrainGroup(TyperGroup):
    """`memr1 train`: one command per registered stage (:data:`memory_r1.train.stages.STAGES`, made
    by :func:`stage_commands`) before the commands declared below (`loop`). The stage commands are
    made when the group is first asked for its commands, so `memr1 --help` and the other groups do
    not import the stages."""

    _with_stages = False

    def _add_stages(self) -> None:
        if self._with_stages:
            return
        self._with_stages = True
        from memory_r1.train.stages import STAGES

        made = stage_commands(STAGES)
        clash = sorted(set(made) & set(self.commands))
        if clash:
            raise RuntimeError(f"stage name(s) {', '.join(clash)} clash with a memr1 train command")
        self.commands = {**made, **self.commands}

    def list_commands(self, ctx: typer.Context) -> list[str]:
        self._add_stages()
        return super().list_commands(ctx)

    def get_command(self, ctx: typer.Context, cmd_name: str) -> TyperCommand | None:
        self._add_stages()
        return super().get_command(ctx, cmd_name)


train_app = typer.Typer(help="RL training of the Memory Manager and the Answer Agent (verl on Ray).", no_args_is_help=True,
                        cls=_TrainGroup)
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
    # readable=False: the data layer reports an unreadable file in one line (click's check would
    # print a usage box instead)
    typer.Option("--data", readable=False,
                 help="LoCoMo json (else $MEMR1_LOCOMO, ../shared/data/locomo, user cache)."),
]
GoldAuditOpt = Annotated[
    Optional[Path],
    typer.Option("--gold-audit", help="Audit of wrong gold answers (else $MEMR1_GOLD_AUDIT, beside the data, "
                                      "../shared/data/locomo, user cache; none: said so)."),
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
    from memory_r1.data import SPLITS, LocomoDataError, load_locomo
    from memory_r1.data.splits import split_conversations
    from memory_r1.paths import DataNotFoundError, resolve_locomo_path

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
    from memory_r1.data.download import LOCOMO_URL, DownloadError, download_locomo

    try:
        path = download_locomo(dest, url=url or LOCOMO_URL)
    except DownloadError as exc:
        fail(str(exc))
    typer.echo(str(path))


@data_app.command("validate")
def data_validate(data: DataOpt = None) -> None:
    """Load and check a LoCoMo file; one line per problem found (the first one), exit 2 if bad."""
    from memory_r1.data import LocomoDataError, load_locomo
    from memory_r1.paths import DataNotFoundError, resolve_locomo_path, sha256_file

    try:
        path = resolve_locomo_path(data)
        convs = load_locomo(path)
    except (LocomoDataError, DataNotFoundError) as exc:
        fail(str(exc))
    n_qa = sum(len(c.qa) for c in convs)
    typer.echo(f"ok: {path} ({len(convs)} conversations, {n_qa} QA, sha256 {sha256_file(path)[:12]})")


def _benchmarks_dir() -> Path:
    from memory_r1.paths import repo_root

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


@app.command("eval")
def eval_cmd(
    backbone: Annotated[str, typer.Option("--backbone", help="Backbone alias or model path.")] = "smollm2-135m",
    split: Annotated[str, typer.Option("--split", help="val, test or train.")] = "val",
    conversations: Annotated[
        Optional[str], typer.Option("--conversations", help="Comma-separated subset, e.g. conv-30.")
    ] = None,
    limit_questions: Annotated[
        Optional[int], typer.Option("--limit-questions", help="At most N questions per conversation.")
    ] = None,
    method: Annotated[str, typer.Option("--method", help="memory-r1, rag-turns or full-context.")] = "memory-r1",
    manager: Annotated[Optional[str], typer.Option("--manager", help="Memory Manager checkpoint.")] = None,
    answer: Annotated[Optional[str], typer.Option("--answer", help="Answer Agent checkpoint.")] = None,
    judge: Annotated[
        Optional[str],
        typer.Option("--judge", help="none, self (the same backbone), a backbone, or openai:MODEL@URL."),
    ] = None,
    top_k: Annotated[Optional[int], typer.Option("--top-k", help="Memories retrieved per speaker.")] = None,
    no_distill: Annotated[bool, typer.Option("--no-distill", help="Answer without the distillation step.")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (resumed if it exists).")] = None,
    recipe: Annotated[Optional[Path], typer.Option("--recipe", help="Recipe YAML (default recipes/B/eval.yaml).")] = None,
    qdrant_url: Annotated[Optional[str], typer.Option("--qdrant-url", help="A Qdrant server instead of local mode.")] = None,
    data: DataOpt = None,
    gold_audit: GoldAuditOpt = None,
    reuse_banks: Annotated[
        Optional[Path],
        typer.Option("--reuse-banks", help="Start from the finished banks of another eval folder built with the same "
                     "ingestion settings (a row that changes only the Answer Agent or the judge)."),
    ] = None,
    overrides: Annotated[Optional[list[str]], typer.Argument(help="Recipe overrides key=value.")] = None,
) -> None:
    """Build the banks, answer, judge and score one split; prints the table and writes the folder."""
    from memory_r1.eval.runner import EvalRequest, run_eval

    ov = list(overrides or [])
    if top_k is not None:
        ov.append(f"answer_agent.top_k={top_k}")
    if no_distill:
        ov.append("answer_agent.distill=false")
    req = EvalRequest(
        backbone=backbone, split=split, method=method,
        conversations=[c.strip() for c in conversations.split(",")] if conversations else None,
        limit_questions=limit_questions, manager=manager, answer=answer, judge=judge, out=out,
        data=data, recipe=recipe, overrides=ov, qdrant_url=qdrant_url, gold_audit=gold_audit,
        reuse_banks=reuse_banks,
    )
    with _failures_in_one_line():
        folder = run_eval(req)
    typer.echo((folder / "summary.md").read_text())
    typer.echo(f"results: {folder}")


@app.command("compare")
def compare_cmd(
    base: Annotated[Path, typer.Argument(help="The eval folder the others are compared against.")],
    runs: Annotated[list[Path], typer.Argument(help="Eval folders over the same questions.")],
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/compare/BASE-vs-RUNS).")] = None,
    intersect: Annotated[
        bool, typer.Option("--intersect", help="Align on the questions every run answered (else refuse other sets).")
    ] = False,
    resamples: Annotated[
        Optional[int], typer.Option("--resamples", help="Bootstrap resamples (default: recipes/compare.yaml).")
    ] = None,
    seed: Annotated[Optional[int], typer.Option("--seed", help="Bootstrap seed (default: recipes/compare.yaml).")] = None,
    gold_audit: GoldAuditOpt = None,
    data: DataOpt = None,
) -> None:
    """Each run against BASE per category and Overall: F1, BLEU-1, EM, J, the difference with a paired
    bootstrap CI and win/tie/loss; all questions, and apart without the audited-wrong golds.
    Writes compare.md, compare.json and compare.png."""
    from memory_r1.eval.compare import bootstrap_settings, compare_folders

    with _failures_in_one_line():
        folder = compare_folders(base, list(runs), out=out, intersect=intersect, gold_audit=gold_audit, data=data,
                                 settings=bootstrap_settings(resamples=resamples, seed=seed))
    typer.echo((folder / "compare.md").read_text())
    typer.echo(f"results: {folder}")


@app.command("ablate")
def ablate_cmd(
    plan: Annotated[Path, typer.Option("--plan", help="Ablation plan, e.g. recipes/smollm2-135m/ablations.yaml.")],
    rows: Annotated[Optional[str], typer.Option("--rows", help="Only these rows (comma-separated names).")] = None,
    slices: Annotated[Optional[str], typer.Option("--slices", help="Only these slices of the plan (comma-separated).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Root folder (default: the plan's out).")] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Check every row against the recipes and print its commands; run nothing.")
    ] = False,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Judge of every eval row (see memr1 eval).")] = None,
    limit_questions: Annotated[
        Optional[int], typer.Option("--limit-questions", help="At most N questions per conversation, every row.")
    ] = None,
    ray_address: _Ray = None,
    gold_audit: GoldAuditOpt = None,
    data: DataOpt = None,
    publish: Annotated[
        Optional[Path],
        typer.Option("--publish", help="Run nothing: copy the small files of every finished row (summaries, "
                     "manifest, small predictions, compare tables) into this folder, e.g. "
                     "docs/results/ablations/smollm2-135m. Give the options the rows ran with."),
    ] = None,
    restore: Annotated[
        Optional[Path],
        typer.Option("--restore", help="Run nothing: copy the rows of a published results folder (e.g. "
                     "docs/results/ablations/smollm2-135m) into the plan's folders where they are missing, "
                     "so the plan resumes from them, compares against them and publishes them again."),
    ] = None,
    overrides: Annotated[
        Optional[list[str]], typer.Argument(help="Eval recipe overrides key=value added to every eval row.")
    ] = None,
) -> None:
    """Run an ablation plan: each row a named eval (or train-then-eval) in its own resumable folder,
    then the compare table of every slice against the plan's base row. With --publish, copy the
    finished rows' small files into a results folder instead; with --restore, the other way."""
    import shlex

    from memory_r1.eval import ablate
    from memory_r1.eval.plan import load_plan
    from memory_r1.eval.publish import publish as publish_plan
    from memory_r1.eval.publish import restore as restore_plan

    names = [r.strip() for r in rows.split(",") if r.strip()] if rows else None
    only = [s.strip() for s in slices.split(",") if s.strip()] if slices else None
    with _failures_in_one_line():
        p = load_plan(plan)
        if out is not None:
            p.out = out
        opts = ablate.Options(judge=judge, limit_questions=limit_questions, overrides=list(overrides or []),
                              ray_address=ray_address, data=data)
        steps = ablate.build_steps(p, names, only, opts)
        resolved = ablate.check_plan(p, steps, data=data)
    if publish is not None and restore is not None:
        fail("--publish and --restore go opposite ways: give one")
    if restore is not None:
        with _failures_in_one_line(code=1):
            record = restore_plan(p, restore, slices=only)
        _echo_files(record)
        typer.echo(f"restored from {restore} into {p.out}; `memr1 ablate --plan {plan}` resumes from there")
        return
    if publish is not None:
        if names:
            fail("--publish looks at every row of the plan (the compare needs the base row): drop --rows")
        with _failures_in_one_line(code=1):
            record = publish_plan(p, publish, slices=only, opts=opts, gold_audit=gold_audit)
        _echo_files(record)
        typer.echo(f"published into {publish} (record: {publish / 'published.json'})")
        return
    if dry_run:
        for line in ablate.describe(p, steps, resolved):
            typer.echo(line)
        typer.echo(f"dry run: {len(steps)} steps checked, nothing run")
        return

    def show(i: int, n: int, st, status: str, args: list[str]) -> None:
        where = "train" if st.kind == "train" else f"eval on {st.slice}"
        verb = {"ran": "running", "skipped": "finished before, skipped", "reused": "trained before, reused"}[status]
        typer.echo(f"[{i}/{n}] {st.row}: {where} ({verb}): memr1 {shlex.join(args)}", err=True)

    with _failures_in_one_line(code=1):
        results = ablate.run_plan(p, steps, data=data, on_step=show)
        tables = ablate.compare_slices(p, sorted({st.slice for st in steps if st.slice}) or None, data=data,
                                       gold_audit=gold_audit)
    for s, res in tables.items():
        if isinstance(res, Path):
            typer.echo((res / "compare.md").read_text())
            typer.echo(f"compare ({s}): {res}")
        else:
            typer.echo(f"compare ({s}): not written: {res}")
    typer.echo(f"{sum(r.status == 'ran' for r in results)} steps run, "
               f"{sum(r.status != 'ran' for r in results)} finished before; folders under {p.out}")


def _echo_files(record: dict) -> None:
    """What ``--publish`` / ``--restore`` did: per row and slice, per compare table and per training,
    the files (a list, or ``{"published": [...]}``) or why there are none."""

    def files(what) -> str:
        what = what["published"] if isinstance(what, dict) else what
        return ", ".join(what) if isinstance(what, list) else str(what)

    for row, per_slice in record["rows"].items():
        for s, what in per_slice.items():
            typer.echo(f"{row} on {s}: {files(what)}")
    for s, what in record.get("compare", {}).items():
        typer.echo(f"compare ({s}): {what}")
    for row, what in record.get("train", {}).items():
        typer.echo(f"{row} training: {files(what)}")


@contextlib.contextmanager
def _failures_in_one_line(code: int = 2):
    """Any failure inside becomes one clear line on stderr and exit ``code`` (the traceback with --debug)."""
    try:
        yield
    except typer.Exit:
        raise
    except Exception as exc:  # noqa: BLE001 - every failure becomes one clear line
        if _State.debug:
            raise
        fail(_one_line(exc), code=code)


def _one_line(exc: BaseException) -> str:
    msg = " ".join(str(exc).split()) or type(exc).__name__
    return msg if type(exc).__module__.startswith("memory_r1") else f"{type(exc).__name__}: {msg}"


TRAIN_ALGOS = ("grpo", "ppo")


def _train(stage: str, backbone: str, algo: str, recipe: Optional[Path], manager: Optional[str],
           banks: Optional[Path], init: Optional[str], out: Optional[Path], resume: bool,
           ray_address: Optional[str], data: Optional[Path], dry_run: bool, overrides: Optional[list[str]]) -> None:
    """Shared body of the `memr1 train <stage>` commands."""
    if algo not in TRAIN_ALGOS:
        fail(f"unknown algo {algo!r}; choose from {', '.join(TRAIN_ALGOS)}")
    from memory_r1.train.runner import TrainRequest, run_training
    from memory_r1.train.stages import get_stage

    req = TrainRequest(
        stage=stage, backbone=backbone, algo=algo, recipe=recipe, manager=manager, banks=banks, init=init,
        out=out, resume=resume, ray_address=ray_address, overrides=list(overrides or []), data=data,
        dry_run=dry_run,
    )
    with _failures_in_one_line():
        result = run_training(req)
    if result.dry_run:
        typer.echo(f"dry run: episodes, recipe and verl config written to {result.out}")
        return
    steps = ", ".join(f"{s:.1f}" for s in result.step_seconds)
    typer.echo(f"trained {stage}/{algo} on {backbone}: {result.steps} steps in {result.seconds:.0f} s (s/step: {steps})")
    for key, st in result.rewards.items():
        typer.echo(f"  {key}: {st['scored']} completions, {st['unparsed']} unparseable, mean {st['reward']} {st['mean_score']}")
    if result.hf_checkpoint is None:
        fail(f"no HF checkpoint was written under {result.out / 'checkpoints'}", code=1)
    flag = get_stage(stage).eval_flag
    typer.echo(f"hf checkpoint: {result.hf_checkpoint}")
    typer.echo(f"evaluate with: memr1 eval --backbone {backbone} {flag} {result.hf_checkpoint}")


_Backbone = Annotated[str, typer.Option("--backbone", help="Backbone alias or model path.")]
_Algo = Annotated[str, typer.Option("--algo", help="grpo or ppo.")]
_Recipe = Annotated[Optional[Path], typer.Option("--recipe", help="Recipe YAML (default recipes/B/STAGE/ALGO.yaml).")]
_Manager = Annotated[
    Optional[str], typer.Option("--manager", help="Memory Manager checkpoint that builds the banks (episodes.source=pipeline).")
]
_Init = Annotated[Optional[str], typer.Option("--init", help="Policy checkpoint to start from (default: the backbone).")]
_Out = Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/train/B-STAGE-ALGO).")]
_Resume = Annotated[bool, typer.Option("--resume", help="Continue the run in --out from its latest checkpoint.")]
_Ray = Annotated[Optional[str], typer.Option("--ray-address", help="Join an existing Ray cluster (ray://... or HOST:PORT).")]
_Dry = Annotated[bool, typer.Option("--dry-run", help="Build episodes and check verl's config; do not train.")]
_Overrides = Annotated[
    Optional[list[str]],
    typer.Argument(help="Overrides key=value (recipe keys, or verl.<verl key>=value)."),
]


_Banks = Annotated[Optional[Path], typer.Option("--banks", help="Pre-built banks folder, e.g. an eval run's banks/.")]


def _stage_command(stage: Stage) -> Callable[..., None]:
    """The body of `memr1 train <stage.name>`: the shared options, and ``--banks`` only when the
    stage builds rows from pre-built banks (``"banks"`` in its ``sources``)."""

    def command(
        backbone: _Backbone = "smollm2-135m",
        algo: _Algo = "grpo",
        recipe: _Recipe = None,
        manager: _Manager = None,
        banks: _Banks = None,
        init: _Init = None,
        out: _Out = None,
        resume: _Resume = False,
        ray_address: _Ray = None,
        data: DataOpt = None,
        dry_run: _Dry = False,
        overrides: _Overrides = None,
    ) -> None:
        _train(stage.name, backbone, algo, recipe, manager, banks, init, out, resume, ray_address, data, dry_run,
               overrides)

    sig = inspect.signature(command, eval_str=True)  # typer reads the options from this signature
    params = [p for p in sig.parameters.values() if p.name != "banks" or stage.takes_banks]
    command.__signature__ = sig.replace(parameters=params)  # type: ignore[attr-defined]
    command.__name__ = command.__qualname__ = f"train_{stage.name}"
    command.__doc__ = stage.description
    return command


def stage_app(stages: Mapping[str, Stage]) -> typer.Typer:
    """A Typer app with one command per stage of ``stages``, named after it, helped by its
    ``description`` (:func:`_stage_command`); `memr1 train` holds those of the registry."""
    sub = typer.Typer(no_args_is_help=True)
    for stage in stages.values():
        sub.command(stage.name, help=stage.description)(_stage_command(stage))
    return sub


def stage_commands(stages: Mapping[str, Stage]) -> dict[str, TyperCommand]:
    """The click commands of :func:`stage_app`, by name, in the order of ``stages``."""
    return dict(typer.main.get_group(stage_app(stages)).commands)


@train_app.command("loop")
def train_loop(
    backbone: _Backbone = "smollm2-135m",
    algo: _Algo = "grpo",
    rounds: Annotated[int, typer.Option("--rounds", help="Rounds of manager -> banks -> answer -> eval.")] = 1,
    out: Annotated[Optional[Path], typer.Option("--out", help="Output folder (default runs/loop/B-ALGO).")] = None,
    ray_address: _Ray = None,
    judge: Annotated[Optional[str], typer.Option("--judge", help="Judge of the per-round eval (see memr1 eval).")] = None,
    data: DataOpt = None,
    overrides: _Overrides = None,
) -> None:
    """Alternate the stages: per round, train the Memory Manager, rebuild the banks with it, train
    the Answer Agent on them, evaluate both on val (each round in its own folder; reruns resume)."""
    if algo not in TRAIN_ALGOS:
        fail(f"unknown algo {algo!r}; choose from {', '.join(TRAIN_ALGOS)}")
    if rounds < 1:
        fail(f"--rounds must be >= 1, got {rounds}")
    from memory_r1.train.loop import LoopRequest, run_loop

    req = LoopRequest(backbone=backbone, algo=algo, rounds=rounds, out=out, ray_address=ray_address,
                      overrides=list(overrides or []), data=data, judge=judge)
    with _failures_in_one_line():
        records = run_loop(req)
    for rec in records:
        typer.echo(f"round {rec['round']}: manager {rec['manager']}")
        typer.echo(f"         answer  {rec['answer']}")
        typer.echo(f"         eval    {rec['eval']}")
    from memory_r1.eval.report import rounds_markdown

    typer.echo(rounds_markdown(records, f"val scores per round ({backbone}, {algo})"))


@app.command("doctor")
def doctor_cmd(
    as_json: Annotated[bool, typer.Option("--json", help="The report as JSON.")] = False,
    cached: Annotated[bool, typer.Option("--cached", help="Read the cached CPU profile instead of timing matmuls.")] = False,
) -> None:
    """What this machine is and what a run would pick: CPU flags, measured matmul GFLOP/s, dtype and
    threads, versions, where data and models were found, free disk and memory. Run it when
    something is slow or fails."""
    from memory_r1.doctor import report

    rep = report(measure=not cached)
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
        return
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"memr1 doctor ({rep['seconds']:.1f} s)", show_header=False, box=None)
    t.add_column(style="bold")
    t.add_column()
    cpu = rep["cpu"]
    t.add_row("CPU", f"{cpu['model']} ({cpu['cores']} usable cores, kind {cpu.get('kind', '?')})")
    t.add_row("flags", ", ".join(cpu["flags"]) + (f"  [dim]missing: {', '.join(cpu['missing_flags'])}[/]"
                                                 if cpu["missing_flags"] else ""))
    if cpu["isa_limits"]:
        t.add_row("ISA limits", ", ".join(f"{k}={v}" for k, v in cpu["isa_limits"].items()))
    if "matmul_gflops" in rep:
        mm = rep["matmul_gflops"]
        t.add_row("matmul GFLOP/s", f"fp32 {mm['float32']:.0f}, bf16 {mm['bfloat16']:.0f} "
                  f"({'x'.join(map(str, mm['shape']))} linear, {mm['threads']} threads; "
                  f"oneDNN native bf16: {'yes' if cpu.get('onednn_bf16') else 'no'})")
    run = rep["run"]
    if "error" in run:
        t.add_row("a run would pick", run["error"])
    else:
        t.add_row("dtype (auto)", f"{run['dtype']}: {run['dtype_reason']}")
        t.add_row("threads", f"{run['threads']}: {run['threads_reason']}")
    if "load_average" in rep:
        t.add_row("load average", " ".join(map(str, rep["load_average"])))
    t.add_row("versions", ", ".join(f"{k} {v}" for k, v in rep["versions"].items() if v))
    data = rep["data"]
    t.add_row("LoCoMo", data["locomo"] or f"[red]not found[/] ({data.get('locomo_error')})")
    t.add_row("gold audit", data["gold_audit"] or f"not found {data.get('gold_audit_error', '')}")
    models = rep["models"]
    smol = models.get("smollm2-135m", {})
    if "error" in smol:
        t.add_row("smollm2-135m", f"[red]{smol['error']}[/]")
    else:
        t.add_row("smollm2-135m", f"{smol['gguf']} ({'converted: ' + smol['converted_dir'] if smol['converted'] else 'not converted yet: the first load takes ~30 s'})")
    for name, b in models["backbones"].items():
        if name != "smollm2-135m":
            t.add_row(f"  {name}", b.get("path") or b.get("source") or "not found")
    t.add_row("embedder", models.get("embedder", "?"))
    t.add_row("cache", f"{models['cache_dir']} ({rep['disk']['free_gib']} GiB free)")
    mem = rep["memory"]
    t.add_row("memory", f"{mem['available_gib']} GiB available of {mem['total_gib']} GiB")
    Console().print(t)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
