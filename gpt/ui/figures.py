"""The app's charts, drawn with matplotlib for the page (never a window): next-token distributions, attention maps,
the ladder's loss against size, and micrograd's graph and loss curve."""

import math

import torch

from gpt.models.micrograd import XS, YS, Value, neuron, trace
from gpt.serving.generate import LM
from gpt.ui.context import shown


def pyplot():
    """matplotlib's pyplot on its file backend, imported when a chart is first drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def distribution_figure(lm: LM, model, drawn, chosen: int, position: int, before: str, top: int = 12):
    """Grouped bars of the likeliest tokens: the model's probability beside the sampled-from one; the written token
    is marked."""
    plt = pyplot()
    order = torch.maximum(model, drawn).argsort(descending=True)[:top].tolist()
    order = order if chosen in order else order[:-1] + [chosen]
    order.sort(key=lambda i: -float(model[i]))
    labels = [("▶ " if i == chosen else "") + repr(shown(lm.tokenizer.decode([i])))[1:-1] for i in order]
    fig, ax = plt.subplots(figsize=(6.4, 0.32 * len(order) + 1.4), dpi=90)
    y = torch.arange(len(order)).float()
    ax.barh(y - 0.2, [float(model[i]) for i in order], height=0.4, color="#9aa0a6", label="the model (temperature 1)")
    ax.barh(y + 0.2, [float(drawn[i]) for i in order], height=0.4, color="#e8710a", label="sampled from (settings)")
    ax.set_yticks(y.tolist(), labels, family="monospace", fontsize=9)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("probability")
    tail = shown(before[-24:])
    ax.set_title(f"position {position}: the token after …{tail}", fontsize=9, family="monospace", loc="left")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def attention_figure(maps, labels: list[str], layer: int, heads: list[int]):
    """One heatmap per head, with a colour bar; long texts label every n-th token so the labels stay readable."""
    plt = pyplot()
    cols = min(len(heads), 4)
    rows = math.ceil(len(heads) / cols)
    side = min(3 + 0.16 * len(labels), 10) if len(heads) == 1 else 3.2
    fig, axes = plt.subplots(rows, cols, figsize=(side * cols + 1, side * rows + 0.5), dpi=90, squeeze=False)
    every = max(1, math.ceil(len(labels) / 48))
    ticks = list(range(0, len(labels), every))
    for ax in axes.flat[len(heads) :]:
        ax.axis("off")
    for ax, h in zip(axes.flat, heads):
        image = ax.imshow(maps[h].numpy(), cmap="viridis", vmin=0, vmax=1)
        ax.set_title(f"layer {layer}, head {h}", fontsize=9)
        if len(heads) == 1:
            ax.set_xticks(ticks, [labels[i] for i in ticks], fontsize=8, family="monospace", rotation=90)
            ax.set_yticks(ticks, [labels[i] for i in ticks], fontsize=8, family="monospace")
            ax.set_xlabel("attends to (earlier token)")
            ax.set_ylabel("token being read")
        else:
            ax.set_xticks([])
            ax.set_yticks([])
    fig.colorbar(image, ax=axes, label="attention weight (each row sums to 1)", shrink=0.8)
    return fig


def ladder_figure(rungs):
    """Validation loss against parameters, one labelled point per rung: (params, name, arch, loss, samples)."""
    from matplotlib.ticker import NullFormatter

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=90)
    ax.plot([r[0] for r in rungs], [r[3] for r in rungs], "o-")
    for params, name, _, loss, _ in rungs:
        ax.annotate(name, (params, loss), textcoords="offset points", xytext=(6, 4), fontsize=9)
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.margins(x=0.15, y=0.15)
    ax.set_xlabel("parameters")
    ax.set_ylabel("validation loss (nats/char)")
    ax.set_title("validation loss against parameters", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def micrograd_graph(after_backward: bool):
    """The lecture's neuron as its graph, each Value's label, data and grad: as computed, or after o.backward()."""
    plt = pyplot()
    o = neuron()
    if after_backward:
        o.backward()
    nodes, edges = trace(o)
    depth = {id(o): 0}
    for node in nodes:  # trace lists each node before its inputs: depth is the longest way to the output
        for child in node._prev:
            depth[id(child)] = max(depth.get(id(child), 0), depth[id(node)] + 1)
    columns: dict[int, list[Value]] = {}
    for node in nodes:
        columns.setdefault(depth[id(node)], []).append(node)
    where = {}
    for d, column in columns.items():
        for i, node in enumerate(sorted(column, key=lambda n: n.label)):
            where[id(node)] = (-d, (len(column) - 1) / 2 - i)
    fig, ax = plt.subplots(figsize=(9, 3.6), dpi=90)
    for child, node in edges:
        (x0, y0), (x1, y1) = where[id(child)], where[id(node)]
        ax.annotate("", (x1 - 0.32, y1), (x0 + 0.32, y0), arrowprops=dict(arrowstyle="->", color="0.5"))
    for node in nodes:
        x, y = where[id(node)]
        op = f" ({node._op})" if node._op else ""
        text = f"{node.label}{op}\ndata {node.data:.4f}\ngrad {node.grad:.4f}"
        box = dict(boxstyle="round", fc="#e8f0fe" if node.grad else "white", ec="0.6")
        ax.text(x, y, text, ha="center", va="center", fontsize=8, family="monospace", bbox=box)
    tallest = max(len(c) for c in columns.values())
    ax.set_xlim(-max(columns) - 0.6, 0.6)
    ax.set_ylim(-tallest / 2 - 0.2, tallest / 2 + 0.2)
    ax.axis("off")
    fig.tight_layout()
    return fig


def micrograd_view(state: dict):
    """The 41-parameter network's status line and loss curve: where its four predictions stand."""
    from matplotlib.ticker import LogFormatter

    class Plain(LogFormatter):  # matplotlib's choice of ticks to label, each a plain number (0.01, not 1e-02)
        def _num_to_string(self, x, vmin, vmax):
            return f"{x:g}"

    plt = pyplot()
    model, losses = state["model"], state["losses"]
    fig, ax = plt.subplots(figsize=(6, 3), dpi=90)
    ax.plot(range(len(losses)), losses, "o-" if len(losses) < 40 else "-", markersize=3)
    positive = [x for x in losses if x > 0]
    if positive and max(positive) > 10 * min(positive):  # a log axis over a decade or more; a linear one within
        ax.set_yscale("log")
        ax.yaxis.set_major_formatter(Plain(labelOnlyBase=False))
        # some ticks between the decades labelled over up to 1.5 decades, then the decades alone
        ax.yaxis.set_minor_formatter(Plain(labelOnlyBase=False, minor_thresholds=(1.5, 0)))
    ax.set_xlabel("gradient descent step")
    ax.set_ylabel("squared error (sum of 4)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    predictions = ", ".join(f"{model(x).data:+.3f}" for x in XS)
    status = (
        f"**Step {len(losses) - 1}**: loss {losses[-1]:.6f}. Predictions {predictions} for targets "
        f"{', '.join(f'{y:+.0f}' for y in YS)} ({len(model.parameters())} parameters, seed {state['seed']})."
    )
    return status, fig
