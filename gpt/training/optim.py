"""The optimizers and the learning-rate schedule every run shares: AdamW or Muon, warmup then cosine or
warmup-stable-decay, and one step of backward, clip and update."""

import math

import torch

from gpt.models.window import Model
from gpt.training.config import TrainConfig


def learning_rate(step: int, c: TrainConfig) -> float:
    """Linear warmup, then cosine decay (or stable, then linear decay) to min_lr at lr_decay_steps, then flat."""
    decay_steps = c.lr_decay_steps or c.max_steps
    if step < c.warmup_steps:
        return c.lr * (step + 1) / (c.warmup_steps + 1)
    if step >= decay_steps:
        return c.min_lr
    if c.schedule == "wsd":
        decay_start = decay_steps - max(1, round(c.decay_fraction * decay_steps))
        return c.lr - (c.lr - c.min_lr) * max(0, step - decay_start) / (decay_steps - decay_start)
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
        optimizers["muon"] = torch.optim.Muon(
            muon_groups, lr=c.muon_lr, weight_decay=c.weight_decay, adjust_lr_fn="match_rms_adamw"
        )
    return optimizers


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
