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


def _merges_for(word: str) -> list[tuple[str, str]]:
    """Left-to-right merges spelling ``word`` as one ``</w>``-terminated token."""
    symbols = list(word[:-1]) + [word[-1] + "</w>"]
    merges = []
    current = symbols[0]
    for nxt in symbols[1:]:
        merges.append((current, nxt))
        current = current + nxt
    return merges


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

    def add_merges(pairs: list[tuple[str, str]]) -> None:
        for a, b in pairs:
            if (a, b) not in merges:
                merges.append((a, b))
                vocab.setdefault(a + b, len(vocab))

    for word in words:
        add_merges(_merges_for(word))
    for word, prefix in (split or {}).items():
        rest = word[len(prefix):]
        assert word.startswith(prefix) and rest, (word, prefix)
        if len(prefix) > 1:  # prefix as a word-internal token (no </w>)
            pairs = [(prefix[0], prefix[1])]
            for ch in prefix[2:]:
                pairs.append((pairs[-1][0] + pairs[-1][1], ch))
            add_merges(pairs)
        add_merges(_merges_for(rest))
    vocab[SOT] = len(vocab)
    vocab[EOT] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in merges) + "\n")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": model_max_length,
        "bos_token": SOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "pad_token": pad_token,
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder
