"""The user turn a model sees for a question: one function for training data and evaluation
tasks alike, so that a model is never evaluated on a prompt it was not trained on.

The turn is the question, then a suffix: by default (None) the answer-format instruction of
Qwen's math evaluations, the prompt of AIME / MATH-500 / OlymMATH here and of DeepMath-103K
in training; a data config may give its own (`data.prompt_suffix`, e.g. "" for the micro
tasks, whose model was pretrained on bare questions).

>>> user_text("What is 2 + 3?")
'What is 2 + 3?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'
>>> chat_prompt("Sort the list: 3, 1", suffix="")
[{'role': 'user', 'content': 'Sort the list: 3, 1'}]
"""
from __future__ import annotations

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."
MATH_SUFFIX = "\n" + MATH_INSTRUCTION


def user_text(question: str, suffix: str | None = None) -> str:
    """The question, then `suffix` (None = MATH_SUFFIX, "" = nothing)."""
    return f"{question}{MATH_SUFFIX if suffix is None else suffix}"


def chat_prompt(question: str, suffix: str | None = None,
                system_prompt: str | None = None) -> list[dict]:
    """A chat prompt for TRL: [system?] + the user turn."""
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return turns + [{"role": "user", "content": user_text(question, suffix)}]


# How a model sees a prompt (model.prompt_format): through its tokenizer's chat template, or
# as the bare user text (a pretrained model whose chat tokens are untrained, e.g. Llama-3.1-8B
# base). The evaluation follows the same setting (eval.apply_chat_template).
PROMPT_FORMATS = ("chat", "plain")


def check_prompt_format(value, where: str = "model.prompt_format") -> str:
    """`value` if it is one of PROMPT_FORMATS, else ValueError naming it.

    >>> check_prompt_format("chat")
    'chat'
    """
    if value not in PROMPT_FORMATS:
        raise ValueError(f"{where}={value!r}: choose one of {', '.join(PROMPT_FORMATS)}")
    return value


def prompt_for(question: str, suffix: str | None, system_prompt: str | None,
               prompt_format: str = "chat"):
    """The training prompt in `prompt_format`: chat_prompt's turns, or the user text alone
    (what lm-eval feeds the model for the same item with apply_chat_template=false).

    >>> prompt_for("1+1?", "", None, "plain")
    '1+1?'
    """
    if check_prompt_format(prompt_format, "prompt_format") == "chat":
        return chat_prompt(question, suffix, system_prompt)
    if system_prompt:
        raise ValueError(f"a system prompt ({system_prompt[:40]!r}) needs a chat template; "
                         "model.prompt_format='plain' has none: set data.system_prompt=null")
    return user_text(question, suffix)
