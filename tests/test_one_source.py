"""Facts that several parts of the code share have one source: the prompt a question gets in
training and in evaluation, the micro architecture, the micro scorer, the default rank and
rho, the process rank, and the layer rules that keep geora's surgery off baselines/.

    .venv/bin/python -m pytest -q tests/test_one_source.py
"""
from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import pytest
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
MICRO = ROOT / "geora" / "assets" / "micro"
FIXTURES = Path(__file__).parent / "fixtures" / "eval"
pytestmark = pytest.mark.filterwarnings("ignore:.*is validated against ConfigStore schema")


def _script(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _data_cfg(name, **kw):
    """conf/data/<name>.yaml as a run reads it (composed with its schema), `kw` replaced."""
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        data = compose("config", overrides=[f"data={name}"]).data
    return OmegaConf.merge(data, kw)


def _training_prompt(tok, data_cfg, question, answer, tmp_path, prompt_format="chat"):
    """What TRL renders for `question` from a data config (its prompt settings unchanged):
    the chat template over the turns, or (prompt_format="plain") the prompt string as is."""
    from geora.data.loaders import load_data

    path = tmp_path / f"{data_cfg.name}.jsonl"
    path.write_text(json.dumps({"question": question, "final_answer": answer}) + "\n")
    cfg = OmegaConf.merge(data_cfg, {"source": "local", "local_path": str(path),
                                     "test_size": 0, "train_size": None})
    row = load_data(cfg, prompt_format)[0][0]
    if prompt_format == "plain":
        assert isinstance(row["prompt"], str)   # TRL's standard (non-chat) format
        return row["prompt"]
    return tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=False)


def _evaluation_prompts(model, tok, task, tmp_path, **settings):
    """The strings lm-eval fed the model (chat template applied) for `task`, via HFLM."""
    from geora.evaluation import evaluate_in_memory
    from geora.evaluation.catalog import task_info

    cfg = dict(name="prompts", tasks=[task], limit=2, max_gen_toks=2, batch_size=2,
               repeats=1, log_samples=True, gen_kwargs={"do_sample": False},
               **{"apply_chat_template": True, **settings})
    evaluate_in_memory(model, tok, cfg, tmp_path / task)
    rows = (tmp_path / task / f"samples_{task_info(task).lm_task}.jsonl").read_text()
    return [(json.loads(r)["doc"], json.loads(r)["prompt"]) for r in rows.splitlines()]


@pytest.fixture(scope="module")
def micro():
    from transformers import AutoTokenizer

    from geora.models import tiny_model

    return tiny_model(), AutoTokenizer.from_pretrained(MICRO)   # the micro tokenizer


def test_training_and_evaluation_prompts_are_the_same_string(micro, tmp_path):
    model, tok = micro
    cases = [("micro_math", "micro_math", "question", "final_answer", {}),
             ("math500", "deepmath_103k", "problem", "answer", {"data_dir": str(FIXTURES)})]
    first = {}
    for task, data, q_key, a_key, settings in cases:
        evaluated = _evaluation_prompts(model, tok, task, tmp_path, **settings)
        first[task] = evaluated[0][1]
        assert evaluated
        for doc, prompt in evaluated:
            trained = _training_prompt(tok, _data_cfg(data), doc[q_key], doc[a_key], tmp_path)
            assert trained == prompt, (task, trained, prompt)
            assert doc[q_key] in prompt and prompt.startswith("<|im_start|>user\n")
        # ... and the comparison can fail: another instruction gives another string
        doc, prompt = evaluated[0]
        other = _training_prompt(tok, _data_cfg(data, prompt_suffix=" Be brief."),
                                 doc[q_key], doc[a_key], tmp_path)
        assert other != prompt
    # DeepMath's prompt carries the \boxed{} instruction, the micro one does not
    assert "\\boxed{}" in first["math500"] and "\\boxed{}" not in first["micro_math"]


