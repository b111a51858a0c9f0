"""Concepts: plain data with JSON round-trip, aligned prompt pairs, pocket defaults, clear errors."""

from __future__ import annotations

import pytest

from circuits.methods import Concept, ConceptError
from circuits.methods.features import align
from circuits.pocket import concept as pocket_concept
from circuits.pocket import evaluation_sets


def test_pairs_fill_templates_and_an_empty_anchor_removes_the_word() -> None:
    c = Concept("red", synonyms=["crimson"], templates=["a {} circle", "{}, striped"], preservation=["a blue square"])
    assert [(p.target, p.anchor) for p in c.pairs()] == [
        ("a red circle", "a circle"), ("red, striped", "striped"),
        ("a crimson circle", "a circle"), ("crimson, striped", "striped"),
    ]
    assert c.target_prompts(synonyms=False) == ["a red circle", "red, striped"]
    assert Concept.from_json(c.to_json()) == c


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"target": ""}, "give the word to erase"),
        ({"target": "red", "templates": []}, "templates is empty"),
        ({"target": "red", "templates": ["a red circle"]}, "exactly one"),
        ({"target": "red", "synonyms": "crimson"}, "list of strings"),
        ({"target": "red", "synonyms": [""]}, "empty or non-string"),
    ],
)
def test_bad_concepts_name_the_field(kwargs, match) -> None:
    with pytest.raises(ConceptError, match=match):
        Concept(**kwargs)


def test_unknown_field_in_json_is_named() -> None:
    with pytest.raises(ConceptError, match="unknown fields.*'colour'"):
        Concept.from_dict({"target": "red", "colour": "x"})


def test_a_word_the_tokenizer_does_not_know_is_an_error(model) -> None:
    Concept("unicorn").check(model.tokenizer)  # a real sub-word split ('uni' + 'corn') is fine
    with pytest.raises(ConceptError, match="does not know 'rde'.*r \\+ d \\+ e"):
        Concept("rde").check(model.tokenizer)


def test_pocket_concepts_have_templates_synonyms_and_preservation() -> None:
    red = pocket_concept("crimson")  # a synonym names its colour
    assert red.target == "red" and set(red.synonyms) == {"crimson", "scarlet"} and red.anchor == ""
    assert all("red" not in p for p in red.preservation) and len(red.preservation) >= 8
    circle, striped = pocket_concept("circle"), pocket_concept("striped")
    assert circle.synonyms == () and all("circle" not in p for p in circle.preservation)
    # the empty anchor leaves no dangling article or comma behind
    for c in (red, circle, striped):
        for pair in c.pairs():
            words = pair.anchor.replace(",", " ,").split()
            assert words and words[-1] not in ("a", "an", ",") and " ," not in pair.anchor.replace(" , ", "")
            assert all(not (w in ("a", "an") and nxt in ("a", "an", ",")) for w, nxt in zip(words, words[1:]))
    sets = evaluation_sets("red")
    assert len(sets.target) == 8 and all("red" in p for p in sets.target)
    assert all(("crimson" in p) or ("scarlet" in p) for p in sets.synonyms)
    assert not set(sets.target) & set(red.target_prompts())  # evaluation prompts are not fitting prompts


def test_unknown_pocket_word_suggests_close_ones() -> None:
    with pytest.raises(ConceptError, match="did you mean 'red'"):
        pocket_concept("rde")


def test_token_alignment_modes(model) -> None:
    pair = Concept("red", templates=["a {} circle"]).pairs()[0]  # "a red circle" -> "a circle"
    tok = model.tokenizer
    assert align(tok, pair, "eot") == ([4], [3])
    assert align(tok, pair, "keyword") == ([2], [0])  # an empty anchor maps the word onto [SoT]
    t, a = align(tok, pair, "eot_all")
    assert t[0] == 4 and a[0] == 3 and len(t) == len(a) == 16 - 4
    assert align(tok, pair, "first_k", k=3) == ([0, 1, 2], [0, 1, 2])
    with pytest.raises(ConceptError, match="same token count"):
        align(tok, pair, "prompt")
    word_anchor = Concept("red", anchor="blue", templates=["a {} circle"]).pairs()[0]
    assert align(tok, word_anchor, "prompt") == ([0, 1, 2, 3, 4], [0, 1, 2, 3, 4])
    assert align(tok, word_anchor, "keyword") == ([2], [2])


def test_pocket_concepts_are_reachable_from_a_bare_import() -> None:
    import subprocess
    import sys

    code = "import circuits; c = circuits.pocket.concept('red'); print(c.name, circuits.methods.uce.Config().reg)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["red", "0.5"]
