"""Build the micro model's tokenizer: byte-level BPE trained on the synthetic tasks, ChatML.

Digits are split one per token before BPE (as in Qwen's tokenizer), so numbers are
spelled digit by digit and arithmetic stays learnable for a tiny model. Special tokens
follow Qwen: `<|endoftext|>` (pad), `<|im_start|>`, `<|im_end|>` (eos).

    python -m geora.data.micro_tokenizer OUT_DIR    # writes tokenizer.json + tokenizer_config.json
"""
from __future__ import annotations

import sys

from geora.data.micro import TASKS, make_split

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
VOCAB_SIZE = 512  # BPE stops earlier when the corpus has nothing left to merge
CORPUS_ITEMS = 4000  # per task

# ChatML. The {% generation %} block marks assistant tokens for
# apply_chat_template(..., return_assistant_tokens_mask=True) (TRL's assistant-only loss).
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' }}"
    "{%- if message['role'] == 'assistant' %}"
    "{% generation %}{{- message['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{{- '\\n' }}"
    "{%- else %}"
    "{{- message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)


def corpus(seed: int = 0) -> list[str]:
    """ChatML-rendered training texts of every task (train split only)."""
    texts = []
    for task in TASKS:
        for rec in make_split(task, "train", CORPUS_ITEMS, seed=seed):
            texts.append(f"<|im_start|>user\n{rec['question']}<|im_end|>\n"
                         f"<|im_start|>assistant\n{rec['r1_solution_1']}<|im_end|>\n")
    return texts


def build_tokenizer(seed: int = 0):
    """A transformers fast tokenizer (PreTrainedTokenizerFast), trained from scratch."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"], model_max_length=512,
        padding_side="left", clean_up_tokenization_spaces=False)
    hf.chat_template = CHAT_TEMPLATE
    return hf


def save_tokenizer(tok, out_dir: str) -> None:
    """Write tokenizer.json + tokenizer_config.json (chat template inside the config).

    The class is recorded as PreTrainedTokenizerFast (an alias of transformers 5's
    TokenizersBackend) and the template kept in tokenizer_config.json, so transformers 4.x
    readers load the same tokenizer.
    """
    import json
    from pathlib import Path

    tok.save_pretrained(out_dir, save_jinja_files=False)
    cfg_path = Path(out_dir) / "tokenizer_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["tokenizer_class"] = "PreTrainedTokenizerFast"
    cfg_path.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


def main(argv: list[str]) -> None:
    if len(argv) != 1:
        raise SystemExit("usage: python -m geora.data.micro_tokenizer OUT_DIR")
    tok = build_tokenizer()
    save_tokenizer(tok, argv[0])
    print(f"tokenizer with {len(tok)} tokens written to {argv[0]}")


if __name__ == "__main__":
    main(sys.argv[1:])
