"""Stable Diffusion's real CLIP tokenizers, rebuilt offline from OpenAI's BPE merges.

No model hub reaches our machines, but the tokenizer of every SD checkpoint follows from one file:
OpenAI's ``bpe_simple_vocab_16e6.txt.gz``, which ships inside the MIT-licensed ``clip-anytorch``
wheel (2.6.0, pure Python, 1.4 MB). That wheel declares torchvision as a dependency (which would
pull a CUDA torch), so it is never installed: it is *downloaded alone* into a cache folder and the
merges file is read out of the zip::

    python -m pip download clip-anytorch==2.6.0 --no-deps -d ~/.cache/circuits/wheels

(``python -m circuits.models.sd_tokenizer`` runs exactly that; ``.ci/run`` does it before the tests.)

The 49,408-entry vocabulary is derived, not stored, exactly as CLIP's ``SimpleTokenizer`` builds
it: the 256 byte-level symbols (GPT-2's byte-to-unicode table), the same 256 with ``</w>``, one
token per merge (lines 1..48,894 of the file; line 0 is a header), then ``<|startoftext|>`` (49406)
and ``<|endoftext|>`` (49407). :func:`write_sd_tokenizer` writes ``vocab.json`` + ``merges.txt``
that ``transformers.CLIPTokenizer`` loads:

- SD1.x, and SDXL's first tokenizer: pad with the EoT id (``pad_token="<|endoftext|>"``);
- SD2.x, and SDXL's second (OpenCLIP) tokenizer: the same BPE, padding with ``!`` (id 0).

Check values (OpenAI's tokenizer): "a photo of a cat" -> 49406 320 1125 539 320 2368 49407.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import os
import subprocess
import sys
import zipfile
from functools import lru_cache
from pathlib import Path

from circuits.errors import ModelLoadError
from circuits.models.tiny_tokenizer import EOT, SOT, write_clip_files

WHEEL_REQUIREMENT = "clip-anytorch==2.6.0"
WHEEL_NAME = "clip_anytorch-2.6.0-py3-none-any.whl"
MERGES_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
#: sha256 of the decompressed merges file: a different file would give a different tokenizer silently
MERGES_SHA256 = "67603cfda2e032ad77b5f8808af37789d590db664b26df8705d2bf8b3c553fc8"
#: merges CLIP uses: 49,408 = 2 * 256 byte symbols + 48,894 merges + SoT + EoT
N_MERGES = 49152 - 256 - 2
VOCAB_SIZE = 49408
MAX_LENGTH = 77


def cache_dir() -> Path:
    """Where the wheel is looked for: ``$CIRCUITS_CACHE/wheels``, default ``~/.cache/circuits/wheels``."""
    root = os.environ.get("CIRCUITS_CACHE") or Path.home() / ".cache" / "circuits"
    return Path(root) / "wheels"


def fetch_command(folder: Path | None = None) -> list[str]:
    """The command that puts the wheel (alone, no dependencies) where :func:`read_merges` looks."""
    folder = folder or cache_dir()
    return [sys.executable, "-m", "pip", "download", WHEEL_REQUIREMENT, "--no-deps", "-d", str(folder)]


def _source() -> Path:
    """The wheel or ``.txt.gz`` to read: ``$CIRCUITS_CLIP_BPE`` when set, else the cached wheel."""
    given = os.environ.get("CIRCUITS_CLIP_BPE")
    path = Path(given) if given else cache_dir() / WHEEL_NAME
    if not path.is_file():
        where = f"CIRCUITS_CLIP_BPE={given}" if given else f"the cache ({path})"
        raise ModelLoadError(
            f"SD's CLIP BPE merges are not in {where}. Fetch the wheel that carries them, without its "
            f"dependencies: `{' '.join(fetch_command())}` (or `python -m circuits.models.sd_tokenizer`); "
            "or point CIRCUITS_CLIP_BPE at a clip-anytorch wheel or a bpe_simple_vocab_16e6.txt.gz"
        )
    return path


@lru_cache(maxsize=2)
def _read_text(path: Path) -> str:
    try:
        if path.suffix == ".whl":
            with zipfile.ZipFile(path) as wheel:
                raw = wheel.read(MERGES_MEMBER)
        else:
            raw = path.read_bytes()
        text = gzip.decompress(raw)
    except (OSError, KeyError, zipfile.BadZipFile, EOFError) as error:
        raise ModelLoadError(
            f"cannot read {MERGES_MEMBER} out of {path}: {type(error).__name__}: {error}; "
            f"fetch it again with `{' '.join(fetch_command())}`"
        ) from None
    digest = hashlib.sha256(text).hexdigest()
    if digest != MERGES_SHA256:
        raise ModelLoadError(
            f"{path} holds a BPE file with sha256 {digest}, not OpenAI's ({MERGES_SHA256}); "
            f"use the {WHEEL_REQUIREMENT} wheel"
        )
    return text.decode("utf-8")


def read_merges() -> list[tuple[str, str]]:
    """The 48,894 BPE merges SD's tokenizers use, in rank order."""
    lines = _read_text(_source()).split("\n")[1 : N_MERGES + 1]
    return [tuple(line.split()) for line in lines]  # type: ignore[misc]


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's reversible byte -> printable character table (CLIP's byte-level alphabet).

    Printable Latin-1 bytes map to themselves; the other 68 bytes are shifted to code points 256+,
    in byte order, so every byte has a visible, non-whitespace symbol. The table lists the printable
    bytes first, then the shifted ones: the vocabulary's first 256 ids follow this order ("!" is 0).
    """
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {byte: chr(byte) for byte in printable}
    for shift, byte in enumerate(b for b in range(256) if b not in table):
        table[byte] = chr(256 + shift)
    return table


def build_vocab(merges: list[tuple[str, str]]) -> dict[str, int]:
    """CLIP's vocabulary from its merges: bytes, bytes with ``</w>``, one token per merge, SoT, EoT."""
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(pair) for pair in merges] + [SOT, EOT]
    vocab = {token: i for i, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ModelLoadError("the BPE merges produce a repeated token; the merges file is not CLIP's")
    return vocab


def write_sd_tokenizer(
    folder: str | os.PathLike[str], *, pad_token: str = EOT, model_max_length: int = MAX_LENGTH
) -> Path:
    """Write SD's CLIP tokenizer (``vocab.json``, ``merges.txt``, ``tokenizer_config.json``) into ``folder``.

    Args:
        pad_token: ``"<|endoftext|>"`` (SD1.x; SDXL's first tokenizer) or ``"!"`` (SD2.x; SDXL's second).
        model_max_length: 77 for every SD checkpoint.
    """
    if pad_token not in (EOT, "!"):
        raise ModelLoadError(f"pad_token={pad_token!r}: SD tokenizers pad with {EOT!r} (SD1.x) or '!' (SD2.x, SDXL)")
    merges = read_merges()
    vocab = build_vocab(merges)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    return write_clip_files(folder, vocab, merges, pad_token=pad_token, model_max_length=model_max_length)


def load_sd_tokenizer(folder: str | os.PathLike[str], *, pad_token: str = EOT):
    """Write the tokenizer into ``folder`` and load it with ``transformers.CLIPTokenizer``."""
    from transformers import CLIPTokenizer

    return CLIPTokenizer.from_pretrained(write_sd_tokenizer(folder, pad_token=pad_token))


def main(argv: list[str] | None = None) -> int:
    """``python -m circuits.models.sd_tokenizer [--dir DIR]``: fetch the wheel into the cache and check it."""
    parser = argparse.ArgumentParser(description="Fetch the clip-anytorch wheel (no dependencies) for SD tokenizers.")
    parser.add_argument("--dir", type=Path, default=None, help=f"where to put it (default {cache_dir()})")
    args = parser.parse_args(argv)
    target = args.dir or cache_dir()
    if not (target / WHEEL_NAME).is_file():
        subprocess.run(fetch_command(target), check=True)
    os.environ.setdefault("CIRCUITS_CLIP_BPE", str(target / WHEEL_NAME))
    print(f"{target / WHEEL_NAME}: {len(read_merges())} merges, sha256 ok")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
