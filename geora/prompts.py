"""The prompt a model sees for a question: one function for training data and evaluation
tasks alike, so that a model is never evaluated on a prompt it was not trained on.

A prompt style names how a question becomes the user turn (`data.prompt` in
conf/data/*.yaml; the evaluation tasks name theirs in geora/evaluation/tasks/utils.py):
- "plain": the question alone (the micro model was pretrained on bare questions);
- "math":  the question, a newline, then the \\boxed{} instruction that Qwen's math
  evaluations use (DeepMath-103K for training; AIME, MATH-500, OlymMATH for evaluation).

>>> user_text("What is 2 + 3?", "math")
'What is 2 + 3?\\nPlease reason step by step, and put your final answer within \\\\boxed{}.'
>>> chat_prompt("Sort the list: 3, 1", "plain")
[{'role': 'user', 'content': 'Sort the list: 3, 1'}]
"""
from __future__ import annotations

MATH_INSTRUCTION = "Please reason step by step, and put your final answer within \\boxed{}."

PROMPT_STYLES = {
    "plain": "{question}",
    "math": "{question}\n" + MATH_INSTRUCTION.replace("{", "{{").replace("}", "}}"),
}


def check_style(style: str) -> str:
    if style not in PROMPT_STYLES:
        raise ValueError(f"prompt style {style!r} is unknown; choose one of "
                         f"{sorted(PROMPT_STYLES)}")
    return style


def user_text(question: str, style: str, suffix: str = "") -> str:
    """The user turn for `question` in prompt `style` (one of PROMPT_STYLES), then `suffix`
    (a data set's own extra text, empty for the shipped ones)."""
    return PROMPT_STYLES[check_style(style)].format(question=question) + (suffix or "")


def chat_prompt(question: str, style: str, system_prompt: str | None = None,
                suffix: str = "") -> list[dict]:
    """A chat prompt for TRL: [system?] + the user turn."""
    turns = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return turns + [{"role": "user", "content": user_text(question, style, suffix)}]
