"""GRPO through TRL's GRPOTrainer (wrapped, not forked): config translation and trainer build.

The model passed in is what `geora.prepare_model` returned: a peft.PeftModel for adapter
methods, the transformers model for sparseft/fullft. It always goes to GRPOTrainer as a
model object and NEVER with `peft_config`: given `peft_config`, TRL's KL reference is the
model with adapters disabled, which for the residual methods (geora*, pissa, milora) is
W_res, not the original W. Given a PeftModel and beta > 0, TRL 1.16 copies the "default"
adapter into a frozen "ref" adapter (grpo_trainer.py, `model.add_adapter("ref", ...)`), so
the reference is W_res + s*B0@A0 = W, without a second copy of the base model.
"""
from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import torch
from transformers import TrainerCallback

from geora.config.sections import TrainConfig
from geora.distributed import world_size as process_count
from geora.kinds import kind_of
from geora.rewards import get_rewards


def per_device_batch(train: TrainConfig, world_size: int) -> int:
    """Completions per device per micro-step, from prompts/step, group size, accumulation.

    TRL counts completions, not prompts: prompts_per_step * num_generations completions make
    one optimizer step, split over gradient_accumulation_steps x world_size micro-batches.
    """
    completions = train.prompts_per_step * train.num_generations
    split = train.gradient_accumulation_steps * world_size
    if completions % split:
        raise ValueError(
            f"train.prompts_per_step x train.num_generations = {completions} completions per step "
            f"do not split into gradient_accumulation_steps x processes = {split} equal micro-batches")
    return completions // split


def check_device_settings(train: TrainConfig, device: str) -> None:
    """What the train section asks of the device, one line each: vLLM (installed; server
    mode not on a CPU) and bf16 only on a GPU. Run at start (checks.check_run_inputs) and
    again by grpo_config, for callers that build a trainer directly."""
    from geora.vllm_backend import check_vllm_settings

    check_vllm_settings(train.use_vllm, train.vllm_mode, device)
    if str(device) == "cpu" and train.bf16:
        raise ValueError("train.bf16=true on device=cpu: TRL's bf16 path fails on the cpu; "
                         "set train.bf16=false (or run on a GPU)")


def grpo_config(train: TrainConfig | Mapping[str, Any], *, output_dir: str, seed: int,
                device: str, report_to: list[str], world_size: int = 1,
                enable_thinking: bool | None = None):
    """A trl.GRPOConfig from the `train` section (conf/train/*.yaml, checked into a
    TrainConfig) and the model's chat mode (model.enable_thinking: TRL renders every rollout
    prompt with it, as the evaluation does; it also picks train.max_completion_length when
    that is per mode).

    Every setting but TrainConfig.PROJECT_KEYS goes to GRPOConfig under its own name
    (`TrainConfig.trl_kwargs`, `+train.<field>` ones included). What the project derives
    (batch split, chat mode, seed, CPU flags, output folder) is set here and cannot be
    overridden from the config."""
    from trl import GRPOConfig

    from geora.models import chat_template_kwargs, for_chat_mode

    train = TrainConfig.of(train)
    check_device_settings(train, device)
    on_cpu = str(device) == "cpu"
    derived = dict(
        output_dir=output_dir, seed=seed, data_seed=seed,
        per_device_train_batch_size=per_device_batch(train, world_size),
        max_completion_length=int(for_chat_mode(train.max_completion_length, enable_thinking,
                                                "train.max_completion_length")),
        chat_template_kwargs=chat_template_kwargs(enable_thinking) or None,
        report_to=list(report_to) or "none", save_strategy="steps",
        use_cpu=on_cpu, dataloader_pin_memory=not on_cpu, disable_tqdm=False,
    )
    return GRPOConfig(**{**train.trl_kwargs(), **derived})


class StepStats(TrainerCallback):
    """Wall time of each optimizer step (generation + update) and peak memory."""

    def __init__(self):
        self.step_times: list[float] = []
        self._t0 = None

    def on_step_begin(self, args, state, control, **kwargs):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kwargs):
        if self._t0 is not None:
            self.step_times.append(time.perf_counter() - self._t0)

    @staticmethod
    def peak_memory_gib(device: str) -> float:
        if str(device).startswith("cuda") and torch.cuda.is_available():
            return torch.cuda.max_memory_allocated() / 2**30
        import resource  # CPU: peak resident set of this process (Linux reports KiB)
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


