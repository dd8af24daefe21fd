"""The card's text from metrics alone."""

from gpt.storage.card import reached


def test_thresholds_first_reached_at_one_evaluation_share_one_entry():
    curve = [
        {"step": 0, "val_loss": 4.2, "time_s": 1},
        {"step": 500, "val_loss": 1.7, "time_s": 60},
        {"step": 1000, "val_loss": 1.58, "time_s": 120},
    ]
    times = reached(curve)
    assert len(times) == 2 and times[0].startswith("2.0 and 1.8 at 1.0 min") and times[1].startswith("1.6 at 2.0")
