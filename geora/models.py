"""Load a causal LM and its tokenizer from a `model` config (conf/model/*.yaml).

Sources, in order: `local_path` (a Hugging Face model directory on disk), `bundled` (a
directory under geora/assets/, e.g. the micro model), `random_init` (build the
architecture in `arch` with random weights: smoke tests and benchmarks, no download), then
`hub_id` (the Hugging Face cache first; the network only if the hub answers within seconds).
A hub model that cannot be reached stops at once with one message naming the id and the
local-path override, instead of huggingface_hub's minute of retries.
"""
from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any, Mapping

import torch

from geora.config.sections import ModelConfig
from geora.distributed import local_rank

ASSETS_DIR = Path(__file__).resolve().parent / "assets"

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16,
          "bf16": torch.bfloat16, "float16": torch.float16, "fp16": torch.float16}


class HubUnavailableError(RuntimeError):
    """A model or data set on the hub cannot be reached and is not cached locally."""


def resolve_device(name: str) -> str:
    """"auto" -> cuda if available else cpu; under accelerate/torchrun, cuda -> this process's GPU."""
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device={name!r} but torch sees no CUDA device; use device=cpu or auto")
    if name == "cuda" and local_rank() is not None:
        name = f"cuda:{local_rank()}"
    return name


def torch_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise ValueError(f"unknown dtype {name!r}; choose one of {sorted(DTYPES)} or auto "
                         f"(the checkpoint's own)")
    return DTYPES[name]


def checkpoint_dtype(model_dir: str | Path | None) -> str:
    """The dtype a checkpoint was saved in (config.json's `dtype`, or `torch_dtype` as older
    transformers wrote it); float32 where it names none, or for a random_init model."""
    import json

    if model_dir is None:
        return "float32"
    config = json.loads((Path(model_dir) / "config.json").read_text())
    name = str(config.get("dtype") or config.get("torch_dtype") or "float32")
    return name if name in DTYPES else "float32"


def dtype_name(cfg: ModelConfig | Mapping[str, Any]) -> str:
    """model.dtype, with `auto` read from the checkpoint (model=hf)."""
    cfg = ModelConfig.of(cfg)
    return checkpoint_dtype(resolve_model_dir(cfg)) if cfg.dtype == "auto" else cfg.dtype


# Below this many parameters one CPU thread is fastest (the micro model's matrices are too
# small to split: 3 micro GRPO steps took 5.3 s on 1 thread, 30 s on 2 of a busy 2-core
# machine); above it, a model is slow on one thread (a 135M model: 66 s per micro step).
ONE_THREAD_MAX_PARAMS = 20_000_000


def cpu_threads_for(model, setting: Any) -> int | None:
    """torch threads for a CPU run: `cpu_threads` as given, or for `auto` one thread for a
    small model and every core this process may use for a larger one."""
    if setting in (None, "auto"):
        if setting is None:
            return None
        params = sum(p.numel() for p in model.parameters())
        if params < ONE_THREAD_MAX_PARAMS:
            return 1
        # the cores this process may use (Linux); every core elsewhere (macOS has no affinity)
        return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else os.cpu_count() or 1
    return int(setting)


