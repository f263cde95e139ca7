"""The powered micro study's settings: the large evaluation (1,000 held-out items per task,
disjoint from training) and the learning-rate grid (the same multiples of every method's
own default, spelled out in conf/experiment/micro_lr_study.yaml).

    .venv/bin/python -m pytest -q tests/test_micro_study.py
"""
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


def make(overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_the_grid_is_the_same_multiples_of_each_methods_default():
    cfg = make(["experiment=micro_lr_study"])
    params = cfg.hydra.sweeper.params
    methods, scales = params.method.split(","), params.lr_scale.split(",")
    assert len(methods) == 5 and len(scales) >= 4 and len(params.seed.split(",")) >= 3
    for method in methods:
        default = make([f"method={method}"]).method.learning_rate   # conf/method/<method>
        for scale in scales:
            factor = float(scale.removeprefix("x").replace("_", "."))
            run = make(["experiment=micro_lr_study", f"method={method}", f"lr_scale={scale}"])
            assert run.train.learning_rate == pytest.approx(factor * default), (method, scale)
            assert run.eval.name == "micro_large" and run.eval_before is False


def test_default_run_keeps_the_small_evaluation():
    assert make([]).eval.name == "micro"


@pytest.mark.parametrize("task", ["math", "reverse", "sort"])
def test_large_evaluation_has_1000_held_out_items_per_task(task):
    from geora.data.micro import make_split
    from geora.evaluation.catalog import task_info

    cfg = make(["eval=micro_large"])
    name = f"micro_{task}_1k"
    assert name in cfg.eval.tasks
    spec = OmegaConf.load(ROOT / "geora" / "evaluation" / "tasks" / f"{task_info(name).lm_task}.yaml")
    n = spec.dataset_kwargs.n
    assert n >= 1000 and spec.dataset_kwargs.split == "test"
    test = {r["question"] for r in make_split(task, "test", n, spec.dataset_kwargs.seed)}
    train = {r["question"] for r in make_split(task, "train", 2000, 0)}
    assert len(test) == n and not test & train
    # standard error of a proportion at its worst (p = 0.5), in points
    assert 100 * (0.25 / n) ** 0.5 <= 1.6


def test_large_evaluation_differs_from_the_small_one_only_in_its_items():
    from tests.conftest import eval_group

    small = OmegaConf.to_container(eval_group("micro"), resolve=True)
    large = OmegaConf.to_container(eval_group("micro_large"), resolve=True)
    assert large.keys() == small.keys()
    differ = sorted(k for k in small if small[k] != large[k])
    assert differ == ["in_domain", "name", "tasks"], differ
    assert [t.removesuffix("_1k") for t in large["tasks"]] == small["tasks"]
