"""Every paper experiment composes, for every job of its sweep, to the table it regenerates:
model (hub id), data, rewards, evaluation tasks, one chat mode, and the settings that define
the table (method list, sample counts, learning rates, grid, size ladder). Hydra compose
only: nothing is loaded.

    .venv/bin/python -m pytest -q tests/test_paper_experiments.py
"""
from __future__ import annotations

import csv
import itertools
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from geora.models import for_chat_mode
from geora.training.settings import RunSettings

ROOT = Path(__file__).resolve().parents[1]
CONF = ROOT / "conf"
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")

MATH = ["aime24", "aime25", "math500", "olymmath"]
# The pretrained checkpoints (checkpoint=base, the default; docs/protocol.md). Qwen3-32B has
# no -Base release, so the pretrained size ladder ends at 14B.
QWEN3_8B = {"qwen3_8b_base": "Qwen/Qwen3-8B-Base"}
QWEN3_4B = {"qwen3_4b_base": "Qwen/Qwen3-4B-Base"}
SIZES = {"qwen2_5_1_5b_base": "Qwen/Qwen2.5-1.5B", "qwen3_4b_base": "Qwen/Qwen3-4B-Base",
         "qwen3_8b_base": "Qwen/Qwen3-8B-Base", "qwen3_14b_base": "Qwen/Qwen3-14B-Base",
         "llama3_1_8b_base": "meta-llama/Llama-3.1-8B"}
# checkpoint=post: the post-trained ones, Qwen3 in non-thinking mode.
POST = {"qwen3_8b": "Qwen/Qwen3-8B", "qwen3_4b": "Qwen/Qwen3-4B", "qwen3_32b": "Qwen/Qwen3-32B",
        "qwen2_5_1_5b": "Qwen/Qwen2.5-1.5B-Instruct", "qwen3_14b": "Qwen/Qwen3-14B",
        "llama3_1_8b": "meta-llama/Llama-3.1-8B-Instruct"}
ABLATIONS = ["geora", "geora_random_r", "geora_tail_r", "geora_wo_spec", "geora_wo_euc"]

# Written out by hand from the paper (not read from the configs), so that a config that
# drifts fails here.
PAPER = {
    "paper_main_qwen3_8b": dict(
        models=QWEN3_8B, data="deepmath_103k", rewards=["accuracy"], eval="paper_main",
        tasks=MATH + ["humaneval", "mmlu", "ifeval"],
        sweep={"method": ["base", "fullft", "lora", "pissa", "milora", "sparseft", "geora"]}),
    "paper_ablation_qwen3_4b": dict(
        models=QWEN3_4B, data="deepmath_103k", rewards=["accuracy"], eval="paper_ablation",
        tasks=MATH, sweep={"method": ABLATIONS},
        repeats={"aime24": 8, "aime25": 8, "math500": 2, "olymmath": 4}),
    "paper_medical_qwen3_8b": dict(
        # MedQA as trained (generative), the log-likelihood reading beside it
        models=QWEN3_8B, data="medqa", rewards=["choice"], eval="medical",
        tasks=["medqa", "medqa_loglik"],
        sweep={"method": ["base", "lora", "geora"]}),
    "paper_code_qwen3_8b": dict(
        models=QWEN3_8B, data="kodcode_light_rl_10k", rewards=["code"], eval="code",
        tasks=["mbpp", "humaneval"], sweep={"method": ["base", "lora", "geora"]}),
    "paper_lr_qwen3_4b": dict(
        models=QWEN3_4B, data="deepmath_103k", rewards=["accuracy"], eval="paper_math",
        tasks=MATH, sweep={"method": ["lora", "pissa", "milora", "geora"],
                           "train.learning_rate": ["1e-5", "5e-5", "2e-4", "1e-3"]}),
    "paper_rank_rho_qwen3_4b": dict(
        models=QWEN3_4B, data="deepmath_103k", rewards=["accuracy"], eval="paper_math",
        tasks=MATH, sweep={"method.rank": ["8", "16", "32"], "method.rho": ["0.1", "0.2", "0.4"]},
        method="geora"),
    "paper_sizes": dict(
        models=SIZES, data="deepmath_103k", rewards=["accuracy"], eval="paper_math", tasks=MATH,
        sweep={"model": [m.removesuffix("_base") for m in SIZES],
               "method": ["base", "lora", "pissa", "milora", "geora"]}),
}
# The learning rate train=paper gives each method (method.learning_rate_large).
PAPER_LR = {"fullft": 1e-6, "sparseft": 1e-6}
ADAPTER_LR = 5e-5


