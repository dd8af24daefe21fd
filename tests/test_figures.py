"""The app's charts keep their words readable: no tick label printed over another, whatever the data's range."""

import pytest
import torch

from gpt.models.micrograd import MLP
from gpt.ui.figures import attention_figure, micrograd_view


def drawn_labels(fig, axis) -> list:
    """The tick labels the figure shows on this axis (the ticks in view, with text), as boxes in pixels."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t.label1 for t in axis._update_ticks() if t.label1.get_visible() and t.label1.get_text()]
    return [label.get_window_extent(renderer) for label in labels]


def overprinted(boxes) -> list:
    """Pairs of labels that touch (a pixel apart or less)."""
    boxes = [b.expanded(1, 1).padded(1) for b in boxes]
    return [(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1 :] if a.overlaps(b)]


@pytest.mark.parametrize("top, bottom", [(12.0, 0.0004), (30.0, 0.05), (3.2, 2.7), (8.0, 0.6), (0.02, 0.019)])
def test_the_micrograd_error_curve_labels_its_log_axis_without_overprinting(top, bottom):
    losses = torch.logspace(torch.log10(torch.tensor(top)), torch.log10(torch.tensor(bottom)), 60).tolist()
    _, fig = micrograd_view({"model": MLP(3, [4, 4, 1]), "losses": losses, "seed": 0})
    boxes = drawn_labels(fig, fig.axes[0].yaxis)
    assert len(boxes) >= 2, "a log axis needs at least two labels to be read"
    assert not overprinted(boxes)


@pytest.mark.parametrize("n", [12, 48, 200])
def test_the_attention_map_labels_every_shown_token_apart(n):
    words = [" the", "ing", " thou", "\\n", " and", "st", " my", " love"]
    labels = [words[i % len(words)] for i in range(n)]
    maps = torch.softmax(torch.randn(2, n, n), dim=-1).tril()
    fig = attention_figure(maps, labels, layer=0, heads=[1])
    ax = fig.axes[0]
    for axis in (ax.xaxis, ax.yaxis):
        boxes = drawn_labels(fig, axis)
        assert len(boxes) >= min(n, 12) and not overprinted(boxes)
        width, height = fig.canvas.get_width_height()
        assert all(b.x0 >= 0 and b.y0 >= 0 and b.x1 <= width and b.y1 <= height for b in boxes)  # none cut off
