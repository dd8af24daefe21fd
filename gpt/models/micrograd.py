"""micrograd (Zero to Hero, lecture 1): a scalar autograd engine and a small neural network built on it.

Every number is a Value that remembers the Values it was made from and how; `backward()` walks that graph from the
output back, in reverse topological order, and each node adds its share of the output's gradient to its inputs
(the chain rule, one local derivative at a time). This is all that torch's autograd does, one scalar at a time.
The ladder's next rungs do the same with tensors (gpt/models/bigram.py onwards).

python -m gpt.micrograd trains the lecture's 41-parameter network on its four examples.
"""

import argparse
import math
import random


class Value:
    """A scalar, its gradient, and how it was computed (its inputs and the rule that sends the gradient back)."""

    def __init__(self, data: float, _children: tuple["Value", ...] = (), _op: str = "", label: str = ""):
        self.data = float(data)
        self.grad = 0.0
        self._backward = lambda: None
        self._prev = _children
        self._op = _op
        self.label = label

    def __repr__(self) -> str:
        return f"Value(data={self.data:.4f}, grad={self.grad:.4f})"

    def __add__(self, other) -> "Value":
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data + other.data, (self, other), "+")

        def _backward():
            self.grad += out.grad
            other.grad += out.grad

        out._backward = _backward
        return out

    def __mul__(self, other) -> "Value":
        other = other if isinstance(other, Value) else Value(other)
        out = Value(self.data * other.data, (self, other), "*")

        def _backward():
            self.grad += other.data * out.grad
            other.grad += self.data * out.grad

        out._backward = _backward
        return out

    def __pow__(self, k: float) -> "Value":
        assert isinstance(k, (int, float)), "only constant powers: a Value to a Value's power is exp(log)"
        out = Value(self.data**k, (self,), f"**{k}")

        def _backward():
            self.grad += k * self.data ** (k - 1) * out.grad

        out._backward = _backward
        return out

    def exp(self) -> "Value":
        out = Value(math.exp(self.data), (self,), "exp")

        def _backward():
            self.grad += out.data * out.grad

        out._backward = _backward
        return out

    def log(self) -> "Value":
        out = Value(math.log(self.data), (self,), "log")

        def _backward():
            self.grad += out.grad / self.data

        out._backward = _backward
        return out

    def tanh(self) -> "Value":
        out = Value(math.tanh(self.data), (self,), "tanh")

        def _backward():
            self.grad += (1 - out.data**2) * out.grad

        out._backward = _backward
        return out

    def gelu(self) -> "Value":
        """x * P(X <= x) for a standard normal X, exactly (erf), as GPT-2 and gpt/models/model.py use it."""
        cdf = 0.5 * (1 + math.erf(self.data / math.sqrt(2)))
        out = Value(self.data * cdf, (self,), "gelu")

        def _backward():
            density = math.exp(-0.5 * self.data**2) / math.sqrt(2 * math.pi)
            self.grad += (cdf + self.data * density) * out.grad

        out._backward = _backward
        return out

    def relu(self) -> "Value":
        out = Value(max(self.data, 0.0), (self,), "relu")

        def _backward():
            self.grad += (out.data > 0) * out.grad

        out._backward = _backward
        return out

    @staticmethod
    def dot(ws: list["Value"], xs: list["Value"]) -> "Value":
        """sum(w * x) as one node, not 2n: the same numbers, a third of the time for a network's products."""
        out = Value(sum(w.data * x.data for w, x in zip(ws, xs)), (*ws, *xs), "dot")

        def _backward():
            for w, x in zip(ws, xs):
                w.grad += x.data * out.grad
                x.grad += w.data * out.grad

        out._backward = _backward
        return out

    def topological(self) -> list["Value"]:
        """Every Value this one depends on, itself last, each after all of its inputs."""
        order, seen, stack = [], set(), [(self, False)]
        while stack:  # depth-first without recursion: a GPT's graph is deeper than Python's recursion limit
            node, expanded = stack.pop()
            if expanded:
                order.append(node)
            elif id(node) not in seen:
                seen.add(id(node))
                stack.append((node, True))
                stack.extend((child, False) for child in node._prev)
        return order

    def backward(self) -> None:
        """Gradients of this Value with respect to every Value it depends on."""
        self.grad = 1.0
        for node in reversed(self.topological()):
            node._backward()

    def __neg__(self) -> "Value":
        return self * -1

    def __radd__(self, other) -> "Value":
        return self + other

    def __sub__(self, other) -> "Value":
        return self + (-other)

    def __rsub__(self, other) -> "Value":
        return other + (-self)

    def __rmul__(self, other) -> "Value":
        return self * other

    def __truediv__(self, other) -> "Value":
        return self * other**-1

    def __rtruediv__(self, other) -> "Value":
        return other * self**-1