def compose_all(overrides_list, config_name="config", hydra_cfg=False):
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        return [compose(config_name, overrides=list(o), return_hydra_config=hydra_cfg)
                for o in overrides_list]


def sweep_of(experiment: str) -> dict[str, list[str]]:
    (cfg,) = compose_all([[f"experiment={experiment}"]], hydra_cfg=True)
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    return {key: str(values).split(",") for key, values in params.items()}


def covering_jobs(sweep: dict[str, list[str]]) -> list[dict[str, str]]:
    """Jobs of the sweep that give every value of every swept key at least once: the whole
    product when it is small (<= 10 jobs), else each value with the first of the others
    (Hydra composes a job in ~0.3 s of CPU; the paper_sizes product has 30)."""
    product = [dict(zip(sweep, values)) for values in itertools.product(*sweep.values())]
    if len(product) <= 10:
        return product
    first = {k: v[0] for k, v in sweep.items()}
    jobs = [first] + [{**first, key: value} for key, values in sweep.items() for value in values[1:]]
    assert {k: {j[k] for j in jobs} for k in sweep} == {k: set(v) for k, v in sweep.items()}
    return jobs


def test_every_paper_experiment_is_listed_here():
    shipped = {p.stem for p in (CONF / "experiment").glob("paper_*.yaml")}
    assert shipped == set(PAPER)


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_every_job_of_a_paper_experiment_composes_to_its_table(experiment):
    want = PAPER[experiment]
    sweep = sweep_of(experiment)
    assert sweep == want["sweep"]
    jobs = covering_jobs(sweep)
    configs = compose_all([[f"experiment={experiment}", *(f"{k}={v}" for k, v in job.items())]
                           for job in jobs])
    for job, cfg in zip(jobs, configs):
        where = f"{experiment} {job}"
        assert cfg.model.name in want["models"], where
        assert cfg.model.hub_id == want["models"][cfg.model.name], where
        assert not cfg.model.random_init and cfg.model.dtype == "bfloat16", where
        assert (cfg.data.name, list(cfg.train.rewards)) == (want["data"], want["rewards"]), where
        assert cfg.eval.name == want["eval"] and list(cfg.eval.tasks) == want["tasks"], where
        assert (cfg.train.name, cfg.device, cfg.eval_before) == ("paper", "auto", False), where
        # one chat mode: a pretrained checkpoint has no thinking switch (nothing is passed to
        # its template); one prompt format, the model's, in training and evaluation
        assert cfg.model.family == "base", where
        thinking = None
        assert cfg.model.enable_thinking is thinking and cfg.eval.enable_thinking is thinking, where
        plain = cfg.model.name == "llama3_1_8b_base"   # untrained chat tokens: plain prompt
        assert cfg.model.prompt_format == ("plain" if plain else "chat"), where
        assert cfg.eval.apply_chat_template == cfg.model.prompt_format, where
        length = for_chat_mode(cfg.train.max_completion_length, thinking, "max_completion_length")
        assert length == 4096, where
        # nothing runs model-written code unless the command line opts in
        assert not cfg.train.allow_code_execution and not cfg.eval.allow_code_execution, where
        method = job.get("method", want.get("method"))
        assert cfg.method.name == method, where
        assert cfg.method.trains is (method != "base"), where
        if "train.learning_rate" in job:
            assert cfg.train.learning_rate == float(job["train.learning_rate"]), where
        else:
            assert cfg.train.learning_rate == PAPER_LR.get(method, ADAPTER_LR), where
        for key in ("method.rank", "method.rho"):
            if key in job:
                assert OmegaConf.select(cfg, key) == float(job[key]), where
        repeats = OmegaConf.to_container(cfg.eval.repeats) if cfg.eval.repeats else None
        assert repeats == want.get("repeats"), where
        RunSettings.from_config(cfg)   # every numeric setting of the job is valid


