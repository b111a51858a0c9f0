"""Write a CLIP-layout BPE tokenizer (vocab.json + merges.txt) from a word list.

Used to build tiny test pipelines without a hub. Every listed word becomes one token
(``word</w>``) unless it is listed in ``split``, where it is spelled by two sub-tokens, so
tests can exercise sub-word splits. Characters outside the words fall back to single-character
tokens, as in CLIP's byte-level alphabet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path

SOT, EOT = "<|startoftext|>", "<|endoftext|>"


def _bpe(symbols: list[str], ranks: dict[tuple[str, str], int]) -> list[str]:
    """Apply ranked merges to a symbol list exactly as BPE does (lowest rank first)."""
    symbols = list(symbols)
    while len(symbols) > 1:
        pairs = [(ranks.get((a, b)), i) for i, (a, b) in enumerate(zip(symbols, symbols[1:]))]
        ranked = [(r, i) for r, i in pairs if r is not None]
        if not ranked:
            break
        _, i = min(ranked)
        symbols[i : i + 2] = [symbols[i] + symbols[i + 1]]
    return symbols


def _spell_as_one(symbols: list[str], merges: list[tuple[str, str]], ranks: dict[tuple[str, str], int]) -> None:
    """Append merges until BPE turns ``symbols`` into a single token.

    Earlier words' merges apply first (they rank higher), so we merge whatever pieces BPE leaves,
    left to right, re-running BPE after each; appended merges cannot change earlier words.
    """
    pieces = _bpe(symbols, ranks)
    while len(pieces) > 1:
        pair = (pieces[0], pieces[1])
        ranks[pair] = len(merges)
        merges.append(pair)
        pieces = _bpe(symbols, ranks)


def write_clip_tokenizer(
    folder: str | os.PathLike[str],
    words: Iterable[str],
    *,
    split: Mapping[str, str] | None = None,
    pad_token: str = EOT,
    model_max_length: int = 16,
) -> Path:
    """Write ``vocab.json``, ``merges.txt`` and ``tokenizer_config.json`` into ``folder``.

    Args:
        words: lower-case words that become single tokens.
        split: ``{word: prefix}``: the word is spelled ``prefix`` + ``rest</w>`` (two tokens).
        pad_token: ``"<|endoftext|>"`` (SD1.x layout) or ``"!"`` (SD2.x layout).
    """
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    alphabet = [chr(c) for c in range(33, 127)]
    vocab: dict[str, int] = {}
    for token in alphabet + [a + "</w>" for a in alphabet]:
        vocab.setdefault(token, len(vocab))
    merges: list[tuple[str, str]] = []
    ranks: dict[tuple[str, str], int] = {}
    for word in words:
        _spell_as_one(list(word[:-1]) + [word[-1] + "</w>"], merges, ranks)
    for word, prefix in (split or {}).items():
        rest = word[len(prefix):]
        assert word.startswith(prefix) and rest, (word, prefix)
        _spell_as_one(list(prefix), merges, ranks)  # prefix: a word-internal token (no </w>)
        _spell_as_one(list(rest[:-1]) + [rest[-1] + "</w>"], merges, ranks)
    for a, b in merges:
        vocab.setdefault(a + b, len(vocab))
    vocab[SOT] = len(vocab)
    vocab[EOT] = len(vocab)
    return write_clip_files(folder, vocab, merges, pad_token=pad_token, model_max_length=model_max_length)


def write_clip_files(
    folder: Path, vocab: Mapping[str, int], merges: Iterable[tuple[str, str]], *, pad_token: str, model_max_length: int
) -> Path:
    """Write a CLIP tokenizer folder (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) that
    ``transformers.CLIPTokenizer.from_pretrained`` reads: SoT/EoT as SD's, ``pad_token`` as given."""
    (folder / "vocab.json").write_text(json.dumps(dict(vocab), ensure_ascii=False), encoding="utf-8")
    merges_text = "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n"
    (folder / "merges.txt").write_text(merges_text, encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": SOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2))
    return folder
