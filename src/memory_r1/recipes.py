"""The recipe schema: pydantic models of our own recipe keys, each default written once, here.

An eval recipe (``recipes/<backbone>/eval.yaml``) is an :class:`EvalRecipe`; a training recipe
(``recipes/<backbone>/<stage>/<algo>.yaml``) a :class:`TrainRecipe` subclass, the model its ``stage``
declares (``Stage.recipe``; picked through the stage registry by
:func:`memory_r1.train.stages.train_recipe`): :class:`AnswerRecipe` or :class:`ManagerRecipe` for the
two stages of the paper. Its ``verl:`` section stays a free mapping checked against verl's own schema
when the run composes it. This module is a base module: it knows no stage registry. Every section refuses a key it does not have and a value of the
wrong type (no coercion: ``top_k: "10"`` is refused, not read as 10); :mod:`memory_r1.config` loads
the YAML, applies ``key=value`` overrides and turns a refusal into one line naming the dotted key.

A key a recipe leaves out takes the default below, so code reads every key without a fallback of
its own. A default of ``None`` means "not set": no nucleus sampling for ``top_p``, no stop strings
for ``stop``, and for a backend option under ``llm:`` the backend's own default (named in its
class's docstring), which the option is then not passed at all.

The ``llm:`` section is one model per backend, chosen by ``backend``: ``hf`` (:class:`HFOptions`),
``vllm`` (:class:`VLLMOptions`), ``openai`` (:class:`OpenAIOptions`); a key of another backend is
refused with the keys this one takes. :func:`memory_r1.llm.build_llm` builds the backend from it.

>>> r = EvalRecipe.model_validate({"answer_agent": {"top_k": 5}})
>>> r.answer_agent.top_k, r.answer_agent.distill, r.llm.backend
(5, True, 'hf')
>>> EvalRecipe.model_validate({"llm": {"backend": "openai", "base_url": "http://h:8080/v1"}}).llm.backend_kwargs()
{'base_url': 'http://h:8080/v1'}
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import PydanticCustomError

NonNegInt = Annotated[int, Field(ge=0)]
PosInt = Annotated[int, Field(ge=1)]


class Section(BaseModel):
    """A recipe section: unknown keys refused, values taken as typed (YAML already types them)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _refusal(message: str) -> PydanticCustomError:
    """A refusal whose message is ours, word for word (it names its keys when it is about several)."""
    return PydanticCustomError("recipe", "{message}", {"message": message})


def _cpu_dtype(value: str) -> str:
    """A dtype name :func:`memory_r1.hardware.normalize_dtype` knows (kept as written)."""
    from memory_r1.hardware import normalize_dtype

    try:
        normalize_dtype(value)
    except ValueError as exc:
        raise _refusal(str(exc)) from None
    return value


# ---------------------------------------------------------------------------------- eval: agents


class Sampling(Section):
    """How a stage decodes (:class:`memory_r1.llm.SamplingParams`): ``temperature`` 0 is greedy;
    ``top_p``, ``seed``, ``stop`` unset (None) mean no nucleus cut, no seed, no stop strings."""

    temperature: Annotated[float, Field(ge=0.0)] = 0.0
    max_new_tokens: PosInt = 256
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    seed: int | None = None
    stop: list[str] | None = None


class RelatedMemories(Section):
    """What the Memory Manager is shown beside new facts: ``related_k`` memories retrieved per fact,
    at most ``max_related`` distinct ones in all (eval's ``ingest.manager``, manager ``episodes``)."""

    related_k: NonNegInt = 3
    max_related: NonNegInt = 10


class AnswerRetrieval(Section):
    """What the Answer Agent reads: ``top_k`` memories per speaker (the paper: 30 + 30) and whether it
    first distills the relevant ones (eval's ``answer_agent``, answer ``episodes``)."""

    top_k: NonNegInt = 30
    distill: bool = True


class ExtractSection(Sampling):
    """``ingest.extract``: the fact extractor; ``ahead_turns``: turns extracted per backend call ahead
    of the Memory Manager (0: one chunk at a time)."""

    ahead_turns: NonNegInt = 0


class ManagerSection(Sampling, RelatedMemories):
    """``ingest.manager``: the Memory Manager; ``max_facts_per_call``: new facts per call;
    ``skip_known_facts``: a fact already stored verbatim is not sent to it."""

    max_facts_per_call: PosInt = 12
    skip_known_facts: bool = False


class IngestSection(Section):
    """``ingest``: ``turns_per_chunk`` turns per Memory Manager step (0: a whole session);
    ``max_sessions``: only the first N sessions of each conversation (smoke runs; None: all)."""

    turns_per_chunk: NonNegInt = 0
    max_sessions: PosInt | None = None
    extract: ExtractSection = ExtractSection()
    manager: ManagerSection = ManagerSection()