def test_base_row_once_per_model_and_evaluation():
    """A paper sweep has one `base` job per model (no seed or hyperparameter sweep
    multiplies it), and the trained methods do not evaluate before training."""
    for experiment in PAPER:
        sweep = sweep_of(experiment)
        if "base" in sweep.get("method", []):
            assert set(sweep) <= {"method", "model"}, experiment


def test_the_users_own_command_gets_the_papers_recipe():
    """`python run.py -m method=geora,pissa,milora model=qwen3_4b`: each job trains Qwen3-4B
    on DeepMath-103K with train=paper and scores the math benchmarks, on the GPU."""
    for cfg in compose_all([[f"method={m}", "model=qwen3_4b"] for m in ("geora", "pissa", "milora")]):
        assert (cfg.model.hub_id, cfg.data.name, cfg.train.name, cfg.eval.name, cfg.device) == (
            "Qwen/Qwen3-4B-Base", "deepmath_103k", "paper", "paper_math", "auto")
        assert cfg.train.learning_rate == ADAPTER_LR and cfg.eval.enable_thinking is None
    # ... what the command line names still wins, and the micro demo stays the micro demo
    mixed, demo = compose_all([["model=qwen3_4b", "data=micro_math", "eval=micro"], []])
    assert (mixed.data.name, mixed.train.name, mixed.eval.name) == ("micro_math", "paper", "micro")
    assert (demo.model.name, demo.data.name, demo.train.name, demo.eval.name, demo.device) == (
        "micro", "micro_math", "micro", "micro", "cpu")


def test_evaluate_script_config_follows_the_model():
    base, ood, post = compose_all([["model=qwen3_8b"], ["model=qwen3_8b", "eval=paper_ood"],
                                   ["model=qwen3_8b", "checkpoint=post"]], config_name="evaluate")
    assert (base.eval.name, base.eval.enable_thinking, base.device) == ("paper_math", None, "auto")
    assert (ood.eval.name, ood.eval.enable_thinking) == ("paper_ood", None)
    assert (post.model.hub_id, post.eval.enable_thinking) == ("Qwen/Qwen3-8B", False)


def test_paper_main_eval_is_paper_math_plus_paper_ood_with_their_settings():
    """Each task keeps the sampling of its table's config: paper_main sets nothing for all
    tasks, and paper_math / paper_ood set for all of theirs only what the tasks themselves
    already do (so the three agree task by task)."""
    main, math, ood = compose_all([[f"eval={n}"] for n in ("paper_main", "paper_math", "paper_ood")])
    assert list(main.eval.tasks) == list(math.eval.tasks) + list(ood.eval.tasks)
    assert list(main.eval.in_domain) == list(math.eval.tasks)
    assert not main.eval.gen_kwargs and main.eval.repeats is None and main.eval.max_gen_toks is None
    import yaml

    class TaskYaml(yaml.SafeLoader):   # lm-eval's task files tag functions with !function
        pass

    TaskYaml.add_constructor("!function", lambda loader, node: node.value)
    tasks = ROOT / "geora" / "evaluation" / "tasks"

    def generation(name):
        return yaml.load((tasks / name).read_text(), Loader=TaskYaml)["generation_kwargs"]

    sampled = generation("_sampled_math_yaml")
    assert {k: sampled[k] for k in math.eval.gen_kwargs} == dict(math.eval.gen_kwargs)
    for name in ("geora_humaneval.yaml",):
        assert generation(name)["do_sample"] is False and ood.eval.gen_kwargs.do_sample is False
    assert math.eval.max_gen_toks is None and ood.eval.max_gen_toks is None


