"""One RLVR experiment, config in, metrics out: `train(cfg, run_dir) -> results dict`.

    check: config -> RunSettings (typed, each section checked) + the rules across sections
    -> load data -> open the run folder -> load model -> evaluate
    before -> geora.prepare_model(method) -> GRPO (TRL) -> save adapter + export -> evaluate
    after -> analyse -> results.json

The `base` pseudo-method (conf/method/base.yaml, method.trains=false) stops after loading
the model: it evaluates the untrained model once and writes its record (the Base row).
Everything a run needs is checked before its folder is touched (RunSettings.from_config,
checks.check_run_inputs, then the data's columns), so bad input writes nothing; the steps
read the typed settings, never the raw config. One process
at a time runs in a folder (RunFolder.locked, held for the whole run); a failure after the
run claimed its folder (wrote config.yaml) is recorded in failure.json and results.json
(status "failed"), one before it writes nothing, and a finished run's results.json is never
replaced by a failure.

`run.py` wraps this in @hydra.main; tests call it directly with a composed config. The run
folder (rundir.RunFolder) is the only code that knows the layout; what its state allows
(new, resume, refuse) is geora.training.claim's. A resume ends at exactly max_steps, from
any checkpoint (geora.training.resume). Residual methods are re-prepared from the seed
before a checkpoint is loaded, so W_res (which no checkpoint stores) is the same bits as
before.
"""
from __future__ import annotations

import logging
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig

from geora.config.sections import MethodConfig
from geora.distributed import (gather_from_processes, is_main_process, process_rank,
                               trainable_checksum, wait_for_everyone, world_size)
from geora.fileio import git_info
from geora.sandbox import results_record as code_runner_record
from geora.training.checks import check_run_inputs
from geora.training.claim import prepare_run_dir, refuse_finished
from geora.training.outcome import frozen_snapshot, frozen_unchanged, reward_windows
from geora.training.rundir import (AFTER, BEFORE, RunBusyError, RunExistsError, RunFolder,
                                   env_info)
from geora.training.settings import RunSettings

log = logging.getLogger(__name__)


def method_kwargs(method: MethodConfig | DictConfig, seed: int | None = None) -> dict:
    """prepare_model's arguments from the `method` section (null = not given); the run's
    `seed` is the method's `seed` option (randomized SVD, Random-r draws) unless
    method.options sets it. LoRA's A0: torch's generator, seeded by `prepare`."""
    from geora.methods import get_method

    method = MethodConfig.of(method)
    kw = {k: getattr(method, k) for k in ("rank", "rho", "alpha", "target_modules")
          if getattr(method, k) is not None}
    kw.update(method.options)
    takes_seed = method.trains and "seed" in get_method(method.name).options
    if seed is not None and takes_seed and kw.get("seed") is None:
        kw["seed"] = int(seed)
    return kw


@dataclass
class Run:
    """What the steps of one training run share: its checked settings and what the steps
    make."""
    settings: RunSettings
    folder: RunFolder
    started: float = field(default_factory=time.time)
    git: dict = field(default_factory=git_info)   # commit and dirty flag at the start
    resume_from: str | None = None
    model: Any = None
    tokenizer: Any = None
    train_data: Any = None
    params: tuple[int, int] = (0, 0)            # (trainable, total)
    frozen: dict | None = None                  # snapshot of the frozen tensors
    eval_before: dict = field(default_factory=dict)
    eval_after: dict = field(default_factory=dict)
    export: str = "export"
    analysis: dict = field(default_factory=dict)

    @property
    def device(self) -> str:
        return self.settings.device


# ------------------------------------------------------------------------------ steps
def load_train_data(settings: RunSettings):
    """The training split of the data section, checked against the rewards: every column
    they read present, and the code runner working for each test format the data uses."""
    from geora.data.loaders import load_data
    from geora.rewards import check_code_execution_allowed, check_reward_columns

    data, _held_out = load_data(settings.data, settings.model.prompt_format)
    names = list(settings.train.rewards)
    check_reward_columns(names, data.column_names, settings.data.name)
    if "test_format" in data.column_names:   # (code execution was allowed by check_run_inputs)
        check_code_execution_allowed(names, True, test_formats=set(data["test_format"]))
    return data


