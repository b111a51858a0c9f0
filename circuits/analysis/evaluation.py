"""The ``erasure_eval`` figure: the oracle's rate per prompt set, before and after the erasure."""

from __future__ import annotations

from typing import Any


def draw_erasure_eval(result: Any) -> dict[str, Any]:
    """One grouped bar chart from ``result.metrics["rates"]`` (``{set: {"before": r, "after": r}}``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = result.metrics["rates"]
    sets = list(rates)
    fig, ax = plt.subplots(figsize=(1.3 * len(sets) + 2, 3))
    width = 0.38
    for offset, key, colour in ((-width / 2, "before", "tab:gray"), (width / 2, "after", "tab:red")):
        ax.bar([i + offset for i in range(len(sets))], [rates[s][key] for s in sets], width, label=key, color=colour)
    ax.set_xticks(range(len(sets)), sets)
    ax.set_ylim(0, 1)
    ax.set_ylabel("oracle reads the row's label")
    metrics = result.metrics
    ax.set_title(f"{metrics['method']} on '{metrics['concept']}' (generate + measure + report)", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    return {"erasure_eval": fig}
