"""Hugging Face transformers backend, CPU or GPU.

A GGUF backbone (the default ``smollm2-135m``) is de-quantised once (~20-30 s) and saved as a
Hugging Face checkpoint (safetensors, fp32, with its tokenizer) in
``cache_dir()/models/<name>-<sha256[:12] of the gguf>``; later loads read that in seconds. The cache is
written into a temporary directory beside it and renamed into place at the end, so a killed first load
never leaves a half cache that a later load trusts.

Generation is batched with LEFT padding; conversations are sorted by prompt length, cut into batches
(``batch_size`` rows, at most ``max_batch_tokens`` of padded prompt + new tokens), and the results are
put back in input order. ``temperature == 0`` decodes greedily; otherwise it samples with the given
seed. Sampling uses only the given temperature/top_p: the model's own generation defaults (top_k,
repetition penalty, ...) are not applied, so every backend decodes the same way.

Nothing is fetched from a hub (``local_files_only``). On CPU ``dtype="auto"`` is the dtype this CPU runs
fastest, measured once and cached (:mod:`memory_r1.hardware`: bf16 with AMX or AVX512-BF16, fp32 where
bf16 is emulated) and torch's thread count follows the one thread
policy of :mod:`memory_r1.threads`, re-checked at each ``generate`` call, unless ``num_threads`` (a
count, or ``"all"``: every usable core, fixed for the run) or OMP_NUM_THREADS / MKL_NUM_THREADS say
otherwise. The thread count changes how bf16 sums round, so greedy outputs can follow the machine's
load under the adaptive policy; a fixed count makes a run repeatable on one machine. ``threads_used``
counts the generate calls per thread count.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from memory_r1.backbones import DEFAULT_BACKBONE, ResolvedBackbone, resolve_backbone
from memory_r1.llm import cpu_attention, cpu_linear
from memory_r1.llm.base import (
    ClosingMixin,
    Conversation,
    Generation,
    LLMError,
    SamplingParams,
    cut_at_stop,
    decode_key,
    per_conversation,
    release_model,
    validate_conversations,
)
from memory_r1.paths import cache_dir, sha256_file
from memory_r1.runs import atomic_write
from memory_r1.threads import CpuLoadMeter, configure_threads, usable_cores, user_set_threads

if TYPE_CHECKING:  # pragma: no cover
    import torch

log = logging.getLogger(__name__)

CACHE_MARKER = "memr1_converted.json"
# bumped when the conversion changes; a cache written by another version is made again
CONVERSION_VERSION = 2
_TMP_PREFIX = ".tmp-"
_STALE_TMP_SECONDS = 6 * 3600


# ---------------------------------------------------------------------------------------------------
# the GGUF -> HF checkpoint cache


def models_cache_root() -> Path:

    return cache_dir() / "models"


def gguf_sha256(path: Path, cache_root: Path | None = None) -> str:
    """sha256 of a GGUF file, remembered by (path, size, mtime) so later loads skip the hashing."""
    root = cache_root or models_cache_root()
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    memo = root / "gguf_sha256.json"
    table: dict[str, str] = {}
    with contextlib.suppress(OSError, ValueError):
        table = json.loads(memo.read_text())
        if key in table:
            return table[key]
    digest = sha256_file(path)
    table[key] = digest
    with contextlib.suppress(OSError):
        atomic_write(memo, json.dumps(table, indent=1))
    return digest


def converted_dir(resolved: ResolvedBackbone, cache_root: Path | None = None) -> Path:
    """Where the de-quantised checkpoint of a GGUF backbone lives (whether or not it exists yet)."""
    if resolved.gguf_path is None:
        raise ValueError(f"{resolved.name} is not a GGUF backbone")
    root = cache_root or models_cache_root()
    return root / f"{resolved.name}-{gguf_sha256(resolved.gguf_path, root)[:12]}"


def is_valid_cache(d: Path) -> bool:
    """A finished conversion: the marker (written last, before the atomic rename) of this version."""
    try:
        marker = json.loads((d / CACHE_MARKER).read_text())
    except (OSError, ValueError):
        return False
    return (
        isinstance(marker, dict)
        and marker.get("version") == CONVERSION_VERSION
        and (d / "config.json").is_file()
        and any(d.glob("*.safetensors"))
    )


def _clean_stale_tmp(root: Path) -> None:
    now = time.time()
    for p in root.glob(_TMP_PREFIX + "*"):
        with contextlib.suppress(OSError):
            if now - p.stat().st_mtime > _STALE_TMP_SECONDS:
                shutil.rmtree(p, ignore_errors=True)
                log.info("removed a stale partial conversion %s", p)


def _fix_special_tokens(tokenizer: Any, model_config: Any) -> None:
    """The GGUF tokenizer conversion can name the wrong eos (SmolLM2: <|im_start|>) and no pad; take the
    ids from the model config, which came from the GGUF metadata."""
    for attr in ("bos", "eos", "pad"):
        tid = getattr(model_config, f"{attr}_token_id", None)
        if isinstance(tid, list):
            tid = tid[0] if tid else None
        if tid is None:
            continue
        tok = tokenizer.convert_ids_to_tokens(int(tid))
        if tok is not None and getattr(tokenizer, f"{attr}_token", None) != tok:
            setattr(tokenizer, f"{attr}_token", tok)


def ensure_hf_checkpoint(resolved: ResolvedBackbone, cache_root: Path | None = None) -> Path:
    """An HF-format directory for this backbone: ``resolved.path`` itself, or for a GGUF the converted
    cache (made now if missing). Returns the directory."""
    if not resolved.is_gguf:
        return resolved.path
    root = cache_root or models_cache_root()
    final = converted_dir(resolved, root)
    if is_valid_cache(final):
        return final
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

    root.mkdir(parents=True, exist_ok=True)
    _clean_stale_tmp(root)
    t0 = time.perf_counter()
    log.info("de-quantising %s once into %s (about half a minute)", resolved.gguf_path, final)
    tmp = Path(tempfile.mkdtemp(dir=root, prefix=f"{_TMP_PREFIX}{final.name}-"))
    with contextlib.suppress(OSError):
        os.chmod(tmp, 0o755)  # mkdtemp makes it 0700
    try:
        tok = AutoTokenizer.from_pretrained(
            str(resolved.path), gguf_file=resolved.gguf_file, local_files_only=True
        )
        model = AutoModelForCausalLM.from_pretrained(
            str(resolved.path), gguf_file=resolved.gguf_file, dtype=torch.float32, local_files_only=True
        )
        _fix_special_tokens(tok, model.config)
        if getattr(tok, "clean_up_tokenization_spaces", False):
            tok.clean_up_tokenization_spaces = False  # ignored (with a warning) for BPE anyway
        cfg = model.config
        model.generation_config = GenerationConfig(
            bos_token_id=cfg.bos_token_id, eos_token_id=cfg.eos_token_id, pad_token_id=cfg.pad_token_id
        )
        model.save_pretrained(str(tmp), safe_serialization=True)
        tok.save_pretrained(str(tmp))
        import transformers

        marker = {
            "version": CONVERSION_VERSION,
            "source": str(resolved.gguf_path),
            "sha256": gguf_sha256(resolved.gguf_path, root),  # type: ignore[arg-type]
            "backbone": resolved.name,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "seconds": round(time.perf_counter() - t0, 1),
        }
        (tmp / CACHE_MARKER).write_text(json.dumps(marker, indent=1))
        del model
        if final.exists():  # an invalid leftover (no marker): replace it
            if is_valid_cache(final):
                shutil.rmtree(tmp, ignore_errors=True)
                return final
            shutil.rmtree(final, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            # another process finished first: keep theirs
            if not is_valid_cache(final):
                raise
            shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("converted %s in %.1f s", resolved.name, time.perf_counter() - t0)
    return final


# ---------------------------------------------------------------------------------------------------
# dtype / device / threads


def resolve_device(device: str | None) -> str:
    import torch

    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise LLMError(f"device {device!r} asked for, but torch sees no CUDA device")
    return str(device)


def resolve_dtype(dtype: Any, device: str, config_dtype: Any = None) -> torch.dtype:
    """The torch dtype of :func:`resolve_dtype_and_reason`."""
    return resolve_dtype_and_reason(dtype, device, config_dtype)[0]


def resolve_dtype_and_reason(dtype: Any, device: str, config_dtype: Any = None) -> tuple[torch.dtype, str]:
    """``(dtype, why)``. ``auto``: on CPU the dtype this CPU runs fastest, measured
    (:func:`memory_r1.hardware.resolve_cpu_dtype`: bf16 with AMX / AVX512-BF16, fp32 where bf16 is
    emulated); on GPU the checkpoint's dtype (bf16, or fp16 without bf16 support, when the checkpoint
    is fp32, e.g. a de-quantised GGUF)."""
    import torch

    from memory_r1 import hardware

    if isinstance(dtype, torch.dtype):
        return dtype, "asked for"
    name = hardware.normalize_dtype(dtype)
    if name != "auto":
        return getattr(torch, name), "asked for"
    if device == "cpu":
        name, reason = hardware.resolve_cpu_dtype("auto")
        return getattr(torch, name), f"auto: {reason}"
    if config_dtype is not None:
        with contextlib.suppress(ValueError):
            config_dtype = getattr(torch, hardware.normalize_dtype(config_dtype))
    if isinstance(config_dtype, torch.dtype) and config_dtype != torch.float32:
        return config_dtype, "auto: the checkpoint's dtype"
    return (torch.bfloat16, "auto: GPU with bf16") if torch.cuda.is_bf16_supported() else (
        torch.float16, "auto: GPU without bf16")


def quantize_linears(model: Any, quantize: str | None, device: str, dtype: Any) -> int:
    """Apply ``quantize`` (None or ``int8``: torch's dynamic int8 linears) to ``model`` in place;
    returns how many linear layers were replaced."""
    if quantize in (None, "", "none"):
        return 0
    import torch

    if quantize != "int8":
        raise ValueError(f"unknown quantize {quantize!r}: use int8 or leave it unset")
    if device != "cpu" or dtype != torch.float32:
        raise LLMError(f"quantize=int8 needs device cpu and dtype float32 (got {device}, {dtype})")
    from torch.ao.quantization import quantize_dynamic

    before = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8, inplace=True)
    after = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    log.info("int8 dynamic quantization: %d linear layers", before - after)
    return before - after


# ---------------------------------------------------------------------------------------------------
# the backend


class HFBackend(ClosingMixin):
    """A transformers causal LM behind the :class:`~memory_r1.llm.base.LLM` protocol.

    ``backbone``: a registry alias (``smollm2-135m``, ``qwen2.5-7b``, ...), a repo id found in the HF
    cache, a local HF model / training checkpoint directory, or a ``.gguf`` file.
    ``tokenizer``: take the tokenizer (and chat template) from another alias / path, for a checkpoint
    saved without one. ``batch_size`` / ``max_batch_tokens`` bound a generation batch.
    ``attn_implementation``: ``auto`` is :mod:`memory_r1.llm.cpu_attention` on CPU (2x faster
    generation of left-padded batches with long prompts than transformers' ``sdpa`` there) and
    ``sdpa`` elsewhere; any name transformers knows is passed through. With ``memr1_cpu`` generation
    keeps its key-value cache in a :class:`~memory_r1.llm.kv_cache.PaddedCache` (no copy of the
    whole cache at each decode step).
    ``prepack``: on CPU, pack the linear weights for oneDNN once (:mod:`memory_r1.llm.cpu_linear`;
    half the time of a decode step's matmuls, identical results).
    ``quantize``: ``int8`` replaces every linear layer by torch's dynamically quantized int8 linear
    (weights int8 per output channel, activations quantized per call; CPU and fp32 only). Opt-in:
    with oneDNN limited to AVX2 it generated ~2x faster than fp32, but SmolLM2-135M's extraction and
    manager outputs degrade (a val slice's bank held 1 memory instead of 14-16; benchmarks/README.md);
    ``None`` keeps the model's dtype.
    ``share_prefixes``: with the padded cache, rows of a batch that share a long token prefix (the
    instructions and examples before a turn or a request) have it computed once per group
    (:func:`~memory_r1.llm.kv_cache.prefix_plan`); the rest of each row is prefilled after it.
    """

    def __init__(
        self,
        backbone: str | os.PathLike | ResolvedBackbone = DEFAULT_BACKBONE,
        *,
        device: str | None = "auto",
        dtype: Any = "auto",
        batch_size: int = 8,
        max_batch_tokens: int = 32768,
        num_threads: int | str | None = None,
        attn_implementation: str = "auto",
        prepack: bool = True,
        quantize: str | None = None,
        share_prefixes: bool = True,
        tokenizer: str | os.PathLike | None = None,
        cache_root: str | os.PathLike | None = None,
        name: str | None = None,
    ) -> None:
        if batch_size < 1 or max_batch_tokens < 1:
            raise ValueError("batch_size and max_batch_tokens must be >= 1")
        t0 = time.perf_counter()
        resolved = backbone if isinstance(backbone, ResolvedBackbone) else resolve_backbone(backbone)
        self.backbone = resolved
        self.name = name or resolved.name
        self.batch_size = batch_size
        self.max_batch_tokens = max_batch_tokens
        root = Path(cache_root).expanduser() if cache_root else None

        from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig

        self.device = resolve_device(device)
        # threads="auto" (num_threads=None, no OMP_NUM_THREADS): re-decided at each generate() call,
        # since the load of a shared machine changes
        if num_threads == "all":
            num_threads = usable_cores()
        elif num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                          or num_threads < 1):
            raise LLMError(f"num_threads: a positive count or 'all', not {num_threads!r}")
        self._auto_threads = self.device == "cpu" and num_threads is None and not user_set_threads()
        self.num_threads = configure_threads(num_threads) if self.device == "cpu" else None
        self.threads_used: dict[int, int] = {}
        self._load_meter = CpuLoadMeter() if self._auto_threads else None
        self.from_cache = bool(resolved.is_gguf and is_valid_cache(converted_dir(resolved, root)))
        t_conv = time.perf_counter()
        model_dir = ensure_hf_checkpoint(resolved, root)
        converted = resolved.is_gguf and not self.from_cache
        self.convert_seconds = time.perf_counter() - t_conv if converted else 0.0
        self.model_dir = model_dir

        tok_dir = model_dir
        if tokenizer is not None:
            tres = resolve_backbone(tokenizer)
            tok_dir = ensure_hf_checkpoint(tres, root)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise LLMError(
                f"cannot load a tokenizer from {tok_dir} ({exc}); pass tokenizer=<alias or path>"
            ) from exc
        if not getattr(self.tokenizer, "chat_template", None):
            raise LLMError(
                f"the tokenizer at {tok_dir} has no chat template; pass tokenizer=<alias or path of the "
                "base model>"
            )
        self.tokenizer.padding_side = "left"

        cfg_dtype = None
        with contextlib.suppress(OSError, ValueError):
            cfg = json.loads((model_dir / "config.json").read_text())
            cfg_dtype = cfg.get("dtype") or cfg.get("torch_dtype")
        self.dtype, self.dtype_reason = resolve_dtype_and_reason(dtype, self.device, cfg_dtype)
        if attn_implementation == "auto":
            attn_implementation = cpu_attention.register() if self.device == "cpu" else "sdpa"
        elif attn_implementation == cpu_attention.NAME:
            cpu_attention.register()
        extra: dict[str, Any] = {}
        if self.device != "cpu":
            extra["device_map"] = self.device  # straight onto the GPU, not via CPU memory
        try:
            model = AutoModelForCausalLM.from_pretrained(
                str(model_dir),
                dtype=self.dtype,
                attn_implementation=attn_implementation,
                local_files_only=True,
                **extra,
            )
        except (OSError, ValueError) as exc:
            raise LLMError(f"cannot load the model at {model_dir}: {exc}") from exc
        if self.device == "cpu":
            model.to(self.device)
        model.eval()
        self.model = model
        from memory_r1.llm import kv_cache  # imports transformers

        self.quantized = quantize_linears(model, quantize, self.device, self.dtype)
        self.packed_linears = (
            cpu_linear.pack_linears(model) if prepack and self.device == "cpu" and not self.quantized else 0
        )
        self.padded_cache = attn_implementation == cpu_attention.NAME and kv_cache.supports(
            model.config
        )
        self.share_prefixes = share_prefixes and self.padded_cache
        self.prefix_batches = 0  # batches that computed shared prefixes once (for benchmarks)

        gc_old = model.generation_config
        self.eos_token_ids = self._eos_ids(gc_old)
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = getattr(gc_old, "pad_token_id", None)
            if isinstance(pad, list):
                pad = pad[0]
        if pad is None:
            pad = self.eos_token_ids[0]
        self.pad_token_id = int(pad)
        # a clean generation config: only what generate() is told applies (no hidden top_k/penalties)
        model.generation_config = GenerationConfig(
            bos_token_id=getattr(gc_old, "bos_token_id", None),
            eos_token_id=list(self.eos_token_ids),
            pad_token_id=self.pad_token_id,
        )
        self.context_window = int(
            resolved.context_window
            if resolved.backbone is not None
            else getattr(model.config, "max_position_embeddings", resolved.context_window)
        )
        self.load_seconds = time.perf_counter() - t0
        log.info(
            "loaded %s (%s, %s, %s [%s]) in %.1f s%s",
            self.name,
            model_dir,
            self.device,
            str(self.dtype).replace("torch.", ""),
            self.dtype_reason,
            self.load_seconds,
            " from the converted cache" if self.from_cache else "",
        )

    @classmethod
    def from_pretrained(
        cls,
        path_or_alias: str | os.PathLike = DEFAULT_BACKBONE,
        device: str | None = "auto",
        dtype: Any = "auto",
        **options: Any,
    ) -> HFBackend:
        """Resolve ``path_or_alias`` through the backbone registry and load it."""
        return cls(path_or_alias, device=device, dtype=dtype, **options)

    # -- helpers -------------------------------------------------------------------------------------

    def _eos_ids(self, gen_cfg: Any) -> list[int]:
        ids: list[int] = []
        for src in (getattr(gen_cfg, "eos_token_id", None), self.tokenizer.eos_token_id):
            if src is None:
                continue
            for i in src if isinstance(src, (list, tuple)) else [src]:
                if int(i) not in ids:
                    ids.append(int(i))
        if not ids:
            raise LLMError(f"{self.name}: neither the model nor the tokenizer names an EOS token")
        return ids

    def _encode(self, messages: Conversation) -> list[int]:
        text = self.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tokenize=False
        )
        return list(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def count_tokens(self, messages: Conversation) -> int:
        return len(self._encode(messages))

    def _batches(self, order: list[int], lengths: list[int], max_new: int) -> list[list[int]]:
        """Consecutive runs of ``order`` (longest prompt first) of at most ``batch_size`` rows and
        ``max_batch_tokens`` padded tokens (rows * (longest prompt + max_new))."""
        out: list[list[int]] = []
        cur: list[int] = []
        longest = 0
        for i in order:
            new_longest = max(longest, lengths[i])
            if cur and (
                len(cur) + 1 > self.batch_size
                or (len(cur) + 1) * (new_longest + max_new) > self.max_batch_tokens
            ):
                out.append(cur)
                cur, new_longest = [], lengths[i]
            cur.append(i)
            longest = new_longest
        if cur:
            out.append(cur)
        return out

    def _completion_tokens_until_stop(self, toks: list[int], stop: list[str]) -> int:
        """The fewest leading tokens whose decoded text already holds a stop string."""
        lo, hi = 1, len(toks)
        while lo < hi:
            mid = (lo + hi) // 2
            text = self.tokenizer.decode(
                toks[:mid], skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            if cut_at_stop(text, stop)[1]:
                hi = mid
            else:
                lo = mid + 1
        return lo

    # -- generation ----------------------------------------------------------------------------------

    def generate(
        self, conversations: list[Conversation], params: SamplingParams | list[SamplingParams]
    ) -> list[Generation]:
        validate_conversations(conversations)
        if self.model is None:
            raise LLMError(f"{self.name}: backend is closed")
        if not conversations:
            return []
        each = per_conversation(params, len(conversations))
        if self._load_meter is not None:
            others = self._load_meter.others_busy()
            if others is not None:
                self.num_threads = configure_threads(None, others)
        elif self.num_threads is not None:  # torch's count is process-global: the embedder may have set its own
            configure_threads(self.num_threads)
        if self.num_threads is not None:
            self.threads_used[self.num_threads] = self.threads_used.get(self.num_threads, 0) + 1
        prompts = [self._encode(c) for c in conversations]
        lengths = [len(p) for p in prompts]
        caps = []
        for i, n in enumerate(lengths):
            cap = self.context_window - n
            if cap < 1:
                raise LLMError(
                    f"{self.name}: conversation {i} is {n} tokens, which leaves no room in the "
                    f"{self.context_window}-token context window"
                )
            caps.append(min(cap, each[i].max_new_tokens))
        # Rows share batches only when they decode alike AND ask for the same max_new_tokens: a static
        # batch decodes until its longest request ends, over the padded length of its longest prompt.
        # Measured here (SmolLM2, bf16, 2 cores): 4 manager prompts (916 tokens, 128 new) + 19
        # extraction prompts (228 tokens, 40 new) took 43-49 s as one batch, 14 s as two.
        groups: dict[tuple, list[int]] = {}
        for i, p in enumerate(each):
            groups.setdefault((decode_key(p), p.max_new_tokens), []).append(i)
        results: list[Generation | None] = [None] * len(prompts)
        for rows in groups.values():
            self._generate_group(rows, prompts, lengths, caps, each[rows[0]], results)
        return results  # type: ignore[return-value]

    def _generate_group(self, rows: list[int], prompts: list[list[int]], lengths: list[int],
                        caps: list[int], params: SamplingParams, results: list) -> None:
        import torch

        order = sorted(rows, key=lambda i: (-lengths[i], i))
        batches = self._batches(order, lengths, max(caps[i] for i in rows))
        rng = contextlib.nullcontext()
        if not params.greedy and params.seed is not None:
            devices = [torch.cuda.current_device()] if self.device.startswith("cuda") else []
            rng = torch.random.fork_rng(devices=devices)
        with rng, torch.inference_mode():
            if not params.greedy and params.seed is not None:
                torch.manual_seed(params.seed)
            for batch in batches:
                outs = self._generate_batch(
                    [prompts[i] for i in batch], [caps[i] for i in batch], params
                )
                for i, g in zip(batch, outs, strict=True):
                    results[i] = g

    def _generate_batch(
        self, prompts: list[list[int]], caps: list[int], params: SamplingParams
    ) -> list[Generation]:
        from memory_r1.llm.hf_generate import generate_and_cut

        kwargs: dict[str, Any] = {
            "max_new_tokens": max(caps),
            "pad_token_id": self.pad_token_id,
            "eos_token_id": list(self.eos_token_ids),
        }
        if params.greedy:
            kwargs["do_sample"] = False
        else:
            kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p, top_k=0)
        if params.stop:
            kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
        try:
            rows = generate_and_cut(
                self.model, prompts, caps, pad_id=self.pad_token_id, eos_ids=self.eos_token_ids,
                padded_cache=self.padded_cache, share_prefixes=self.share_prefixes, device=self.device, **kwargs,
            )
        except RuntimeError as exc:
            raise LLMError(f"{self.name}: generation failed on {self.device}: {exc}") from exc
        self.prefix_batches += int(rows.shared_prefix)
        gens = []
        for j, (toks, ended) in enumerate(zip(rows.tokens, rows.ended, strict=True)):
            used = toks[:-1] if ended else toks  # the text leaves the end-of-sequence token out
            text = self.tokenizer.decode(
                used, skip_special_tokens=True, clean_up_tokenization_spaces=False
            )
            text, stopped = cut_at_stop(text, params.stop)
            if stopped:
                n_completion = self._completion_tokens_until_stop(used, params.stop or [])
                reason = "stop"
            else:
                n_completion, reason = len(toks), "stop" if ended else "length"
            gens.append(Generation(text, len(prompts[j]), n_completion, reason))
        return gens

    def close(self) -> None:
        release_model(self, "model")


def from_pretrained(
    path_or_alias: str | os.PathLike = DEFAULT_BACKBONE,
    device: str | None = "auto",
    dtype: Any = "auto",
    **options: Any,
) -> HFBackend:
    """``HFBackend.from_pretrained``: resolve through the backbone registry and load."""
    return HFBackend.from_pretrained(path_or_alias, device=device, dtype=dtype, **options)