def check(cfg: DictConfig) -> RunSettings:
    """The config checked into RunSettings (each section's values), then what the run needs
    (checks.check_run_inputs: the rules across sections, the model's and the data's
    sources); reads nothing of the run folder."""
    settings = RunSettings.from_config(cfg)
    check_run_inputs(settings)
    return settings


def start(settings: RunSettings, run_dir: str | Path | RunFolder,
          overrides: list[str] | None, *, git: dict | None = None) -> Run:
    """Load and check the training data, then claim (or resume) the run folder: a failure
    before the claim writes nothing here. Runs under the folder's lock (train)."""
    from geora.training.preflight import warn_many_epochs

    folder = run_dir if isinstance(run_dir, RunFolder) else RunFolder(run_dir)
    refuse_finished(settings.train, folder)   # before the data is read for nothing
    train_data = load_train_data(settings) if settings.trains else None
    if train_data is not None:
        warn_many_epochs(max_steps=settings.train.max_steps, n_prompts=len(train_data),
                         prompts_per_step=settings.train.prompts_per_step,
                         data=settings.data.name)
    # Under `accelerate launch` the main process alone checks, clears and writes the folder;
    # the others start once it is ready and resume from the same checkpoint.
    folder.path.mkdir(parents=True, exist_ok=True)
    resume_from = None
    if is_main_process():
        resume_from = prepare_run_dir(settings, folder)
        if overrides is not None:
            folder.write_overrides(overrides)
    wait_for_everyone(cpu=settings.device == "cpu")
    if not is_main_process():
        resume_from = folder.last_checkpoint()
    run = Run(settings, folder, resume_from=resume_from, train_data=train_data,
              **({"git": git} if git is not None else {}))
    logger = settings.logger
    if logger.get("mode"):
        os.environ.setdefault("WANDB_MODE", str(logger["mode"]))
        os.environ.setdefault("WANDB_PROJECT", str(logger["project"]))
        os.environ.setdefault("WANDB_DIR", str(folder.path))
    return run


def load_dtype(settings: RunSettings) -> str:
    """The dtype the model is loaded in: model.dtype, but float32 when the method's kind
    steps the model's own weights (fullft: MethodKind.needs_fp32_master_weights) and
    model.dtype is 16-bit. Those fp32 weights are the master weights; train.bf16=true (the
    GPU default) computes forward and backward in bf16 by autocast, and the saved model and
    the evaluation after training keep fp32."""
    from geora.methods import get_method
    from geora.models import dtype_name, torch_dtype

    s = settings
    dtype = dtype_name(s.model)
    if (s.trains and get_method(s.method.name).kind.needs_fp32_master_weights
            and torch_dtype(dtype).itemsize < 4):
        log.info("%s steps the model's own weights: loading %s in float32 (master weights) "
                 "instead of %s", s.method.name, s.model.name, dtype)
        return "float32"
    return dtype


def load(run: Run) -> None:
    """Seeded load of the model and tokenizer (in `load_dtype`)."""
    from transformers import set_seed

    from geora.models import cpu_threads_for, load_model

    s = run.settings
    set_seed(s.seed)
    run.model, run.tokenizer = load_model(s.model, device=run.device, dtype=load_dtype(s))
    threads = cpu_threads_for(run.model, s.cpu_threads)
    if run.device == "cpu" and threads:
        torch.set_num_threads(threads)


def evaluate(run: Run, name: str) -> dict[str, float]:
    """Score the model on the eval settings into evals/<name> (nothing without tasks)."""
    if not run.settings.eval.tasks:
        return {}
    from geora.evaluation import evaluate_in_memory

    with run.folder.new_evaluation(name) as out_dir:
        scores = evaluate_in_memory(run.model, run.tokenizer, run.settings.eval, out_dir)
    return {k: float(v) for k, v in scores.items()}


def evaluate_before(run: Run) -> None:
    """The loaded model's scores (once: a resumed run reads them back)."""
    if run.resume_from:
        run.eval_before = run.folder.evaluation_scores(BEFORE) or {}
        if run.eval_before:
            return
    if is_main_process() and run.settings.eval_before:
        run.eval_before = evaluate(run, BEFORE)