def hub_reachable(host: str = "huggingface.co", timeout: float = 3.0) -> bool:
    """True when the hub's host resolves and accepts a TCP connection within `timeout` s."""
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def cached_snapshot(repo_id: str, *, repo_type: str = "model",
                    revision: str | None = None) -> str | None:
    """The local Hugging Face cache's folder of `repo_id`, or None where it is not cached
    (or cached incompletely). Never touches the network."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import LocalEntryNotFoundError

    try:
        return snapshot_download(repo_id, repo_type=repo_type, revision=revision,
                                 local_files_only=True)
    except LocalEntryNotFoundError:
        return None


def resolve_hub_snapshot(repo_id: str, *, repo_type: str = "model", override_key: str,
                         revision: str | None = None) -> str:
    """Local directory of `repo_id`: the HF cache if it holds it, else a download if the hub
    is reachable, else HubUnavailableError naming the id and the config key to override."""
    from huggingface_hub import snapshot_download

    cached = cached_snapshot(repo_id, repo_type=repo_type, revision=revision)
    if cached is not None:
        return cached
    if not hub_reachable():   # not cached: the network, if it answers
        raise HubUnavailableError(
            f"{repo_type} {repo_id!r} is not in the local Hugging Face cache and the hub "
            f"cannot be reached from this machine. Download it elsewhere and point "
            f"{override_key}=/path/to/local/dir at it.")
    return snapshot_download(repo_id, repo_type=repo_type, revision=revision)


def resolve_model_dir(cfg: ModelConfig | Mapping[str, Any]) -> str | None:
    """The directory to load weights from, or None for `random_init`."""
    cfg = ModelConfig.of(cfg)
    name = cfg.name
    if cfg.local_path:
        path = Path(cfg.local_path).expanduser()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(
                f"model.local_path={str(path)!r} (model {name!r}) is not a Hugging Face model "
                f"directory: no config.json there")
        return str(path)
    if cfg.bundled:
        path = ASSETS_DIR / cfg.bundled
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"bundled model {cfg.bundled!r} missing at {path}")
        return str(path)
    if cfg.random_init:
        if not cfg.arch:
            raise ValueError(f"model.random_init=true (model {name!r}) needs model.arch, the "
                             f"architecture to build")
        return None
    if not cfg.hub_id:
        raise ValueError(f"model {name!r} names no local_path, bundled asset or hub_id")
    return resolve_hub_snapshot(cfg.hub_id, override_key="model.local_path",
                                revision=cfg.revision)


def meta_model(cfg: ModelConfig | Mapping[str, Any]):
    """The model's architecture on the meta device (shapes, no weights, nothing read but its
    config.json), or None when that config is not on this machine yet (a hub model not in
    the cache). For checks before the load: which modules a method targets, their shapes."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = ModelConfig.of(cfg)
    if cfg.random_init and not cfg.local_path:
        config = AutoConfig.for_model(**dict(cfg.arch or {}))
    else:
        if cfg.local_path or cfg.bundled:
            model_dir = resolve_model_dir(cfg)
        else:
            model_dir = cached_snapshot(str(cfg.hub_id), revision=cfg.revision)
            if model_dir is None:
                return None
        config = AutoConfig.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config, trust_remote_code=cfg.trust_remote_code)


