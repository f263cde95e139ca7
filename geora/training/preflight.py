"""Checks of the training data against the run, before the first step: how many times
max_steps goes over the data (a warning), and whether every prompt leaves room for its
completion in the model's context (an error naming the prompt).

>>> warn_many_epochs(max_steps=500, prompts_per_step=8, n_prompts=100, data="tiny")
40.0
"""
from __future__ import annotations

import logging
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from geora.training.settings import RunSettings

log = logging.getLogger(__name__)

# TRL renders each prompt through the chat template and does not truncate it (1.16 has no
# max_prompt_length): a prompt that leaves no room for the completion generates past the
# model's context, which neither TRL nor transformers refuses.


def warn_many_epochs(*, max_steps: int, prompts_per_step: int, n_prompts: int,
                     data: str) -> float:
    """Epochs the run makes over its `n_prompts` training prompts; one warning line when
    more than one (max_steps set far beyond the data is otherwise silent)."""
    total = max_steps * prompts_per_step
    epochs = total / max(n_prompts, 1)
    if epochs > 1:
        log.warning("train.max_steps=%s x train.prompts_per_step=%s = %d prompts go over the "
                    "%d training prompts of data %r %.1f times (epochs)", max_steps,
                    prompts_per_step, total, n_prompts, data, epochs)
    return epochs


def _render(tokenizer, prompt, template_kwargs: dict, tokenize: bool):
    if isinstance(prompt, str):
        return tokenizer(prompt)["input_ids"] if tokenize else prompt
    out = tokenizer.apply_chat_template(prompt, tokenize=tokenize, add_generation_prompt=True,
                                        **template_kwargs)
    if tokenize and hasattr(out, "keys"):   # a BatchEncoding in recent transformers
        out = out["input_ids"]
    return out


def check_prompt_lengths(prompts, tokenizer, context: int | None, max_completion: int,
                         template_kwargs: dict, where: str) -> int:
    """The longest prompt in tokens (as TRL renders it); ValueError naming the first prompt
    whose tokens plus `max_completion` exceed `context` (None: the model states none).

    A prompt is tokenized only when a cheap bound says it could be too long: every token
    of a byte-level or byte-fallback tokenizer covers at least one UTF-8 byte, so the
    rendered text's byte count bounds its tokens."""
    if context is None:
        return 0
    room = int(context) - int(max_completion)
    longest = 0
    for i, prompt in enumerate(prompts):
        text = _render(tokenizer, prompt, template_kwargs, tokenize=False)
        if len(text.encode("utf-8")) <= room:
            continue
        n = len(_render(tokenizer, prompt, template_kwargs, tokenize=True))
        longest = max(longest, n)
        if n > room:
            raise ValueError(
                f"{where}: prompt {i} has {n} tokens, and with train.max_completion_length="
                f"{max_completion} it does not fit the model's context of {context} tokens "
                f"(model max_position_embeddings); drop or shorten such prompts, or lower "
                f"train.max_completion_length")
    return longest


def check_training_prompts(settings: RunSettings, model, tokenizer, data) -> int:
    """check_prompt_lengths for a run: its data's prompts in the model's chat mode, against
    the model's max_position_embeddings and train.max_completion_length."""
    from geora.models import chat_template_kwargs, for_chat_mode

    thinking = settings.model.enable_thinking
    completion = for_chat_mode(settings.train.max_completion_length, thinking,
                               "train.max_completion_length")
    return check_prompt_lengths(data["prompt"], tokenizer,
                                getattr(model.config, "max_position_embeddings", None),
                                int(completion), chat_template_kwargs(thinking),
                                f"data {settings.data.name!r}")


def check_method_fits_model(settings: RunSettings) -> None:
    """The method's target modules and rank against the model's matrix shapes, read from its
    config alone (geora.models.meta_model: no weights): a target_modules that matches
    nothing, or a rank above a target's min(out, in), is named before the load, which for a
    real model takes minutes. Skipped where the config is not on this machine yet (an
    uncached hub model: the same check runs when the method is prepared)."""
    from geora import surgery
    from geora.methods import DEFAULT_RANK, get_method
    from geora.models import meta_model

    method = settings.method
    if not settings.trains:   # the `base` job prepares nothing
        return
    spec = get_method(method.name)
    if spec.kind.name == "full":   # FullFT: every weight, no rank
        return
    model = meta_model(settings.model)
    if model is None:
        return
    try:
        names = surgery.resolve_targets(model, method.target_modules or "all-linear")
    except ValueError as e:
        raise ValueError(f"method.{e} (model {settings.model.name!r})") from None
    if "rank" not in spec.uses:
        return
    rank = DEFAULT_RANK if method.rank is None else method.rank
    for name in names:
        shape = tuple(model.get_submodule(name).weight.shape)
        if rank > min(shape):
            raise ValueError(f"method.rank={rank}: module {name!r} of model "
                             f"{settings.model.name!r} has shape {shape}, which holds at most "
                             f"rank {min(shape)}; choose method.rank <= {min(shape)} or "
                             f"narrow method.target_modules")

