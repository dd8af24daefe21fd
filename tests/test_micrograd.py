"""micrograd: the README's golden values, every operation's gradient against torch's, and the lecture's network."""

import random

import pytest
import torch

from gpt.models.micrograd import MLP, XS, YS, Value, fit, neuron, squared_error, trace


def test_the_golden_values_of_micrograds_readme():
    a, b = Value(-4.0), Value(2.0)
    c = a + b
    d = a * b + b**3
    c += c + 1
    c += 1 + c + (-a)
    d += d * 2 + (b + a).relu()
    d += 3 * d + (b - a).relu()
    e = c - d
    f = e**2
    g = f / 2.0
    g += 10.0 / f
    g.backward()
    assert (round(g.data, 4), round(a.grad, 4), round(b.grad, 4)) == (24.7041, 138.8338, 645.5773)


OPERATIONS = {
    "add": lambda x, y: x + y,
    "radd": lambda x, y: 2.5 + x,
    "sub": lambda x, y: x - y,
    "rsub": lambda x, y: 1.5 - y,
    "mul": lambda x, y: x * y,
    "rmul": lambda x, y: -3 * y,
    "div": lambda x, y: x / y,
    "rdiv": lambda x, y: 2.0 / y,
    "neg": lambda x, y: -x,
    "square": lambda x, y: x**2,
    "cube": lambda x, y: y**3,
    "inverse square": lambda x, y: y**-2,
    "exp": lambda x, y: x.exp(),
    "log": lambda x, y: y.log(),
    "tanh": lambda x, y: x.tanh(),
    "relu": lambda x, y: x.relu(),
    "gelu": lambda x, y: x.gelu() if isinstance(x, Value) else torch.nn.functional.gelu(x),
    "a node used twice": lambda x, y: (x * y + x).tanh() * x,
}


@pytest.mark.parametrize("name", OPERATIONS)
def test_each_operation_has_torchs_value_and_gradient(name):
    op, rng = OPERATIONS[name], random.Random(name)
    for _ in range(5):
        x0, y0 = rng.uniform(-2, 2), rng.uniform(0.5, 2)  # y positive: log and fractional powers
        x, y = Value(x0), Value(y0)
        out = op(x, y)
        out.backward()
        tx, ty = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (x0, y0))
        tout = op(tx, ty)
        tout.backward()
        assert out.data == pytest.approx(tout.item(), abs=1e-9)
        for mine, theirs in ((x, tx), (y, ty)):
            assert mine.grad == pytest.approx(0.0 if theirs.grad is None else theirs.grad.item(), abs=1e-9)


def test_dot_is_the_sum_of_products_as_one_node():
    rng = random.Random(3)
    ws, xs = ([Value(rng.uniform(-1, 1)) for _ in range(7)] for _ in range(2))
    out = Value.dot(ws, xs).tanh()
    out.backward()
    tw, tx = (torch.tensor([v.data for v in vs], dtype=torch.float64, requires_grad=True) for vs in (ws, xs))
    (tw * tx).sum().tanh().backward()
    assert out.data == pytest.approx(torch.tanh((tw * tx).sum()).item(), abs=1e-12)
    assert [v.grad for v in ws] == pytest.approx(tw.grad.tolist(), abs=1e-12)
    assert [v.grad for v in xs] == pytest.approx(tx.grad.tolist(), abs=1e-12)
    assert len(Value.dot(ws, xs)._prev) == 14


def test_backward_runs_through_a_graph_deeper_than_pythons_recursion_limit():
    x = Value(0.5)
    y = x
    for _ in range(20_000):
        y = y * 1.0 + 0.0
    y.backward()
    assert x.grad == 1.0


def test_the_lectures_network_has_41_parameters_and_fits_its_four_examples():
    random.seed(1337)
    model = MLP(3, [4, 4, 1])
    assert len(model.parameters()) == 41
    losses = fit(model, steps=300, lr=0.1)
    assert losses[0] > 0.5 and squared_error(model).data < 0.01
    assert [round(model(x).data) for x in XS] == YS


def test_linear_output_leaves_the_last_layer_without_activation():
    random.seed(0)
    model = MLP(2, [16, 16, 1], activation="relu", linear_output=True)
    assert len(model.parameters()) == 337  # micrograd's two-moons demo
    assert [n.activation for n in model.layers[-1].neurons] == [None]
    assert {n.activation for layer in model.layers[:-1] for n in layer.neurons} == {"relu"}


def test_the_command_line_trains_and_refuses_bad_settings(cli):
    r = cli("-m", "gpt.micrograd", "--steps", "200")
    assert r.returncode == 0, r.stderr
    loss = float(r.stdout.split("loss ")[1].split(";")[0])
    assert loss < 0.05 and "41 parameters" in r.stderr
    r = cli("-m", "gpt.micrograd", "--steps", "0")
    assert r.returncode == 2 and r.stderr.strip() == "error: --steps must be at least 1 and --lr above 0"


def test_the_lectures_neuron_and_its_graph():
    o = neuron()
    nodes, edges = trace(o)
    labels = {n.label for n in nodes}
    assert {"x1", "x2", "w1", "w2", "b", "x1*w1", "x2*w2", "n", "o"} <= labels and len(nodes) == 10
    assert len(edges) == 9 and all(child in node._prev for child, node in edges)
    o.backward()
    grads = {n.label: round(n.grad, 4) for n in nodes}
    assert round(o.data, 4) == 0.7071
    assert (grads["x1"], grads["w1"], grads["x2"], grads["w2"], grads["b"]) == (-1.5, 1.0, 0.5, 0.0, 0.5)
