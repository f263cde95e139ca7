"""A run's record survives any later command; a run killed at any phase resumes to exactly
what an uninterrupted run gives; one process per run folder (docs/reliability.md).

    .venv/bin/python -m pytest -q tests/test_reliability.py            # + -m slow: every phase
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hydra import compose, initialize_config_dir

from geora import rewards
from geora.training.rundir import RunBusyError, RunFolder
from tests.fault_run import KILLED
from geora.training.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")
TINY = ["method=geora", "method.rank=4", "model.random_init=true", "model.bundled=null",
        "model.arch.hidden_size=64", "model.arch.num_hidden_layers=2",
        "model.arch.intermediate_size=128", "model.arch.head_dim=16",
        "train.num_generations=2", "train.prompts_per_step=2", "train.max_completion_length=6",
        "train.logging_steps=1", "data.train_size=16", "data.test_size=2",
        "train.rewards=[test_length]", "eval_before=false"]
# 4 steps, checkpoints at 2 and 4: the last checkpoint is at max_steps
RESUMABLE = TINY + ["train.max_steps=4", "train.save_steps=2", "eval.tasks=[micro_sort]",
                    "eval.limit=2", "eval.max_gen_toks=4"]


def env():
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(ROOT)}


def fault_run(phase: str, run_dir: Path, *extra: str, timeout: float = 300):
    return subprocess.run([sys.executable, str(ROOT / "tests" / "fault_run.py"), phase,
                           *RESUMABLE, f"hydra.run.dir={run_dir}", *extra],
                          cwd=run_dir.parent, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def weights(run_dir: Path) -> dict[str, bytes]:
    """Every weight file of the saved adapter and export, as bytes."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for sub in ("adapter", "export") for p in sorted((run_dir / sub).rglob("*.safetensors"))}


