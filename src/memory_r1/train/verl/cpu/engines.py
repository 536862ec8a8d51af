"""verl's FSDP engines for device ``cpu`` (``verl.workers.engine.EngineRegistry``).

``FSDPEngineWithLMHead`` (actor and reference) and ``FSDPEngineWithValueHead`` (critic) registered
for device ``cpu`` (backends ``fsdp``/``fsdp2``), each with one CPU override (:func:`cpu_engines`):
forward-only models (the reference policy) are not wrapped in FSDP's pinned-memory CPU offloading
(needs an accelerator), and the critic is built with the configured attention (verl's value-model
loader hard-codes ``flash_attention_2``). Everything else (FSDP2 wrapping, mixed precision, losses,
checkpoints) is verl's.
"""

from __future__ import annotations

from typing import Any, Optional

from memory_r1.train.verl.cpu.settings import PLATFORM_NAME

_registered = False
_cpu_engine_classes: Optional[tuple[type, type]] = None


class _NoForwardOnlyOffload:
    """Mixin for verl's FSDP engines: wrap forward-only models without CPU offloading (see
    :func:`cpu_engines`)."""

    engine_config: Any

    def _build_fsdp_module(self, module: Any) -> Any:
        if not self.engine_config.forward_only:
            return super()._build_fsdp_module(module)  # type: ignore[misc]
        self.engine_config.forward_only = False  # a mutable field of verl's EngineConfig
        try:
            return super()._build_fsdp_module(module)  # type: ignore[misc]
        finally:
            self.engine_config.forward_only = True


def cpu_engines() -> tuple[type, type]:
    """verl's FSDP engines (``FSDPEngineWithLMHead``, ``FSDPEngineWithValueHead``), each with one
    CPU-specific override, registered for device ``cpu`` by :func:`register_engines`:

    - language model (actor, reference): verl wraps *forward-only* models (the reference policy) in
      FSDP's CPU offloading with pinned memory, which needs an accelerator ("Cannot access
      accelerator device when none is available") and means nothing when the device is the CPU, so
      they are wrapped like trainable models;
    - value model (critic): verl builds critics with ``verl.utils.model.load_valuehead_model``, which
      hard-codes ``attn_implementation="flash_attention_2"`` (no override reaches it), so on CPU the
      critic cannot be built. The override builds verl's first-choice critic architecture,
      ``AutoModelForTokenClassification`` with one label (the value per token), with the attention
      the model config asks for (``model.override_config.attn_implementation``, SDPA by default).

    Everything else (FSDP2 wrapping, mixed precision, losses, checkpoints) is verl's."""
    global _cpu_engine_classes
    if _cpu_engine_classes is not None:
        return _cpu_engine_classes
    from verl.workers.engine.fsdp.transformer_impl import FSDPEngineWithLMHead, FSDPEngineWithValueHead

    class CPUFSDPEngineWithLMHead(_NoForwardOnlyOffload, FSDPEngineWithLMHead):
        pass

    class CPUFSDPEngineWithValueHead(_NoForwardOnlyOffload, FSDPEngineWithValueHead):
        def _build_module(self):  # type: ignore[override]
            if self.model_config.model_type != "value_model":
                return super()._build_module()
            import warnings

            from transformers import AutoModelForTokenClassification
            from verl.models.transformers.monkey_patch import apply_monkey_patch
            from verl.utils.fsdp_utils import get_init_weight_context_manager
            from verl.utils.torch_dtypes import PrecisionType

            dtype = PrecisionType.to_dtype(self.engine_config.model_dtype or "fp32")
            hf_config = self.model_config.hf_config
            hf_config.num_labels = 1
            hf_config.classifier_dropout = 0.0
            attn = getattr(hf_config, "_attn_implementation", None) or "sdpa"
            if attn.startswith("flash_attention"):
                attn = "sdpa"
            init_context = get_init_weight_context_manager(
                use_meta_tensor=not hf_config.tie_word_embeddings, mesh=self.device_mesh
            )
            with init_context(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = AutoModelForTokenClassification.from_pretrained(
                    self.model_config.local_path,
                    dtype=dtype,
                    config=hf_config,
                    attn_implementation=attn,
                    trust_remote_code=self.model_config.trust_remote_code,
                )
                apply_monkey_patch(
                    model=module,
                    use_remove_padding=self.use_remove_padding,
                    ulysses_sp_size=self.ulysses_sequence_parallel_size,
                    use_fused_kernels=self.model_config.use_fused_kernels,
                )
                module.to(dtype)
                if self.model_config.enable_gradient_checkpointing:
                    module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            return module

    for cls in (CPUFSDPEngineWithLMHead, CPUFSDPEngineWithValueHead):
        cls.__module__ = __name__
        cls.__qualname__ = cls.__name__
    _cpu_engine_classes = (CPUFSDPEngineWithLMHead, CPUFSDPEngineWithValueHead)
    return _cpu_engine_classes


def register_engines() -> None:
    """Register verl's FSDP engines for device ``cpu`` (backends fsdp and fsdp2; idempotent), with
    the two CPU overrides of :func:`cpu_engines`.

    Imports ``verl.workers.engine``, which resolves verl's platform: call with ``VERL_PLATFORM=cpu``
    (or after :func:`memory_r1.train.verl.cpu.use_cpu_platform`)."""
    global _registered
    if _registered:
        return
    import warnings

    with warnings.catch_warnings():  # "torchtitan/veomni/megatron engine is not available", once per process
        warnings.filterwarnings("ignore", message=r".* engine is not available", category=UserWarning)
        from verl.workers.engine import EngineRegistry

        lm_engine, value_engine = cpu_engines()

    for model_type, engine in (("language_model", lm_engine), ("value_model", value_engine)):
        table = EngineRegistry._engines.get(model_type, {})
        backends = [b for b in ("fsdp", "fsdp2") if PLATFORM_NAME not in table.get(b, {})]
        if backends:
            EngineRegistry.register(model_type=model_type, backend=backends, device=PLATFORM_NAME)(engine)
    _registered = True