def test_plain_prompts_are_the_same_string_in_training_and_evaluation(micro, tmp_path):
    """model.prompt_format=plain (a pretrained model with untrained chat tokens, e.g.
    Llama-3.1-8B base): training gets the bare user text, and lm-eval with
    apply_chat_template=false (eval follows model.prompt_format) feeds the same string."""
    model, tok = micro
    evaluated = _evaluation_prompts(model, tok, "math500", tmp_path, data_dir=str(FIXTURES),
                                    apply_chat_template="plain")
    assert evaluated
    for doc, prompt in evaluated:
        trained = _training_prompt(tok, _data_cfg("deepmath_103k"), doc["problem"],
                                   doc["answer"], tmp_path, prompt_format="plain")
        assert trained == prompt and "<|im_start|>" not in prompt, (trained, prompt)
        chat = _training_prompt(tok, _data_cfg("deepmath_103k"), doc["problem"], doc["answer"],
                                tmp_path)
        assert chat != prompt and trained in chat   # the comparison can fail
    with pytest.raises(ValueError, match="needs a chat template; model.prompt_format='plain'"):
        _training_prompt(tok, _data_cfg("deepmath_103k", system_prompt="Be brief."), "1+1?",
                         "2", tmp_path, prompt_format="plain")


def test_the_math_instruction_is_written_once():
    """Only geora/prompts.py spells the instruction; configs and tasks refer to it."""
    from geora.prompts import MATH_INSTRUCTION

    assert _data_cfg("deepmath_103k").prompt_suffix is None       # = the math instruction
    assert _data_cfg("micro_math").prompt_suffix == ""
    holders = [p.relative_to(ROOT).as_posix()
               for folder in ("geora", "conf", "scripts", "baselines", "analysis")
               for p in (ROOT / folder).rglob("*") if p.suffix in (".py", ".yaml", "")
               and p.is_file() and "reason step by step, and put your final answer"
               in p.read_text(errors="ignore")]
    assert holders == ["geora/prompts.py"], holders
    assert "reason step by step" in MATH_INSTRUCTION


def test_micro_architecture_is_the_bundled_models():
    """conf/model/micro.yaml's arch (which scripts/pretrain_micro.py builds) describes the
    shipped model exactly."""
    arch = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "model" / "micro.yaml").arch)
    shipped = json.loads((MICRO / "config.json").read_text())
    for key, value in arch.items():
        got = shipped["rope_parameters"]["rope_theta"] if key == "rope_theta" else shipped[key]
        assert got == value, key
    pretrain = _script("pretrain_micro")
    assert pretrain.micro_arch() == arch
    from geora.data.micro_tokenizer import build_tokenizer

    built = pretrain.build_model(0, build_tokenizer()).config
    assert all(getattr(built, k) == shipped[k] for k in arch if k != "rope_theta")


@pytest.mark.parametrize("task,gold,completion,right", [
    ("reverse", "3, 2, 1", "\\boxed{3, 2, 1}", True),
    ("reverse", "3, 2, 1 ", "\\boxed{ 3, 2, 1 }", True),     # the two scorers once differed here
    ("sort", "1, 2, 3", "\\boxed{1,2,3}", False),
    ("sort", "1, 2, 3", "no box", False),
    ("math", "12", "so \\boxed{12}", True),
    ("math", "12", "so \\boxed{12.0}", True),
    ("math", "12", "so \\boxed{13}", False),
])
def test_one_micro_scorer(task, gold, completion, right):
    from geora.data.micro import is_correct_micro
    from geora.evaluation.tasks import utils

    assert is_correct_micro(task, gold, completion) is right
    assert _script("pretrain_micro").correct(task, gold, completion) is right
    score = utils.process_micro({"task": task, "final_answer": gold}, [completion])
    assert score["avg_at_k"] == float(right)


def test_default_rank_and_rho():
    from geora import methods, preprocess

    from geora.config import MethodConfig

    common = MethodConfig(name="any")
    assert (common.rank, common.rho) == (methods.DEFAULT_RANK, methods.DEFAULT_RHO)
    help_text = preprocess.build_parser().format_help()
    assert f"default {methods.DEFAULT_RANK}" in help_text
    assert list(preprocess.METHOD_NAMES) == methods.available_methods()


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
    return names


def test_layer_rules():
    """surgery and persistence import nothing from baselines; baselines import only layer 1
    of geora; the launchers' environment is read in geora.distributed alone."""
    for name in ("surgery", "persistence"):
        assert not {m for m in _imports(ROOT / "geora" / f"{name}.py")
                    if m.split(".")[0] == "baselines"}, name
    for path in (ROOT / "baselines").glob("*.py"):
        geora = {m for m in _imports(path) if m.split(".")[0] == "geora"}
        assert geora <= {"geora", "geora.linalg", "geora.init"}, path.name
    readers = [p.relative_to(ROOT).as_posix() for p in (ROOT / "geora").rglob("*.py")
               if any(v in p.read_text() for v in ('"RANK"', '"WORLD_SIZE"', '"LOCAL_RANK"'))]
    assert readers == ["geora/distributed.py"]
