"""loss.png: a run's curve against wall time, as the card and the app show it (matplotlib, imported when drawn)."""

from pathlib import Path

from gpt.storage.atomic import write_atomic

LOSSES = (("train_loss", "train"), ("val_loss", "validation"))


def pyplot():
    """matplotlib's pyplot, drawing to files (a time budget's run imports it before it plans, so its finish is only
    work it can foresee)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_loss_plot(curve: list[dict], path: Path, unit: str = "char", series=LOSSES, label: str = "") -> None:
    """loss.png: train and validation loss (or the `series` given, as (key, label)) against training wall time
    (minutes), steps on the top axis."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    timed = all("time_s" in c for c in curve)
    x = [c["time_s"] / 60 if timed else c["step"] for c in curve]
    for key, name in series:
        points = [(at, c[key]) for at, c in zip(x, curve) if c.get(key) is not None]
        if points:
            ax.plot(*zip(*points), label=name)
    ax.set_ylabel(label or f"cross-entropy (nats/{unit})")
    ax.set_xlabel("training wall time (min)" if timed else "step")
    if timed and x[-1] > 0:
        steps = ax.secondary_xaxis(
            "top", functions=(lambda m: m * curve[-1]["step"] / x[-1], lambda s: s * x[-1] / max(curve[-1]["step"], 1))
        )
        steps.set_xlabel("step (at the run's mean speed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    write_atomic(path, lambda p: fig.savefig(p, format="png"))
    plt.close(fig)