def test_paper_ablation_eval_is_paper_math_with_other_sample_counts():
    from tests.conftest import eval_group

    ablation, math = (eval_group(n) for n in ("paper_ablation", "paper_math"))
    differ = {k for k in set(ablation) | set(math) if ablation.get(k) != math.get(k)}
    assert differ == {"name", "repeats"}


def test_the_ablation_avg_is_the_mean_of_the_four_math_scores():
    """The paper's Avg column (25.41 for GeoRA) is the plain mean of AIME24, AIME25, MATH500
    and OlymMATH, rounded; the Reward column does not enter it. Four of the five printed
    values agree to within 0.013 (24.5875 is printed 24.60); Tail-r's 23.40 is 0.22 below
    its mean 23.6175 (a misprint of 23.6, as far as the numbers tell)."""
    rows = [r for r in csv.DictReader(open(ROOT / "analysis" / "paper_results.csv"))
            if r["table"] == "ablation"]
    by = {}
    for r in rows:
        by.setdefault(r["method"], {})[r["benchmark"]] = float(r["score"])
    gaps = {m: s["Avg"] - sum(s[b] for b in ("AIME24", "AIME25", "MATH500", "OlymMATH")) / 4
            for m, s in by.items()}
    assert len(gaps) == 5
    assert {m for m, g in gaps.items() if abs(g) > 0.013} == {"Tail-r Init"}
    assert gaps["Tail-r Init"] == pytest.approx(-0.2175, abs=1e-9)
    with_reward = {m: (sum(s[b] for b in ("AIME24", "AIME25", "MATH500", "OlymMATH")) + s["Reward"]) / 5
                   for m, s in by.items()}
    assert all(abs(by[m]["Avg"] - v) > 4 for m, v in with_reward.items())


@pytest.mark.parametrize("experiment", sorted(PAPER))
def test_checkpoint_post_is_one_word_away(experiment):
    """`checkpoint=post` runs every paper experiment on the post-trained checkpoints, Qwen3 in
    non-thinking mode, with the same data, evaluation and sweep."""
    sweep = sweep_of(experiment)
    job = covering_jobs(sweep)[0]
    base, post = compose_all([[f"experiment={experiment}", *extra,
                               *(f"{k}={v}" for k, v in job.items())]
                              for extra in ([], ["checkpoint=post"])])
    assert post.model.name == base.model.name.removesuffix("_base")
    assert post.model.hub_id == POST[post.model.name] and post.model.family == "post"
    thinking = False if post.model.name.startswith("qwen3") else None
    assert post.model.enable_thinking is thinking and post.eval.enable_thinking is thinking
    assert post.model.prompt_format == "chat" and post.eval.apply_chat_template == "chat"
    assert (post.data.name, post.eval.name, post.method.name) == (
        base.data.name, base.eval.name, base.method.name)
    RunSettings.from_config(post)


def test_qwen3_32b_has_no_base_checkpoint_and_says_so():
    """The paper's size study names 32B; Qwen3-32B-Base was never released: checkpoint=base
    refuses it in one line, checkpoint=post (or random weights) runs it."""
    base, post, shapes = compose_all([["model=qwen3_32b"], ["model=qwen3_32b", "checkpoint=post"],
                                      ["model=qwen3_32b", "model.random_init=true"]])
    with pytest.raises(ValueError, match=r"^model 'qwen3_32b_base': Qwen3-32B-Base has no public "
                                         r"release; use checkpoint=post"):
        RunSettings.from_config(base)
    RunSettings.from_config(post)
    RunSettings.from_config(shapes)
    assert "qwen3_32b" not in sweep_of("paper_sizes")["model"]
