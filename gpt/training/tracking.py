"""Experiment tracking with trackio (`--track PROJECT`): each run's settings, losses, learning rate and tokens/s.

trackio is Hugging Face's local-first, wandb-compatible tracker: runs go to a SQLite file on this machine (`trackio
show` opens the dashboard), or to a Space with `--track-space user/name`. It is optional (`pip install trackio`),
and only the process that writes the folder (rank 0) logs.
"""

import math


class Tracker:
    """One run in a trackio project."""

    def __init__(self, project: str, name: str, config: dict, space: str | None = None):
        try:
            import trackio
        except ImportError:
            raise ValueError("--track logs to trackio, which is not installed: pip install trackio") from None
        self.trackio = trackio
        trackio.init(project=project, name=name, config=config, space_id=space, auto_log_cpu=False)

    def log(self, figures: dict, step: int) -> None:
        """The finite numbers among figures, at this step."""
        numbers = {k: float(v) for k, v in figures.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
        self.trackio.log({k: v for k, v in numbers.items() if math.isfinite(v) and k != "step"}, step=step)

    def finish(self) -> None:
        self.trackio.finish()