class RewardProgress(TrainerCallback):
    """A tqdm bar over optimizer steps showing the mean reward of the last 10 steps; it
    replaces the Trainer's bar, which prints every log record (a 25-key dict) per step."""

    def __init__(self):
        self.bar, self.recent = None, []

    def on_train_begin(self, args, state, control, **kwargs):
        from tqdm.auto import tqdm

        if state.is_world_process_zero:
            self.bar = tqdm(total=state.max_steps, initial=state.global_step, desc="GRPO",
                            unit="step", dynamic_ncols=True)

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is not None and logs and "reward" in logs:
            self.recent = (self.recent + [float(logs["reward"])])[-10:]
            self.bar.set_postfix(reward10=f"{sum(self.recent) / len(self.recent):.3f}")

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()


class JsonlLogCallback(TrainerCallback):
    """Appends every Trainer log record (loss, reward, kl, ...) as one JSON line, with step,
    wall time and the seconds since the previous record, and flushes it at once so that a
    killed run keeps its log. A resumed run appends to the same file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._last = None

    def on_log(self, args, state, control, logs=None, **kwargs):
        if not state.is_world_process_zero or not logs:
            return
        now = time.time()
        rec = {"step": state.global_step, "time": now,
               "dt": None if self._last is None else now - self._last, **logs}
        self._last = now
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec, default=float) + "\n")
            f.flush()


def vllm_stop_kwargs(generation_config) -> dict[str, Any]:
    """vLLM SamplingParams keywords that stop a rollout where the policy's own generate does:
    at every id of generation_config.eos_token_id (model.stop_tokens joined it at load, e.g.
    <|im_end|> for a pretrained Qwen prompted through ChatML); TRL hands vLLM only
    GRPOConfig.generation_kwargs.

    >>> from transformers import GenerationConfig
    >>> vllm_stop_kwargs(GenerationConfig(eos_token_id=[151643, 151645])), vllm_stop_kwargs(GenerationConfig())
    ({'stop_token_ids': [151643, 151645]}, {})
    """
    ids = generation_config.eos_token_id
    ids = [] if ids is None else [ids] if isinstance(ids, int) else list(ids)
    return {"stop_token_ids": [int(i) for i in ids]} if ids else {}


def _vllm_engine(model, tokenizer, args, device: str):
    """Where TRL builds a colocated vLLM engine: the trained model's dtype (bf16 under
    train.bf16's autocast) and, on the CPU, the CPU engine's settings given to it
    (geora.vllm_backend.colocated_engine)."""
    from contextlib import nullcontext

    if not (args.use_vllm and args.vllm_mode == "colocate"):
        return nullcontext()
    from geora.vllm_backend import apply_cpu_engine_env, colocated_engine

    if str(device) == "cpu":
        apply_cpu_engine_env(torch.get_num_threads())
    return colocated_engine(model, tokenizer, "bfloat16" if args.bf16 else None)


def build_trainer(model, tokenizer, train_dataset, train: TrainConfig | Mapping[str, Any], *,
                  output_dir: str,
                  seed: int, device: str, report_to: list[str], callbacks=(),
                  enable_thinking: bool | None = None):
    """GRPOTrainer on an already-prepared model (see the module docstring for why no
    peft_config), with the callbacks the method's kind needs (e.g. AdaLoRA's budget), its
    rollouts rendered in the model's chat mode (`enable_thinking`, see grpo_config)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback
    from trl import GRPOTrainer

    from geora.fused_lora import enable_fused_lora
    from geora.training.rollouts import FastRolloutGRPOTrainer

    # Both change speed, not the maths (README "Performance"): PEFT's LoRA layers run one
    # autograd.Function (no-op for a model without lora.Linear, e.g. fullft, sparseft;
    # DoRA/AdaLoRA layers keep PEFT's forward), and rollouts generate with the adapters
    # merged into copies of the weights, the original tensors put back bitwise afterwards.
    train = TrainConfig.of(train)
    if train.fused_lora:
        enable_fused_lora(model)
    trainer_class = FastRolloutGRPOTrainer if train.merged_rollouts else GRPOTrainer
    args = grpo_config(train, output_dir=output_dir, seed=seed, device=device,
                       report_to=report_to, world_size=process_count(),
                       enable_thinking=enable_thinking)
    if args.use_vllm:   # vLLM stops at the checkpoint folder's eos only (model.stop_tokens)
        args.generation_kwargs = {**vllm_stop_kwargs(model.generation_config),
                                  **(args.generation_kwargs or {})}
    with _vllm_engine(model, tokenizer, args, device):
        trainer = trainer_class(model=model, reward_funcs=get_rewards(train.rewards),
                                args=args, train_dataset=train_dataset, processing_class=tokenizer,
                                callbacks=list(callbacks) + kind_of(model).trainer_callbacks(model))
    if args.use_vllm:   # the CPU backend syncs through reload_weights (geora.vllm_backend)
        from geora.vllm_backend import use_reload_sync

        use_reload_sync(trainer)
    trainer.remove_callback(ProgressCallback)
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(RewardProgress())
    return trainer