def load_tokenizer(cfg: ModelConfig | Mapping[str, Any]):
    """The tokenizer of the model directory; for random_init, `tokenizer_path` (a folder, or
    `bundled:qwen3`, the real Qwen3 tokenizer shipped in the package) or the micro one."""
    from transformers import AutoTokenizer

    from geora.tokenizer_assets import resolve_tokenizer_path

    cfg = ModelConfig.of(cfg)
    model_dir = resolve_model_dir(cfg)
    if model_dir is None:
        model_dir = resolve_tokenizer_path(cfg.tokenizer_path or ASSETS_DIR / "micro")
    tok = AutoTokenizer.from_pretrained(model_dir, trust_remote_code=cfg.trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_model(cfg: ModelConfig | Mapping[str, Any], *, device: str | torch.device = "cpu",
               dtype: str | torch.dtype | None = None):
    """(model, tokenizer) for a model config (a ModelConfig, or a DictConfig / dict checked
    into one); `dtype` replaces model.dtype (the pipeline loads fp32 master weights for
    full fine-tuning)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = ModelConfig.of(cfg)
    if not isinstance(dtype, torch.dtype):
        dtype = torch_dtype(str(dtype) if dtype and dtype != "auto" else dtype_name(cfg))
    model_dir = resolve_model_dir(cfg)
    tokenizer = load_tokenizer(cfg)
    if model_dir is None:
        arch = dict(cfg.arch)
        if len(tokenizer) > int(arch.get("vocab_size", 0)):
            raise ValueError(
                f"model.arch.vocab_size={arch.get('vocab_size')} (model {cfg.name!r}) is "
                f"smaller than its tokenizer ({len(tokenizer)} tokens, model.tokenizer_path="
                f"{cfg.tokenizer_path!r}): token ids would fall outside the embedding")
        config = AutoConfig.for_model(**arch)
        torch.manual_seed(cfg.init_seed)
        model = AutoModelForCausalLM.from_config(config, dtype=dtype)
    else:
        model = AutoModelForCausalLM.from_pretrained(
            model_dir, dtype=dtype, trust_remote_code=cfg.trust_remote_code)
    add_stop_tokens(model, tokenizer, cfg.stop_tokens, cfg.name)
    return model.to(device), tokenizer


def add_stop_tokens(model, tokenizer, tokens, name: str = "?") -> None:
    """Make `tokens` end generation: they join model.generation_config.eos_token_id, which
    TRL's rollouts (GRPOTrainer.eos_token_ids) and HF generate in the evaluation stop on.
    A pretrained Qwen checkpoint's eos is <|endoftext|>; prompted through ChatML it closes its
    answer with <|im_end|> (model.stop_tokens), and without it would write on to the length
    limit, every completion truncated."""
    ids = []
    for token in tokens:
        tid = tokenizer.convert_tokens_to_ids(token)
        if tid is None or tid == tokenizer.unk_token_id or tokenizer.convert_ids_to_tokens(tid) != token:
            raise ValueError(f"model.stop_tokens: {token!r} (model {name!r}) is not a token of its "
                             f"tokenizer")
        ids.append(int(tid))
    if not ids:
        return
    current = model.generation_config.eos_token_id
    current = [] if current is None else [current] if isinstance(current, int) else list(current)
    model.generation_config.eos_token_id = current + [i for i in ids if i not in current]


# ------------------------------------------------------------------------ chat mode
# One setting, model.enable_thinking, decides the chat mode of the training rollouts (TRL's
# chat_template_kwargs), the rewards (they read only what follows </think>) and the
# evaluation (eval.enable_thinking interpolates it). null: the template has no such switch.
CHAT_MODES = ("thinking", "no_thinking")


def chat_template_kwargs(enable_thinking: bool | None) -> dict[str, Any]:
    """The keyword arguments of apply_chat_template for a chat mode (model.enable_thinking;
    None: the template has no switch, nothing is passed).

    >>> chat_template_kwargs(False), chat_template_kwargs(None)
    ({'enable_thinking': False}, {})
    """
    return {} if enable_thinking is None else {"enable_thinking": bool(enable_thinking)}


def for_chat_mode(value: Any, enable_thinking: bool | None, key: str) -> Any:
    """A setting given once or per chat mode: `value`, or value["thinking" | "no_thinking"]
    for a mapping with those two keys (a template without the switch is "no_thinking").

    >>> for_chat_mode({"thinking": 16384, "no_thinking": 4096}, False, "train.max_completion_length")
    4096
    >>> for_chat_mode(64, True, "train.max_completion_length")
    64
    """
    if not isinstance(value, Mapping):
        return value
    if set(value) != set(CHAT_MODES):
        raise ValueError(f"{key}={dict(value)!r}: give one value or one per chat mode "
                         f"({', '.join(CHAT_MODES)})")
    return value["thinking" if enable_thinking else "no_thinking"]


# A 2-layer Qwen3 with every real module name (q_proj ... down_proj): for examples,
# doctests and smoke checks (the tests build the same one in tests/conftest.py).
TINY_QWEN3 = dict(model_type="qwen3", vocab_size=512, hidden_size=64, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=2, intermediate_size=128,
                  head_dim=16, max_position_embeddings=256, tie_word_embeddings=True)


def tiny_model(seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A tiny random Qwen3 causal LM (~0.1M parameters), built in memory, never downloaded.

    >>> model = tiny_model()
    >>> type(model).__name__, sum(p.numel() for p in model.parameters())
    ('Qwen3ForCausalLM', 106880)
    """
    from transformers import AutoConfig, AutoModelForCausalLM

    torch.manual_seed(seed)
    config = AutoConfig.for_model(**{**TINY_QWEN3, **overrides})
    return AutoModelForCausalLM.from_config(config, dtype=dtype).eval()
