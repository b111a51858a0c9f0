"""``uce.fit`` with its defaults equals the authors' code (``train-scripts/train_erase.py``, ``edit_model``
as its ``__main__`` calls it), transcribed here independently of circuits' solver and position logic.

The transcription follows the code line by line: ``lamb = 0.5``, ``mat1 = lamb W + sum v k^T``,
``mat2 = lamb I + sum k k^T``; the erase pairs sliced from the prompts' last word token
(``attention_mask.sum() - 2``) to the end, an empty anchor encoded as ``' '``; ``retain_texts = [''] +
preserve_concepts`` at every position with ``preserve_scale = max(0.1, 1 / len(retain_texts))``;
``W* = mat1 @ inverse(mat2)``. Checked in float64 on pocket and on the tiny SD folder.
"""

from __future__ import annotations

import pytest
import torch

import circuits
from circuits.methods import Concept, uce


def authors_weights(model, old_texts: list[str], new_texts: list[str], retain_texts: list[str],
                    lamb: float = 0.5, erase_scale: float = 1.0) -> dict[str, torch.Tensor]:
    """Edited ``to_v`` / ``to_k`` weights as ``edit_model(..., technique='replace')`` computes them."""
    tokenizer, encoder = model.tokenizer, model.text_encoder
    length = tokenizer.model_max_length
    preserve_scale = max(0.1, 1 / len(retain_texts))
    new_texts = [" " if text == "" else text for text in new_texts]

    def encode(texts):
        tokens = tokenizer(texts, padding="max_length", max_length=length, truncation=True, return_tensors="pt")
        with torch.no_grad():
            return encoder(tokens.input_ids)[0].to(torch.float64), tokens.attention_mask

    erase_pairs = []
    for old_text, new_text in zip(old_texts, new_texts):
        embeddings, mask = encode([old_text, new_text])
        final, final_new = int(mask[0].sum()) - 2, int(mask[1].sum()) - 2
        farthest = max(final, final_new)
        old_emb = embeddings[0][final : length - max(0, farthest - final)]
        new_emb = embeddings[1][final_new : length - max(0, farthest - final_new)]
        erase_pairs.append((old_emb, new_emb))
    retained = [encode([text, text])[0][0] for text in retain_texts]

    weights = {}
    for name, module in model.unet.named_modules():
        if not name.endswith("attn2"):
            continue
        for projection in ("to_v", "to_k"):
            layer = getattr(module, projection)
            assert layer.bias is None  # layer(emb) is W emb, as the code's values are
            w = layer.weight.detach().to(torch.float64)
            mat1 = lamb * w
            mat2 = lamb * torch.eye(w.shape[1], dtype=torch.float64)
            for context, new_emb in erase_pairs:
                values = new_emb @ w.T
                mat1 = mat1 + erase_scale * (values[:, :, None] @ context[:, None, :]).sum(dim=0)
                mat2 = mat2 + erase_scale * (context[:, :, None] @ context[:, None, :]).sum(dim=0)
            for context in retained:
                values = context @ w.T
                mat1 = mat1 + preserve_scale * (values[:, :, None] @ context[:, None, :]).sum(dim=0)
                mat2 = mat2 + preserve_scale * (context[:, :, None] @ context[:, None, :]).sum(dim=0)
            weights[f"unet.{name}.{projection}.weight"] = mat1 @ torch.inverse(mat2)
    return weights


def _random_final_norm(model) -> None:
    """A fresh LayerNorm's outputs lie in the hyperplane sum(x) = 0; give it the affine part a trained one has."""
    norm = model.text_encoder.final_layer_norm
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(norm.weight.shape, generator=generator, dtype=torch.float64))
        norm.bias.copy_(0.5 * torch.randn(norm.bias.shape, generator=generator, dtype=torch.float64))


@pytest.fixture(scope="module")
def tiny64(tiny_dir):
    model = circuits.load(tiny_dir, dtype=torch.float64)
    _random_final_norm(model)
    return model


@pytest.fixture(scope="module")
def pocket64():
    return circuits.load("pocket", dtype=torch.float64)


def _check(model, concept: Concept) -> None:
    erasure = uce.fit(model, concept)
    words = concept.words
    expected = authors_weights(model, list(words), [concept.anchor] * len(words), ["", *concept.preservation])
    edits = {edit.param: edit.delta for edit in erasure.graph}
    assert set(edits) == set(expected) and len(edits) == 2 * len(model.sites.cross_attention())
    for param, delta in edits.items():
        w0 = model.parameter(param).detach()
        got, want = w0 + delta, expected[param]
        error = torch.linalg.matrix_norm(got - want) / torch.linalg.matrix_norm(want - w0)
        assert error < 1e-5, (param, float(error))  # relative to the size of the edit, not of the weight


CASES = {
    "no_preservation": Concept("red", synonyms=["crimson"], templates=["{}"]),
    "preservation": Concept("red", anchor="blue", templates=["{}"],
                            preservation=["a green square", "blue circle", "a striped yellow cross"]),
}


@pytest.mark.parametrize("case", list(CASES))
def test_defaults_equal_the_authors_code_on_the_tiny_sd_folder(tiny64, case: str) -> None:
    _check(tiny64, CASES[case])


@pytest.mark.parametrize("case", list(CASES))
def test_defaults_equal_the_authors_code_on_pocket(pocket64, case: str) -> None:
    _check(pocket64, CASES[case])


def test_the_null_text_term_keeps_the_unconditional_branch(pocket64) -> None:
    """The retained '' is what keeps CFG's unconditional keys in place; ErasePro's Eq. 2 form moves them."""
    concept = CASES["no_preservation"]
    tokens = pocket64.tokenizer([""], padding="max_length", max_length=pocket64.tokenizer.model_max_length,
                                return_tensors="pt")
    with torch.no_grad():
        null = pocket64.text_encoder(tokens.input_ids)[0][0].to(torch.float64)

    def moved(erasure) -> float:
        edit = next(e for e in erasure.graph if e.param.endswith("to_k.weight"))
        w0 = pocket64.parameter(edit.param).detach()
        return float(torch.linalg.matrix_norm(null @ edit.delta.T) / torch.linalg.matrix_norm(null @ w0.T))

    authors, eq2 = moved(uce.fit(pocket64, concept)), moved(uce.fit(pocket64, concept, uce.Config.eq2()))
    assert authors < 0.5 * eq2, (authors, eq2)
