"""``erasure_eval``: prompt files, generation, measures and the report, end to end on pocket."""

from __future__ import annotations

EXPERIMENT = "erasure_eval"


def test_sets_rates_and_table(fast):
    metrics = fast.metrics
    assert set(metrics["rates"]) == {"explicit", "synonym", "implicit", "preservation"}
    for pair in metrics["rates"].values():
        assert set(pair) == {"before", "after"} and all(0 <= v <= 1 for v in pair.values())
    # the prompt file is in the ESD layout, one row per prompt of each set
    lines = metrics["prompts_csv"].splitlines()
    assert lines[0] == "case_number,prompt,evaluation_seed,evaluation_guidance,class,categories"
    assert len(lines) - 1 == metrics["images"] == 8
    assert "| pocket (no erasure) |" in metrics["table"] and "| uce (red) |" in metrics["table"]
    assert "(esd, 8 rows)" in metrics["table"]  # generated from the CSV it wrote
    assert "rate_explicit" in metrics["table_csv"].splitlines()[0]
    assert set(metrics["clip_score"]) == {"before", "after"}
    assert metrics["report_png_bytes"] > 1000
    assert set(fast.images) == {"before", "after"} and len(fast.images["before"]) == 8


def test_erasure_lowers_the_explicit_rate_at_full_settings():
    # a full-steps run on 4 prompts per set: UCE on red must bring the explicit rate down (plain UCE, no
    # preservation term, also costs preservation on pocket: 1.0 -> 0.5 here; the table records it)
    from circuits.experiments import run_experiment

    result = run_experiment(EXPERIMENT, prompts_per_set=4, clip_score=False, progress=False)
    rates = result.metrics["rates"]
    assert rates["explicit"]["after"] < rates["explicit"]["before"]
    assert rates["implicit"]["before"] <= rates["explicit"]["before"]
