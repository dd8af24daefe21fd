"""The optimizers and the learning-rate schedule every run shares: AdamW or Muon, warmup then cosine or
warmup-stable-decay, and one step of backward, clip and update."""

import math

import torch
from torch.optim._muon import _adjust_lr  # torch's rate scale per matrix shape

from gpt.models.window import Model
from gpt.training.config import TrainConfig


def learning_rate(step: int, c: TrainConfig) -> float:
    """Linear warmup, then cosine decay (or stable, then linear decay) to min_lr at lr_decay_steps, then flat.

    wsd's decay caps the warmup (the lower of the two), so a run whose end was brought forward (a time budget on a
    slower machine) still ends decayed."""
    decay_steps = c.lr_decay_steps or c.max_steps
    warm = c.lr * (step + 1) / (c.warmup_steps + 1) if step < c.warmup_steps else c.lr
    if c.schedule == "wsd":
        decay_start = decay_steps - max(1, round(c.decay_fraction * decay_steps))
        done = min(1.0, max(0, step - decay_start) / (decay_steps - decay_start))
        return min(warm, c.min_lr + (c.lr - c.min_lr) * (1 - done))
    if step < c.warmup_steps:
        return warm
    if step >= decay_steps:
        return c.min_lr
    ratio = (step - c.warmup_steps) / max(1, decay_steps - c.warmup_steps)
    return c.min_lr + 0.5 * (1.0 + math.cos(math.pi * ratio)) * (c.lr - c.min_lr)


def make_optimizers(model: Model, c: TrainConfig, fused: bool) -> dict[str, torch.optim.Optimizer]:
    """AdamW (decay on matrices only), or Muon for the blocks' matrices with AdamW for embeddings and gains.

    Each group keeps its peak rate as "peak_lr"; the schedule scales every group by the same factor.
    """
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    hidden = [p for n, p in named if c.optimizer == "muon" and n.startswith("transformer.h.") and p.dim() == 2]
    ids = {id(p) for p in hidden}
    rest = [p for _, p in named if id(p) not in ids]
    groups = [
        {"params": [p for p in rest if p.dim() >= 2], "weight_decay": c.weight_decay, "peak_lr": c.lr},
        {"params": [p for p in rest if p.dim() < 2], "weight_decay": 0.0, "peak_lr": c.lr},
    ]
    optimizers = {"adamw": torch.optim.AdamW(groups, lr=c.lr, betas=(c.beta1, c.beta2), fused=fused)}
    if hidden:
        muon_groups = [{"params": hidden, "peak_lr": c.muon_lr}]
        optimizers["muon"] = Muon(
            muon_groups, lr=c.muon_lr, weight_decay=c.weight_decay, adjust_lr_fn="match_rms_adamw"
        )
    return optimizers


class Muon(torch.optim.Muon):
    """torch's Muon, its state and settings, with the orthogonalisation in float32 on a CPU: torch's runs in bfloat16,
    which a CPU without bfloat16 arithmetic (AVX2 alone) emulates, and that took most of a small model's step."""

    @torch.no_grad()
    def step(self, closure=None):
        if any(p.device.type != "cpu" for group in self.param_groups for p in group["params"]):
            return super().step(closure)
        for group in self.param_groups:
            params, grads, buffers = [], [], []
            self._init_group(group, params, grads, buffers)
            lr, momentum = group["lr"], group["momentum"]
            for p, grad, buffer in zip(params, grads, buffers):
                buffer.lerp_(grad, 1 - momentum)
                update = grad.lerp(buffer, momentum) if group["nesterov"] else buffer
                update = orthogonalised(update, group["ns_coefficients"], group["ns_steps"], group["eps"])
                p.mul_(1 - lr * group["weight_decay"])
                p.add_(update, alpha=-_adjust_lr(lr, group["adjust_lr_fn"], p.shape))


def orthogonalised(g: torch.Tensor, coefficients: tuple[float, float, float], steps: int, eps: float) -> torch.Tensor:
    """Newton-Schulz's quintic iteration towards the nearest orthogonal matrix, as torch's Muon runs it."""
    a, b, c = coefficients
    x = g.float().T if g.size(0) > g.size(1) else g.float()
    x = x / x.norm().clamp(min=eps)
    for _ in range(steps):
        gram = x @ x.T
        x = torch.addmm(x, torch.addmm(gram, gram, gram, beta=b, alpha=c), x, beta=a)
    return x.T if g.size(0) > g.size(1) else x


def optimizer_step(trained, optimizers: dict, scaler, ctx, x: torch.Tensor, y: torch.Tensor, clip: float):
    """Forward, backward, clip and step every optimizer: the batch's loss."""
    with ctx:
        _, loss = trained(x, y)
    return apply_gradients(trained, optimizers, scaler, loss, clip)


def apply_gradients(trained, optimizers: dict, scaler, loss: torch.Tensor, clip: float) -> torch.Tensor:
    """Backward from a loss, clip and step every optimizer: the loss."""
    scaler.scale(loss).backward()
    if clip:
        for optimizer in optimizers.values():
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trained.parameters(), clip)
    for optimizer in optimizers.values():
        scaler.step(optimizer)
    scaler.update()
    for optimizer in optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    return loss
