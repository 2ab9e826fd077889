"""The loss curve of a pretraining run, drawn from its MLflow metric history."""

from __future__ import annotations

from pathlib import Path

from mlflow.tracking import MlflowClient


def plot_losses(client: MlflowClient, run_id: str, path: Path) -> bool:
    """The total loss and the six terms against the step; False when nothing was logged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from crisscross.models import TERMS

    fig, ax = plt.subplots(figsize=(8, 4.5))
    drawn = False
    for key in ("loss", *TERMS):
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        if history:
            ax.plot(
                [m.step for m in history],
                [m.value for m in history],
                label=key,
                linewidth=2 if key == "loss" else 1,
            )
            drawn = True
    if drawn:
        ax.set_xlabel("step")
        ax.set_ylabel("negative cosine similarity")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(path, dpi=100)
    plt.close(fig)
    return drawn