def logged_steps(run_dir: Path) -> list[int]:
    return [json.loads(line)["step"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    done = fault_run("none", run_dir)
    assert done.returncode == 0, done.stderr[-3000:]
    log = [json.loads(line) for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert any(rec.get("grad_norm", 0) > 0 for rec in log), "the weights must move"
    return run_dir


# What each kill leaves behind, checked before the resume (so the kill is where it says).
LEFT_BEHIND = {
    "step": lambda run: run.last_checkpoint().endswith("checkpoint-2")
    and not (run.checkpoints / "checkpoint-4").exists(),
    "checkpoint": lambda run: (run.checkpoints / "checkpoint-4" / "optimizer.pt").is_file()
    and run.last_checkpoint().endswith("checkpoint-2"),
    "save": lambda run: any(p.name.startswith(".adapter.tmp-") for p in run.stale_temporaries()),
    "evaluation": lambda run: any(p.name.startswith(".after.tmp-") for p in run.stale_temporaries()),
    "results": lambda run: any(p.name.startswith(".results.json.") for p in run.stale_temporaries()),
}


@pytest.mark.parametrize("phase", [
    "step", "save",
    pytest.param("checkpoint", marks=pytest.mark.slow),
    pytest.param("evaluation", marks=pytest.mark.slow),
    pytest.param("results", marks=pytest.mark.slow),
])
def test_a_run_killed_at_each_phase_resumes_to_the_uninterrupted_result(phase, uninterrupted,
                                                                        tmp_path):
    run_dir = tmp_path / "run"
    killed = fault_run(phase, run_dir)
    assert killed.returncode == KILLED, killed.stderr[-3000:]
    run = RunFolder(run_dir)
    assert not run.results.exists() and LEFT_BEHIND[phase](run), sorted(os.listdir(run_dir))

    resumed = fault_run("none", run_dir)     # the same command, nothing injected
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    res, ref = run.read_results(), json.loads((uninterrupted / "results.json").read_text())
    assert res["status"] == "finished" and res["train"]["steps"] == 4 == ref["train"]["steps"]
    assert weights(run_dir) == weights(uninterrupted) and weights(run_dir)
    assert res["eval"] == ref["eval"] and set(res["eval"]) == {"micro_sort"}
    assert res["train"]["reward_per_step"] == ref["train"]["reward_per_step"]
    assert logged_steps(run_dir) == logged_steps(uninterrupted)   # no step twice
    assert run.stale_temporaries() == []
    assert sorted(p.name for p in run.checkpoints.iterdir()) == \
        sorted(p.name for p in (uninterrupted / "checkpoints").iterdir())


# ------------------------------------------------------------------------ one process
HOLDER = """
import sys, time
sys.path.insert(0, {root!r})
from geora.training.rundir import RunFolder
with RunFolder({path!r}).locked():
    print("locked", flush=True)
    time.sleep(120)
"""


def _hold(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLDER.format(root=str(ROOT), path=str(path))],
                            stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_process_stops_at_once_naming_the_holder_and_a_killed_holder_frees_it(tmp_path):
    run_dir = tmp_path / "run"
    holder = _hold(run_dir)
    try:
        with pytest.raises(RunBusyError, match=rf"in use by another process \(pid {holder.pid} on "
                                               r".*, started 20\d\d-"):
            with RunFolder(run_dir).locked():
                pass
        t0 = time.time()
        plain = [o for o in TINY if not o.startswith("train.rewards=")]
        second = subprocess.run([sys.executable, str(ROOT / "run.py"), *plain, "train.max_steps=1",
                                 "eval=none",
                                 f"hydra.run.dir={run_dir}"], cwd=tmp_path, env=env(),
                                capture_output=True, text=True, timeout=120)
        assert second.returncode != 0 and time.time() - t0 < 60
        assert f"RunBusyError: {run_dir} is in use by another process (pid {holder.pid}" in second.stderr
        assert "Traceback" not in second.stderr
        assert sorted(p.name for p in run_dir.iterdir()) == [".run.lock", "run.log"]   # (Hydra's)
    finally:
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait()
    with RunFolder(run_dir).locked():      # the kernel dropped the dead holder's lock
        pass
    assert not (run_dir / RunFolder.LOCK).exists()


# --------------------------------------------------------------------- the record is kept
@pytest.fixture
def test_reward(monkeypatch):
    monkeypatch.setitem(rewards.REWARDS, "test_length",
                        lambda completions, **_: [len(rewards.completion_text(c)) / 10.0
                                                  for c in completions])


def _config(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=[*TINY, "train.max_steps=2", "train.save_steps=100",
                                            "eval=none", *overrides])


def test_a_finished_record_survives_a_typo_and_a_late_failure_blocks_nothing(tmp_path, test_reward,
                                                                             monkeypatch):
    from geora.training import pipeline

    run_dir = tmp_path / "run"
    commits = iter(["commit-at-start"] + ["commit-later"] * 9)   # read at the start
    monkeypatch.setattr(pipeline, "git_info", lambda: {"commit": next(commits), "dirty": False})
    pipeline.train(_config(), run_dir)
    record = (run_dir / "results.json").read_bytes()
    assert json.loads(record)["env"]["commit"] == "commit-at-start"

    # the typo, and a bad value found only once the model is loaded
    with pytest.raises(ValueError, match="unknown evaluation task 'micro_mathh'"):
        pipeline.train(_config("eval.tasks=[micro_mathh]"), run_dir)
    with pytest.raises(ValueError, match="method.rank=4096: module"):   # found from the config
        pipeline.train(_config("method.rank=4096"), run_dir)
    late = "model.stop_tokens=['<|nope|>']"   # found only once the tokenizer is loaded
    with pytest.raises(pipeline.RunExistsError, match="finished run"):
        pipeline.train(_config(late), run_dir)
    assert (run_dir / "results.json").read_bytes() == record
    assert not (run_dir / "failure.json").exists()

    import importlib.util
    if importlib.util.find_spec("vllm") is None:        # found at the start, nothing written
        with pytest.raises(ValueError, match="train.use_vllm=true needs vLLM"):
            pipeline.train(_config("train.use_vllm=true"), tmp_path / "vllm")
        assert not (tmp_path / "vllm" / "config.yaml").exists()

    # a bad value found after loading in a new folder is recorded ...
    other = tmp_path / "other"
    with pytest.raises(ValueError, match=r"model.stop_tokens: '<\|nope\|>'"):
        pipeline.train(_config(late), other)
    assert RunFolder(other).state() == "failed" and (other / "config.yaml").is_file()
    # ... and the corrected command runs (no checkpoint: nothing of the failed run to keep)
    res = pipeline.train(_config(), other)
    assert res["status"] == "finished" and not (other / "failure.json").exists()


def test_failure_beside_a_finished_record_goes_to_failure_json_only(tmp_path):
    run = RunFolder(tmp_path)
    run.write_results({"status": "finished", "method": "geora"})
    record = run.results.read_bytes()
    run.write_failure({"status": "failed", "error": "late"}, ValueError("late"))
    assert run.results.read_bytes() == record and json.loads(run.failure.read_text())["error"] == "late"


def test_overwrite_and_resume_clear_what_a_killed_run_left(tmp_path):
    run = RunFolder(tmp_path)
    run.write_config(_config())
    (run.path / ".adapter.tmp-abc").mkdir()
    (run.path / ".adapter.tmp-abc" / "geora_adapter.json").write_text("{}")
    (run.path / ".results.json.x1.tmp").write_text("{")
    (run.path / "evals" / ".after.tmp-def").mkdir(parents=True)
    (run.checkpoints / "checkpoint-2").mkdir(parents=True)          # killed while saving
    (run.checkpoints / "checkpoint-2" / "optimizer.pt").write_bytes(b"half")
    assert len(run.stale_temporaries()) == 4
    from geora.training.claim import prepare_run_dir

    # resumes: nothing to resume
    assert prepare_run_dir(RunSettings.from_config(_config()), run) is None
    assert run.stale_temporaries() == [] and run.config.is_file()
    (run.path / ".export.tmp-1").mkdir()
    run.clear()                                                     # train.overwrite=true
    assert list(run.path.iterdir()) == []


def test_a_resume_drops_the_log_records_after_its_checkpoint(tmp_path):
    run = RunFolder(tmp_path)
    run.log.write_text("".join(json.dumps({"step": s, "loss": s}) + "\n" for s in (1, 2, 3))
                       + '{"step": 4, "lo')          # a killed run's last line, cut short
    run.truncate_log(2)
    assert [r["step"] for r in run.read_log()] == [1, 2]


# ------------------------------------------------------------- evaluations never replaced
def _evaluate_script():
    import importlib.util

    spec = importlib.util.spec_from_file_location("evaluate_script", ROOT / "scripts" / "evaluate.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    return script


def test_a_limited_or_other_evaluation_never_replaces_a_complete_one(tmp_path, test_reward):
    from analysis.tables import build_table, collect_runs
    from geora.training.pipeline import train

    run = RunFolder(tmp_path / "run")
    train(_config("eval.tasks=[micro_sort]", "eval.limit=1", "eval.max_gen_toks=2"), run.path)
    script = _evaluate_script()

    def evaluate(*overrides):
        with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
            cfg = compose("evaluate", overrides=["eval=micro", "eval.tasks=[micro_reverse]",
                                                 "eval.max_gen_toks=2", f"run_dir={run.path}",
                                                 *overrides])
        return script.evaluate(cfg, tmp_path / "unused")

    complete = evaluate()                                   # every item: evals/micro
    summary = (run.evaluation("micro") / "eval_results.json").read_bytes()
    script_run = subprocess.run(                           # the script itself, end to end
        [sys.executable, str(ROOT / "scripts" / "evaluate.py"), "eval=micro", "eval.limit=3",
         "eval.tasks=[micro_reverse]", "eval.max_gen_toks=2", f"run_dir={run.path}",
         f"hydra.run.dir={tmp_path / 'unused'}"], cwd=tmp_path, env=env(), capture_output=True,
        text=True, timeout=300)
    assert script_run.returncode == 0, script_run.stderr[-3000:]
    assert f"results: {run.evaluation('micro-limit3')}/eval_results.json" in script_run.stdout
    limited = json.loads((run.evaluation("micro-limit3") / "eval_results.json").read_text())["scores"]
    assert (run.evaluation("micro") / "eval_results.json").read_bytes() == summary
    assert run.later_evaluations() == {"micro": complete, "micro-limit3": limited}
    with pytest.raises(ValueError, match=r"evals/micro holds an evaluation with other settings "
                                         r"\(max_gen_toks: 2 -> 3\); pass eval.overwrite=true"):
        evaluate("eval.max_gen_toks=3")
    with pytest.raises(ValueError, match=r"other settings \(tasks: \['micro_reverse'\] -> "):
        evaluate("eval.tasks=[micro_math]")
    assert (run.evaluation("micro") / "eval_results.json").read_bytes() == summary
    evaluate("eval.max_gen_toks=3", "eval.overwrite=true")  # asked for: replaced
    assert json.loads((run.evaluation("micro") / "eval_results.json").read_text())["eval"][
        "max_gen_toks"] == 3

    # the tables: training's own limited evaluation and the limited later one are marked,
    # the complete one is what eval.micro_reverse reads
    row = collect_runs(tmp_path).iloc[0]
    assert row["limits"] == {"eval.micro_sort": 1, "evals.micro-limit3.micro_reverse": 3}
    table = build_table("runs", collect_runs(tmp_path))
    texts = {c["column"]: c["text"] for c in table.cells if c["source"] == "ours"}
    assert texts["micro_sort"].endswith("[limit 1]") and "limit" not in texts["micro_reverse"]
    assert any("eval.limit" in note for note in table.notes)


# ----------------------------------------------------------------------- small items (6)
def test_an_added_key_typo_is_refused_in_one_line(tmp_path):
    p = subprocess.run([sys.executable, str(ROOT / "run.py"), "+train.lernig_rate=1e-4",
                        f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path, env=env(),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and "Traceback" not in p.stderr
    assert "error: ValueError: +train.lernig_rate=1e-4 adds a key the config does not have" in p.stderr
    assert not (tmp_path / "run" / "config.yaml").exists()


def test_a_random_bytes_data_file_is_named(tmp_path):
    from geora.data.loaders import load_data

    bad = tmp_path / "train.jsonl"
    bad.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(ValueError, match=rf"cannot read {bad}: not UTF-8 text"):
        load_data(_config("data=deepmath_103k", f"data.local_path={bad}", "data.test_size=0").data)


def test_prompts_longer_than_the_context_stop_before_training(caplog):
    from geora.models import load_tokenizer
    from geora.training.preflight import check_prompt_lengths, warn_many_epochs

    tokenizer = load_tokenizer(_config("model=micro").model)
    short = [{"role": "user", "content": "What is 2 + 3?"}]
    long = [{"role": "user", "content": "1 + 1 = 2. " * 200}]
    assert check_prompt_lengths([short] * 3, tokenizer, 512, 64, {}, "data 'x'") == 0  # (bound)
    with pytest.raises(ValueError, match=r"data 'x': prompt 1 has \d+ tokens, and with "
                                         r"train.max_completion_length=64 it does not fit the "
                                         r"model's context of 512 tokens"):
        check_prompt_lengths([short, long], tokenizer, 512, 64, {}, "data 'x'")
    with caplog.at_level("WARNING"):
        assert warn_many_epochs(max_steps=400, prompts_per_step=2, n_prompts=16,
                                data="micro_math") == 50.0
    assert "go over the 16 training prompts of data 'micro_math' 50.0 times (epochs)" in caplog.text


def test_a_damaged_checkpoint_is_named(tmp_path):
    from safetensors.torch import save_file
    import torch

    from geora.training.resume import check_checkpoint

    ckpt = tmp_path / "checkpoint-2"
    ckpt.mkdir()
    (ckpt / "trainer_state.json").write_text('{"global_step": 2}')
    save_file({"w": torch.ones(64)}, str(ckpt / "adapter_model.safetensors"))
    torch.save({"state": {}}, ckpt / "optimizer.pt")
    check_checkpoint(ckpt)
    data = (ckpt / "adapter_model.safetensors").read_bytes()
    (ckpt / "adapter_model.safetensors").write_bytes(data[:-10])          # truncated
    with pytest.raises(ValueError, match=rf"checkpoint {ckpt} is damaged \(adapter_model"):
        check_checkpoint(ckpt)


def test_files_and_folders_get_the_users_umask(tmp_path):
    from geora.fileio import atomic_dir, atomic_write_text

    old = os.umask(0o027)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_dir(tmp_path / "folder") as tmp:
            atomic_write_text(tmp / "b.txt", "y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "folder").stat().st_mode & 0o777 == 0o750
    assert (tmp_path / "folder" / "b.txt").stat().st_mode & 0o777 == 0o640