def evaluate_base(run: Run) -> dict:
    """The `base` job: the untrained model's evaluation (evals/before/), once per model and
    evaluation set; its record has train null and eval = eval_before = those scores."""
    if not is_main_process():
        return {"status": "finished", "rank": process_rank()}
    run.eval_before = run.eval_after = evaluate(run, BEFORE)
    return write_results(run, None)


def prepare(run: Run) -> None:
    """Deterministic preparation (seeded SVDs / masks): a resumed run rebuilds the same W_res."""
    import geora

    s = run.settings
    torch.manual_seed(s.seed)
    kwargs = method_kwargs(s.method, s.seed)
    if keeps_initial(s):   # FullFT: a CPU copy of W0, so that dW = W1 - W0 can be read
        kwargs["keep_initial"] = True
    run.model = geora.prepare_model(run.model, s.method.name, **kwargs)
    run.params = geora.count_parameters(run.model)
    run.frozen = frozen_snapshot(run.model) if s.train.check_frozen else None


def grpo(run: Run) -> dict:
    """GRPO through TRL; returns the training record for results.json."""
    from geora.training.geometry import geometry_callbacks
    from geora.training.grpo import JsonlLogCallback, StepStats, build_trainer
    from geora.vllm_backend import rollout_engine

    from geora.training.resume import AtMaxSteps, StopAtMaxSteps, check_checkpoint

    s, stats = run.settings, StepStats()
    if run.resume_from:
        check_checkpoint(run.resume_from)
    trainer = build_trainer(run.model, run.tokenizer, run.train_data, s.train,
                            output_dir=str(run.folder.checkpoints), seed=s.seed,
                            device=run.device, report_to=list(s.logger.get("report_to", [])),
                            callbacks=[JsonlLogCallback(run.folder.log), stats,
                                       StopAtMaxSteps(),
                                       *geometry_callbacks(s.analysis, run.model, run.folder.log)],
                            enable_thinking=s.model.enable_thinking)
    try:
        out = trainer.train(resume_from_checkpoint=run.resume_from)
        steps, runtime = int(out.global_step), float(out.metrics.get("train_runtime", 0.0))
    except AtMaxSteps:   # resumed from a checkpoint at max_steps: its weights are loaded
        steps, runtime = int(trainer.state.global_step), 0.0
    run.model = trainer.model
    unchanged = frozen_unchanged(run.model, run.frozen) if run.frozen is not None else None
    if hasattr(run.model, "peft_config") and "ref" in run.model.peft_config:
        run.model.delete_adapter("ref")  # TRL's frozen KL-reference copy: not part of the result
    times = sorted(stats.step_times)
    trainable, total = run.params
    return {"steps": steps, "max_steps": s.train.max_steps,
            "resumed_from": run.resume_from, **reward_windows(run.folder.read_log()),
            "step_time_s": times[len(times) // 2] if times else None,
            "train_runtime_s": runtime,
            "peak_memory_gib": StepStats.peak_memory_gib(run.device),
            "trainable_params": int(trainable), "total_params": int(total),
            "frozen_unchanged": unchanged, "rollout_engine": rollout_engine(trainer)}


def save(run: Run) -> None:
    """adapter/ always; export/ when the method's kind has a LoRA form (both atomic)."""
    import geora

    from geora.kinds import kind_of, prepared_state

    geora.save_adapter(run.model, run.folder.adapter, overwrite=True)
    kind = kind_of(run.model)
    if kind.has_lora_form:
        geora.export_lora(run.model, run.folder.export, overwrite=True)
        run.export = RunFolder.EXPORT
    else:
        run.export = f"none: {kind.no_lora_form(prepared_state(run.model))}"


def keeps_initial(settings: RunSettings) -> bool:
    """Whether the method is prepared with keep_initial=True: the analysis is on (or the
    geometry is tracked, analysis.track_every), allowed to keep W0 (analysis.keep_initial),
    and the method keeps it only when asked (FullFT)."""
    from geora.training.weight_analysis import needs_initial_weights

    analysis = settings.analysis
    return ((analysis.enabled or analysis.track_every is not None) and analysis.keep_initial
            and needs_initial_weights(settings.method.name))


def analyse(run: Run, train_record: dict) -> None:
    """The weight analysis of the trained model (geora.training.weight_analysis): its
    aggregates go to results.json["analysis"], the per-matrix detail to analysis/summary.json."""
    from geora.training.weight_analysis import (NonFiniteUpdate, analyse_model,
                                                needs_initial_weights, write_analysis)

    settings = run.settings.analysis
    if not settings.enabled:
        return
    if needs_initial_weights(run.settings.method.name) and not settings.keep_initial:
        run.analysis = {"skipped": "analysis.keep_initial=false: W0 was not kept, so "
                                   "W1 - W0 cannot be formed"}
        log.warning("weight analysis skipped: %s", run.analysis["skipped"])
        return
    try:
        summary = analyse_model(run.model, settings)
    except NonFiniteUpdate as e:   # a diverged run is a result (its scores stand), not a crash
        run.analysis = {"skipped": str(e)}
        log.warning("weight analysis skipped: %s", e)
        return
    run.analysis = write_analysis(run.folder, summary, modules=settings.modules,
                                  train_runtime_s=train_record.get("train_runtime_s"))
    log.info("weight analysis: %d matrices in %.1f s", summary["n_matrices"], summary["time_s"])


def write_results(run: Run, train_record: dict | None) -> dict:
    """results.json; `train_record` None for the base model (nothing trained or saved)."""
    s = run.settings
    trained = train_record is not None
    results = {
        "status": "finished",
        "method": s.method.name, "model": s.model.name, "data": s.data.name,
        "seed": s.seed, "run_dir": str(run.folder.path),
        "train": train_record,
        "eval_before": run.eval_before or {}, "eval": run.eval_after,
        "adapter": RunFolder.ADAPTER if trained else None, "export": run.export if trained else None,
        **({"analysis": run.analysis} if run.analysis else {}),
        "time_s": time.time() - run.started,
        "env": env_info(run.device, run.git),
        # {"code_runner": "bwrap"|"guard", ...} when the run executes model-written code
        **code_runner_record(s.train.allow_code_execution or s.eval.allow_code_execution),
    }
    run.folder.write_results(results)
    return results


def train(cfg: DictConfig, run_dir: str | Path, overrides: list[str] | None = None) -> dict:
    """Runs one experiment in `run_dir` and returns what it writes to results.json.
    `overrides` (the command line's, from run.py) are kept in overrides.yaml.

    Checks first (nothing written), then the folder's lock for the whole run (the main
    process's, under `accelerate launch`); a failure once the run claimed its folder is
    recorded there (record_failure) and re-raised."""
    git = git_info()           # the source tree this run starts from
    settings = check(cfg)
    folder = RunFolder(run_dir)
    main = is_main_process()
    with folder.locked() if main else nullcontext():
        run = None
        try:
            run = start(settings, folder, overrides, git=git)
            return _train(run)
        except (RunExistsError, RunBusyError):
            raise
        except Exception as e:
            if main and run is not None:
                record_failure(folder.path, settings, e)
            raise


def _train(run: Run) -> dict:
    from geora.training.preflight import check_training_prompts

    load(run)
    if not run.settings.trains:
        return evaluate_base(run)
    check_training_prompts(run.settings, run.model, run.tokenizer, run.train_data)  # before any step
    # Under `accelerate launch` every process runs this function; only the main one
    # evaluates and writes the run's files (the Trainer itself saves checkpoints once).
    evaluate_before(run)
    prepare(run)
    train_record = grpo(run)
    if world_size() > 1:   # every process trained the same parameters (data parallel)
        sums = gather_from_processes(trainable_checksum(run.model))
        train_record.update(processes=len(sums), process_checksums=sums,
                            processes_agree=len(set(sums)) == 1)
    if not is_main_process():
        return {"status": "finished", "rank": process_rank()}
    save(run)
    run.eval_after = evaluate(run, AFTER)
    analyse(run, train_record)
    return write_results(run, train_record)


def record_failure(run_dir: str | Path, settings: RunSettings, exc: BaseException) -> None:
    """failure.json (error and traceback) and results.json with status "failed" (beside a
    finished run's results.json, failure.json only: RunFolder.write_failure)."""
    info = {"status": "failed", "error_type": type(exc).__name__, "error": str(exc),
            "method": settings.method.name, "model": settings.model.name, "seed": settings.seed,
            "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    RunFolder(run_dir).write_failure(info, exc)
