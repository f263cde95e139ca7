"""Tokenizers shipped inside the package, for runs that must not touch a model hub.

The real Qwen3 tokenizer (151,669 tokens, its chat template with `enable_thinking`) lives in
geora/assets/qwen3_tokenizer/ with tokenizer.json xz-compressed (11.4 MB -> 1.4 MB); the
provenance and license are in that folder's NOTICE and LICENSE. `bundled_tokenizer_dir`
unpacks it once into a cache folder and returns a directory that
`AutoTokenizer.from_pretrained` loads; a random-init Qwen3 then sees exactly the prompts a
real Qwen3 would. In a model config: `model.tokenizer_path: bundled:qwen3`.

    >>> from transformers import AutoTokenizer
    >>> tok = AutoTokenizer.from_pretrained(bundled_tokenizer_dir("qwen3"))
    >>> tok.apply_chat_template([{"role": "user", "content": "1+1?"}], tokenize=False,
    ...                         add_generation_prompt=True, enable_thinking=False)[-29:]
    'assistant\\n<think>\\n\\n</think>\\n\\n'

Cache: $GEORA_CACHE_DIR, else $XDG_CACHE_HOME/geora, else ~/.cache/geora. The folder name
carries a hash of the packed files, so an updated asset unpacks to a new folder. Unpacking
writes a private temporary folder and renames it into place (atomic on POSIX), so two
processes starting at once both end with the same complete folder and never see half of it.
"""
from __future__ import annotations

import hashlib
import lzma
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

ASSETS_DIR = Path(__file__).resolve().parent / "assets"
PREFIX = "bundled:"


@dataclass(frozen=True)
class BundledTokenizer:
    folder: str                    # under geora/assets/
    packed: str                    # the xz-compressed file, unpacked without its ".xz"
    sha256: str                    # of the unpacked file: a corrupt archive fails loudly
    copied: tuple[str, ...]        # small files copied as they are


BUNDLED: dict[str, BundledTokenizer] = {
    "qwen3": BundledTokenizer(
        folder="qwen3_tokenizer", packed="tokenizer.json.xz",
        sha256="aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4",
        copied=("tokenizer_config.json", "LICENSE", "NOTICE")),
}


def cache_root() -> Path:
    if os.environ.get("GEORA_CACHE_DIR"):
        return Path(os.environ["GEORA_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "geora"


def _source_files(spec: BundledTokenizer) -> list[Path]:
    src = ASSETS_DIR / spec.folder
    files = [src / spec.packed, *(src / name for name in spec.copied)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"bundled tokenizer {spec.folder!r} is incomplete: missing "
                                f"{missing} (a package built without geora/assets/*/*?)")
    return files


def _is_complete(folder: Path, spec: BundledTokenizer) -> bool:
    names = [spec.packed[: -len(".xz")], *spec.copied]
    return all((folder / n).is_file() for n in names)


def _unpack_into(folder: Path, spec: BundledTokenizer, files: list[Path]) -> None:
    packed, *copied = files
    target = folder / spec.packed[: -len(".xz")]
    digest = hashlib.sha256()
    with lzma.open(packed, "rb") as src, open(target, "wb") as dst:
        while chunk := src.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    if digest.hexdigest() != spec.sha256:
        raise ValueError(f"{packed}: unpacked sha256 {digest.hexdigest()} != expected "
                         f"{spec.sha256}; the bundled asset is corrupt")
    for f in copied:
        shutil.copyfile(f, folder / f.name)


def bundled_tokenizer_dir(name: str = "qwen3", cache_dir: str | Path | None = None) -> Path:
    """A folder holding the bundled tokenizer `name`, unpacked on first use (see module doc)."""
    if name not in BUNDLED:
        raise ValueError(f"unknown bundled tokenizer {name!r}; choose from {sorted(BUNDLED)}")
    spec = BUNDLED[name]
    files = _source_files(spec)
    key = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()[:16]
    root = Path(cache_dir).expanduser() if cache_dir is not None else cache_root()
    folder = root / f"{spec.folder}-{key}"
    if folder.is_dir():
        if not _is_complete(folder, spec):
            raise RuntimeError(f"tokenizer cache folder {folder} is incomplete (edited by hand?); "
                               "delete it and it will be unpacked again")
        return folder
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=root))
    try:
        _unpack_into(tmp, spec, files)
        try:
            os.rename(tmp, folder)  # atomic; refuses when another process renamed first
        except OSError:
            if not (folder.is_dir() and _is_complete(folder, spec)):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def resolve_tokenizer_path(path: str | Path) -> str:
    """`bundled:NAME` -> the unpacked folder of that bundled tokenizer; any other path as is.

    >>> resolve_tokenizer_path("/models/Qwen3-8B")
    '/models/Qwen3-8B'
    """
    text = str(path)
    if text.startswith(PREFIX):
        return str(bundled_tokenizer_dir(text[len(PREFIX):]))
    return text