class Module:
    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = 0.0

    def parameters(self) -> list[Value]:
        return []


class Neuron(Module):
    """w . x + b, then the activation (tanh as in the lecture, relu as in micrograd's demo, or none)."""

    def __init__(self, nin: int, activation: str | None = "tanh", rng: random.Random | None = None):
        uniform = (rng or random).uniform  # the lecture draws from the global generator; the app gives its own
        self.w = [Value(uniform(-1, 1)) for _ in range(nin)]
        self.b = Value(uniform(-1, 1))
        self.activation = activation

    def __call__(self, x: list) -> Value:
        act = sum((wi * xi for wi, xi in zip(self.w, x)), self.b)
        return getattr(act, self.activation)() if self.activation else act

    def parameters(self) -> list[Value]:
        return self.w + [self.b]


class Layer(Module):
    def __init__(self, nin: int, nout: int, activation: str | None = "tanh", rng: random.Random | None = None):
        self.neurons = [Neuron(nin, activation, rng) for _ in range(nout)]

    def __call__(self, x: list) -> list[Value]:
        return [n(x) for n in self.neurons]

    def parameters(self) -> list[Value]:
        return [p for n in self.neurons for p in n.parameters()]


class MLP(Module):
    """Layers of neurons; the lecture's MLP(3, [4, 4, 1]) has 41 parameters. linear_output: no activation on the
    last layer (micrograd's demo, whose loss reads raw scores)."""

    def __init__(
        self,
        nin: int,
        nouts: list[int],
        activation: str = "tanh",
        linear_output: bool = False,
        rng: random.Random | None = None,
    ):
        sizes = [nin] + nouts
        last = len(nouts) - 1
        self.layers = [
            Layer(sizes[i], sizes[i + 1], None if linear_output and i == last else activation, rng)
            for i in range(len(nouts))
        ]

    def __call__(self, x: list) -> Value | list[Value]:
        for layer in self.layers:
            x = layer(x)
        return x[0] if len(x) == 1 else x

    def parameters(self) -> list[Value]:
        return [p for layer in self.layers for p in layer.parameters()]


def trace(root: Value) -> tuple[list[Value], list[tuple[Value, Value]]]:
    """The graph that made root, as the lecture draws it: its Values from root back (each before its inputs) and
    the (input, output) edges between them."""
    nodes = root.topological()[::-1]
    return nodes, [(child, node) for node in nodes for child in node._prev]


def neuron() -> Value:
    """The lecture's neuron, o = tanh(x1*w1 + x2*w2 + b), with its inputs, weights and labels (o is about 0.7071)."""
    x1, x2 = Value(2.0, label="x1"), Value(0.0, label="x2")
    w1, w2 = Value(-3.0, label="w1"), Value(1.0, label="w2")
    b = Value(6.8813735870195432, label="b")
    x1w1, x2w2 = x1 * w1, x2 * w2
    x1w1.label, x2w2.label = "x1*w1", "x2*w2"
    total = x1w1 + x2w2
    total.label = "x1*w1 + x2*w2"
    n = total + b
    n.label = "n"
    o = n.tanh()
    o.label = "o"
    return o


# The lecture's four examples and their targets.
XS = [[2.0, 3.0, -1.0], [3.0, -1.0, 0.5], [0.5, 1.0, 1.0], [1.0, 1.0, -1.0]]
YS = [1.0, -1.0, -1.0, 1.0]


def squared_error(model: MLP, xs: list[list[float]] = XS, ys: list[float] = YS) -> Value:
    return sum(((model(x) - y) ** 2 for x, y in zip(xs, ys)), Value(0.0))


def fit(model: MLP, steps: int, lr: float = 0.1) -> list[float]:
    """Gradient descent on the squared error over the examples: the loss before each step."""
    losses = []
    for _ in range(steps):
        loss = squared_error(model)
        model.zero_grad()
        loss.backward()
        for p in model.parameters():
            p.data -= lr * p.grad
        losses.append(loss.data)
    return losses


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    p = argparse.ArgumentParser(prog="python -m gpt.micrograd", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--seed", type=int, default=1337)
    args = p.parse_args(argv)
    if args.steps < 1 or not args.lr > 0:
        p.exit(2, "error: --steps must be at least 1 and --lr above 0\n")
    random.seed(args.seed)
    model = MLP(3, [4, 4, 1])
    bar = tqdm(range(args.steps), desc=f"MLP(3, [4, 4, 1]), {len(model.parameters())} parameters")
    for _ in bar:
        bar.set_postfix(loss=f"{fit(model, 1, args.lr)[0]:.4f}")
    print(f"loss {squared_error(model).data:.6f}; predictions", [round(model(x).data, 3) for x in XS], "targets", YS)


if __name__ == "__main__":
    main()
