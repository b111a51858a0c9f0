"""The pocket tokenizer: a BPE trained with ``tokenizers`` on the caption corpus, saved in
CLIP's file layout so that ``transformers.CLIPTokenizer.from_pretrained`` loads it.

Layout (as CLIP's): vocab = the 256 byte-level characters, the same 256 with ``</w>``, then one
entry per merge in merge order, then ``<|startoftext|>`` and ``<|endoftext|>``. Encoding a prompt
gives ``[SoT, word sub-tokens..., EoT, EoT padding...]`` (padding uses the EoT id, as in SD 1.x).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

SOT = "<|startoftext|>"
EOT = "<|endoftext|>"
MODEL_MAX_LENGTH = 32


def bytes_to_unicode() -> dict[int, str]:
    """CLIP/GPT-2's reversible byte -> printable unicode character table."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def train_merges(corpus: Iterable[str], vocab_size: int = 1000) -> list[tuple[str, str]]:
    """Learn BPE merges (with ``</w>`` word ends) on lower-cased, whitespace/punctuation-split
    captions. Deterministic for a given corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE(end_of_word_suffix="</w>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, end_of_word_suffix="</w>", show_progress=False
    )
    tok.train_from_iterator(list(corpus), trainer=trainer)
    model = json.loads(tok.to_str())["model"]
    merges = model["merges"]
    out = []
    for m in merges:
        a, b = m if isinstance(m, (list, tuple)) else m.split(" ")
        out.append((a, b))
    return out


def write_clip_files(merges: list[tuple[str, str]], out_dir: str | os.PathLike) -> None:
    """Write vocab.json, merges.txt, special_tokens_map.json and tokenizer_config.json."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    chars = list(bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars] + ["".join(m) for m in merges] + [SOT, EOT]
    vocab: dict[str, int] = {}
    for tok in vocab_list:  # merges may repeat a token already present; keep the first id
        vocab.setdefault(tok, len(vocab))
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (out / "merges.txt").write_text(
        "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges), encoding="utf-8"
    )
    special = {
        "bos_token": SOT,
        "eos_token": EOT,
        "unk_token": EOT,
        "pad_token": EOT,
    }
    (out / "special_tokens_map.json").write_text(json.dumps(special, indent=2))
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "errors": "replace",
        "add_prefix_space": False,
        **special,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2))


def fix_saved_tokenizer(src_dir: str | os.PathLike, dst_dir: str | os.PathLike) -> None:
    """After ``pipe.save_pretrained``: make ``dst_dir`` hold the CLIP files from ``src_dir``
    (vocab.json, merges.txt, clean configs). transformers 5 writes only tokenizer.json and a
    tokenizer_config.json that can leak loading kwargs such as ``local_files_only``."""
    src, dst = Path(src_dir), Path(dst_dir)
    for name in ("vocab.json", "merges.txt", "special_tokens_map.json", "tokenizer_config.json"):
        (dst / name).write_bytes((src / name).read_bytes())


def build(out_dir: str | os.PathLike, seed: int = 0):
    """Train merges on the caption corpus, write the CLIP files, return the loaded tokenizer."""
    from transformers import CLIPTokenizer

    from .world import caption_corpus

    merges = train_merges(caption_corpus(seed=seed))
    write_clip_files(merges, out_dir)
    return CLIPTokenizer.from_pretrained(str(out_dir))


def load(path: str | os.PathLike):
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(str(path))