class AnswerAgentSection(Sampling, AnswerRetrieval):
    """``answer_agent``: ``questions_per_batch`` questions answered per backend call;
    ``context_margin``: tokens kept free besides the answer when the full-context baseline cuts the
    dialogue to the window."""

    questions_per_batch: PosInt = 16
    context_margin: NonNegInt = 256


class JudgeSection(Sampling):
    """``judge``: ``backend`` ``none`` (no judge), ``self`` (the agents' backbone), a backbone alias
    or path (built with the ``llm:`` section) or ``openai:MODEL@URL``; ``prompt`` ``mem0`` or
    ``strict`` (:data:`memory_r1.eval.judge.JUDGE_PROMPTS`); ``control_pairs`` known-answer pairs
    that measure the judge; ``cache`` the sqlite file of judgments (None: the user cache)."""

    backend: str = "none"
    prompt: str = "mem0"
    control_pairs: NonNegInt = 20
    cache: str | None = None


class StoreSection(Section):
    """``store``: the vector store of the banks (``qdrant``: qdrant-client local mode, or a server
    at ``url``; ``edge``: qdrant-edge in process)."""

    backend: Literal["qdrant", "edge"] = "qdrant"
    url: str | None = None


# ---------------------------------------------------------------------------------- eval: llm


class LLMOptions(Section):
    """Options of one backend; :meth:`backend_kwargs` gives those that are set."""

    backend: str

    def backend_kwargs(self) -> dict[str, Any]:
        """The options to build the backend with: every one set, without ``backend``."""
        return {k: v for k, v in self.model_dump().items() if k != "backend" and v is not None}


class HFOptions(LLMOptions):
    """``llm.backend: hf`` (:class:`memory_r1.llm.hf.HFBackend`, transformers on CPU or GPU).
    ``dtype``: ``auto`` = on CPU the dtype this CPU runs fastest (measured, ``memr1 doctor``), on GPU
    the checkpoint's; ``quantize: int8``: dynamic int8 linears (CPU, float32 only)."""

    backend: Literal["hf"] = "hf"
    dtype: str = "auto"
    quantize: Literal["int8"] | None = None
    batch_size: PosInt | None = None
    max_batch_tokens: PosInt | None = None
    device: str | None = None
    num_threads: PosInt | Literal["all"] | None = None  # None: adaptive to the load; "all": every core, fixed
    attn_implementation: str | None = None
    prepack: bool | None = None
    share_prefixes: bool | None = None
    tokenizer: str | None = None

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        return _cpu_dtype(value)


class VLLMOptions(LLMOptions):
    """``llm.backend: vllm`` (:class:`memory_r1.llm.vllm_backend.VLLMBackend`, GPU); ``dtype`` as
    vLLM names it (``auto``: the checkpoint's); ``engine``: any other ``vllm.LLM`` option, passed
    unchanged."""

    backend: Literal["vllm"] = "vllm"
    dtype: str = "auto"
    gpu_memory_utilization: Annotated[float, Field(gt=0.0, le=1.0)] | None = None
    max_model_len: PosInt | None = None
    tensor_parallel_size: PosInt | None = None
    enforce_eager: bool | None = None
    engine: dict[str, Any] | None = None


class OpenAIOptions(LLMOptions):
    """``llm.backend: openai`` (:class:`memory_r1.llm.openai_compat.OpenAICompatBackend`: any
    OpenAI-compatible server, e.g. ``vllm serve`` or ``python -m llama_cpp.server``).
    ``base_url``: ``http://host:port/v1`` (None: ``$MEMR1_LLM_BASE_URL``, then ``$OPENAI_BASE_URL``);
    ``model``: the served model name (None: a registered backbone's HF repo id, else the backbone as
    given); ``api_key_env``: the environment variable holding the key (None: ``$OPENAI_API_KEY`` if
    set; a key itself never goes in a recipe, which is copied into run folders);
    ``context_window``: tokens (None: the registered backbone's, else 32,768)."""

    backend: Literal["openai"] = "openai"
    base_url: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout: Annotated[float, Field(gt=0.0)] | None = None
    max_retries: NonNegInt | None = None
    concurrency: PosInt | None = None
    context_window: PosInt | None = None


#: ``llm.backend`` -> its options
LLM_OPTIONS: dict[str, type[LLMOptions]] = {"hf": HFOptions, "vllm": VLLMOptions, "openai": OpenAIOptions}
DEFAULT_LLM_BACKEND = "hf"

AnyLLMOptions = Annotated[Union[HFOptions, VLLMOptions, OpenAIOptions], Field(discriminator="backend")]


def _check_llm_keys(value: Any) -> Any:
    """Name the backend (default hf) and refuse, in one message, every key that is not its option."""
    if not isinstance(value, dict):
        return value  # the union's own type error
    backend = value.get("backend", DEFAULT_LLM_BACKEND)
    if backend not in LLM_OPTIONS:
        raise _refusal(f"llm.backend must be one of {', '.join(LLM_OPTIONS)}, got {backend!r}")
    takes = LLM_OPTIONS[backend].model_fields
    foreign = [k for k in value if k not in takes]
    if foreign:
        owners = {k: [b for b, m in LLM_OPTIONS.items() if k in m.model_fields] for k in foreign}
        named = ", ".join(f"llm.{k}" + (f" ({'/'.join(owners[k])})" if owners[k] else " (no backend)")
                          for k in foreign)
        raise _refusal(f"{named} do not apply to llm.backend={backend}, which takes: "
                       + ", ".join(k for k in takes if k != "backend")
                       + f" (to switch backends, replace the section: 'llm={{backend: {backend}, ...}}')")
    return {**value, "backend": backend}


# ---------------------------------------------------------------------------------- eval recipe


class EvalRecipe(Section):
    """``recipes/<backbone>/eval.yaml``: what ``memr1 eval`` runs with (``seed`` seeds Python's and
    torch's generators)."""

    seed: int = 0
    llm: AnyLLMOptions = HFOptions()
    store: StoreSection = StoreSection()
    ingest: IngestSection = IngestSection()
    answer_agent: AnswerAgentSection = AnswerAgentSection()
    judge: JudgeSection = JudgeSection()

    @field_validator("llm", mode="before")
    @classmethod
    def _llm_keys(cls, value: Any) -> Any:
        return _check_llm_keys(value)


def pipeline_config(cfg: dict) -> dict:
    """The sections a :class:`memory_r1.agents.pipeline.Pipeline` reads (``ingest``, ``answer``),
    validated, with every default filled in.

    >>> pipeline_config({"answer": {"top_k": 2}})["answer"]["questions_per_batch"]
    16
    """
    unknown = sorted(set(cfg) - {"ingest", "answer"})
    if unknown:
        raise ValueError(f"a pipeline config has ingest and answer, not {', '.join(unknown)}")
    return {"ingest": IngestSection.model_validate(cfg.get("ingest") or {}).model_dump(),
            "answer": AnswerAgentSection.model_validate(cfg.get("answer") or {}).model_dump()}


# ---------------------------------------------------------------------------------- train recipes


class Episodes(Section):
    """``episodes`` of both stages: rows from ``train_split`` (``val_split``: held-out rows verl
    validates on, at most ``max_val_rows``; None: none / all); ``drop_wrong_golds``: leave out the
    questions whose gold answer the LoCoMo audit marks wrong; ``eval_recipe``: the eval recipe whose
    ``llm`` and ``ingest`` sections build banks for ``source: pipeline`` (None: the backbone's)."""

    train_split: str = "train"
    val_split: str | None = "val"
    max_val_rows: PosInt | None = None
    drop_wrong_golds: bool = False
    eval_recipe: str | None = None


class AnswerEpisodes(Episodes, AnswerRetrieval):
    """Answer Agent rows: memories from LoCoMo's ``observations`` (no LLM), banks built by the
    Memory Manager (``pipeline``) or ready ``banks`` (``banks_path``, or ``--banks``); ``top_k`` and
    ``distill`` as ``answer_agent`` in an eval recipe."""

    source: Literal["observations", "pipeline", "banks"] = "observations"
    banks_path: str | None = None


class ManagerEpisodes(Episodes, RelatedMemories):
    """Memory Manager rows: bank states from ``observations`` or the ``pipeline``, from the last
    ``history_turns`` turns (None: all); ``related_k`` / ``max_related`` as ``ingest.manager`` in an
    eval recipe; ``top_k``: memories per speaker of the frozen Answer Agent that gives the reward
    (as ``answer_agent.top_k``)."""

    source: Literal["observations", "pipeline"] = "observations"
    history_turns: NonNegInt | None = None
    top_k: NonNegInt = 30

    @model_validator(mode="before")
    @classmethod
    def _renamed(cls, value: Any) -> Any:
        if isinstance(value, dict) and "answer_top_k" in value:
            raise _refusal("episodes.answer_top_k is now episodes.top_k (memories per speaker of the "
                           "frozen Answer Agent, as answer_agent.top_k in an eval recipe); rename it")
        return value


