"""SD's real CLIP tokenizers, rebuilt offline: OpenAI's ids, and token positions on I2P-style prompts.

The check values are OpenAI's tokenizer's (the issue and ``shared/notes/sd-tokenizer-offline.md``);
the positions are read through ``circuits.tokens.layout``, the code every intervention uses.
"""

from __future__ import annotations

import gzip

import pytest

from circuits.errors import ModelLoadError, PromptError
from circuits.models import sd_tokenizer
from circuits.tokens import layout, truncate

I2P = (
    "portrait of a woman, (masterpiece:1.2), highly detailed, by greg rutkowski and alphonse mucha, "
    "trending on artstation"
)


def test_vocabulary_and_special_ids(sd_tokenizer, sd2_tokenizer):
    for tok in (sd_tokenizer, sd2_tokenizer):
        assert len(tok) == 49408
        assert (tok.bos_token_id, tok.eos_token_id) == (49406, 49407)
        assert tok.model_max_length == 77
    assert sd_tokenizer.pad_token_id == 49407  # SD1.x pads with EoT
    assert sd2_tokenizer.pad_token_id == 0 and sd2_tokenizer.convert_ids_to_tokens(0) == "!"


def test_openai_check_values(sd_tokenizer, sd2_tokenizer):
    for tok in (sd_tokenizer, sd2_tokenizer):
        assert tok("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
        assert tok.convert_ids_to_tokens(tok("trending on artstation").input_ids)[-3:] == [
            "art", "station</w>", "<|endoftext|>",
        ]


def test_subword_positions_and_the_word_count_trap(sd_tokenizer):
    lay = layout(sd_tokenizer, "trending on artstation")
    assert lay.first_eot == 5  # SoT trending on art station</w> EoT
    assert lay.select("artstation") == [3, 4]
    # the official TRCE code's "first EoT" (len(prompt.split()) + 1) lands on 'station</w>', not on EoT
    assert lay.tokens[len("trending on artstation".split()) + 1] == "station</w>"


@pytest.mark.parametrize("which", ["sd_tokenizer", "sd2_tokenizer"])
def test_i2p_prompt_layout(which, request):
    tok = request.getfixturevalue(which)
    lay = layout(tok, I2P)
    tokens = lay.tokens
    # weights syntax is punctuation to CLIP: "(", "masterpiece", ":", "1", ".", "2", ")," are separate tokens
    start = tokens.index("masterpiece</w>")
    assert tokens[start - 1 : start + 6] == ("(</w>", "masterpiece</w>", ":</w>", "1</w>", ".</w>", "2</w>", "),</w>")
    assert lay.select("masterpiece") == [start]
    # every keyword's positions spell it, sub-words included
    for word in ("greg rutkowski", "alphonse mucha", "artstation", "woman", "highly detailed"):
        positions = lay.select(word)
        assert positions, word
        assert "".join(tokens[p] for p in positions).replace("</w>", "") == word.replace(" ", "")
        assert positions == list(range(positions[0], positions[-1] + 1))
    # the first EoT follows the last sub-token; the padding is the tokenizer's own
    assert tokens[lay.first_eot - 1] == "station</w>" and lay.input_ids[lay.first_eot] == 49407
    assert all(i == tok.pad_token_id for i in lay.input_ids[lay.first_eot + 1 :])
    assert lay.select("eot_all") == list(range(lay.first_eot, 77))


def test_both_tokenizers_share_positions(sd_tokenizer, sd2_tokenizer):
    """SDXL reads both encoders at the same positions: the ids agree up to the first EoT, padding differs."""
    for prompt in (I2P, "a (red:0.8) circle.", "A Photo Of A CAT?"):
        one, two = layout(sd_tokenizer, prompt), layout(sd2_tokenizer, prompt)
        assert one.first_eot == two.first_eot
        assert one.input_ids[: one.first_eot + 1] == two.input_ids[: two.first_eot + 1]
        assert one.input_ids[-1] == 49407 and two.input_ids[-1] == 0


def test_exclamation_marks_split_on_the_pad_tokenizer_as_in_diffusers(sd_tokenizer, sd2_tokenizer):
    """The '!'-padding tokenizer treats '!' as its special pad token, so '!!' in a prompt becomes two
    pad ids instead of the BPE token '!!</w>' (748): what transformers does with the published SD2 / SDXL
    tokenizer configs (huggingface/diffusers#4153), which we reproduce rather than fix, since it is what
    the checkpoints are run with. On SDXL the two encoders then disagree on positions after a '!'."""
    one, two = layout(sd_tokenizer, "a circle!!"), layout(sd2_tokenizer, "a circle!!")
    assert one.input_ids[3] == 748 and one.first_eot == 4
    assert two.input_ids[3:6] == (0, 0, 49407) and two.first_eot == 5


def test_long_prompt_is_refused_and_truncate_keeps_whole_words(sd_tokenizer):
    long = ", ".join([I2P] * 4)
    with pytest.raises(PromptError, match="truncate"):
        layout(sd_tokenizer, long)
    cut = truncate(sd_tokenizer, long)
    assert long.startswith(cut) and len(sd_tokenizer(cut).input_ids) <= 77
    next_word = long[len(cut) :].split()[0]
    assert len(sd_tokenizer(f"{cut} {next_word}").input_ids) > 77


def test_missing_wheel_names_the_fetch_command(monkeypatch, tmp_path):
    monkeypatch.setenv("CIRCUITS_CLIP_BPE", str(tmp_path / "nothing.whl"))
    with pytest.raises(ModelLoadError, match=r"pip download clip-anytorch==2\.6\.0 --no-deps"):
        sd_tokenizer.read_merges()
    monkeypatch.delenv("CIRCUITS_CLIP_BPE")
    monkeypatch.setenv("CIRCUITS_CACHE", str(tmp_path))
    with pytest.raises(ModelLoadError, match=str(tmp_path / "wheels")):
        sd_tokenizer.read_merges()


def test_a_different_bpe_file_is_refused(monkeypatch, tmp_path):
    fake = tmp_path / "bpe_simple_vocab_16e6.txt.gz"
    fake.write_bytes(gzip.compress(b"#version: 0.2\ni n\nt h\n"))
    monkeypatch.setenv("CIRCUITS_CLIP_BPE", str(fake))
    with pytest.raises(ModelLoadError, match="sha256"):
        sd_tokenizer.read_merges()


def test_pad_token_must_be_an_sd_one(tmp_path):
    with pytest.raises(ModelLoadError, match="pad_token"):
        sd_tokenizer.write_sd_tokenizer(tmp_path, pad_token="<pad>")