class AnswerReward(Section):
    """``reward`` of the answer stage: ``name`` from the answer rewards (``answer_em``, ``answer_f1``)."""

    name: str


class AnswererSpec(Section):
    """The frozen Answer Agent that scores the Memory Manager, as a flat mapping: ``backend`` and
    ``model``, the ``max_new_tokens`` and ``distill`` of its answers, and any option of that backend
    as in an ``llm:`` section (validated the same way: a key of another backend is refused).

    >>> s = AnswererSpec.model_validate({"backend": "hf", "model": "smollm2-135m"})
    >>> s.max_new_tokens, s.distill, s.llm.backend_kwargs()
    (48, False, {'dtype': 'auto'})
    """

    model: str
    max_new_tokens: PosInt = 48
    distill: bool = False
    llm: AnyLLMOptions

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, value: Any) -> Any:
        if isinstance(value, dict) and "llm" not in value:
            own = {k: value[k] for k in ("model", "max_new_tokens", "distill") if k in value}
            return {**own, "llm": {k: v for k, v in value.items() if k not in own}}
        return value

    @field_validator("llm", mode="before")
    @classmethod
    def _llm_keys(cls, value: Any) -> Any:
        return _check_llm_keys(value)


class ManagerReward(Section):
    """``reward`` of the manager stage: ``name`` (``manager_em``, ``manager_f1``) and the frozen
    Answer Agent: ``answerer`` as ``hf:NAME``, ``vllm:NAME``, ``openai:MODEL@URL`` or a mapping
    checked as an :class:`AnswererSpec` (None: the untrained backbone; see
    :func:`memory_r1.train.stages.manager.parse_answerer_spec`). Where it runs: ``answerer_server``
    ``ray`` (its own Ray actor group in the training's cluster, ``answerer_replicas`` actors of
    ``answerer_num_cpus`` logical CPUs and ``answerer_num_gpus`` GPUs each, shared by every reward
    worker: :mod:`memory_r1.train.verl.answerer`) or ``worker`` (loaded in each reward worker); an
    ``openai`` answerer is a server of its own either way."""

    name: str
    answerer: str | dict[str, Any] | None = None
    answerer_server: Literal["ray", "worker"] = "ray"
    answerer_replicas: PosInt = 1
    answerer_num_cpus: float = Field(1.0, ge=0)
    answerer_num_gpus: float = Field(0.0, ge=0)

    @field_validator("answerer")
    @classmethod
    def _answerer(cls, value: Any) -> Any:
        if isinstance(value, dict):  # checked, and kept as written: verl hands it to the reward as is
            try:
                AnswererSpec.model_validate(value)
            except ValidationError as exc:
                raise _refusal("reward.answerer: " + "; ".join(
                    e["msg"] if e["type"] == "recipe" else f"{'.'.join(map(str, e['loc']))}: {e['msg']}"
                    for e in exc.errors(include_url=False))) from None
        return value


class TrainRecipe(Section):
    """Keys of every stage's recipe (a stage's model adds ``stage: Literal["<stage>"]``, ``episodes``
    and ``reward``): ``algo`` (grpo | ppo), ``device`` (cpu: our CPU stack; gpu: verl's
    own), ``dtype`` (CPU: ``auto`` = what this CPU runs fastest), ``seed``, an optional
    ``description`` and ``backbone``, and ``verl:`` (verl's own keys, dotted or nested; checked by
    verl when composed)."""

    algo: Literal["grpo", "ppo"]
    device: Literal["cpu", "gpu"]
    dtype: str = "auto"
    seed: int = 0
    description: str | None = None
    backbone: str | None = None
    verl: dict[str, Any]

    @field_validator("dtype")
    @classmethod
    def _dtype(cls, value: str) -> str:
        return _cpu_dtype(value)

    @field_validator("verl")
    @classmethod
    def _some_verl(cls, value: dict) -> dict:
        if not value:
            raise _refusal("a training recipe needs verl keys")
        return value


class AnswerRecipe(TrainRecipe):
    """``recipes/<backbone>/answer/<algo>.yaml``: the answer stage's model (its ``STAGE.recipe``)."""

    stage: Literal["answer"] = "answer"
    episodes: AnswerEpisodes = AnswerEpisodes()
    reward: AnswerReward


class ManagerRecipe(TrainRecipe):
    """``recipes/<backbone>/manager/<algo>.yaml``: the manager stage's model (its ``STAGE.recipe``)."""

    stage: Literal["manager"] = "manager"
    episodes: ManagerEpisodes = ManagerEpisodes()
    reward: ManagerReward

