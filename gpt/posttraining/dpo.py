"""Direct preference optimisation of a chat model (`--dpo PAIRS.jsonl`): towards the chosen replies, away from the
rejected, measured against the frozen model it started from.

loss = -log sigmoid(beta * [(log p(chosen) - log p_start(chosen)) - (log p(rejected) - log p_start(rejected))]),
each log p summed over the reply's tokens only (its text and end of turn, never the prompt), as TRL's DPOTrainer.
beta * (log p - log p_start) is a reply's implicit reward: the held-out pairs' accuracy (the chosen reply's is
higher) and mean margin are what the run reports, as TRL logs rewards/accuracies and rewards/margins. A loss that
stays at log 2 = 0.693 separates nothing. What the tuning forgot shows as the pre-training loss before and after,
on the validation split of --text when it is given.
"""

import torch
from torch.nn import functional as F

from gpt.posttraining.reward import PairRun
from gpt.posttraining.rl import token_logprobs
from gpt.serving.generate import LM
from gpt.storage.folder import load_model
from gpt.training.data import read_text
from gpt.training.eval import validation_loss


def reply_logprobs(model, prompts: list[list[int]], replies: list[list[int]], batch_size: int = 64) -> torch.Tensor:
    """log p of each whole reply after its prompt (B,), the sum over its tokens."""
    out = []
    for i in range(0, len(prompts), batch_size):
        logp, mask = token_logprobs(model, prompts[i : i + batch_size], replies[i : i + batch_size])
        out.append((logp * mask).sum(1))
    return torch.cat(out)


def dpo_loss(logp: torch.Tensor, ref_logp: torch.Tensor, beta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """logp, ref_logp: (2n,) whole-reply log-probabilities, the n chosen replies then the n rejected ones. The mean
    loss and each pair's implicit reward margin (chosen minus rejected)."""
    rewards = beta * (logp - ref_logp)
    n = len(rewards) // 2
    margin = rewards[:n] - rewards[n:]
    return -F.logsigmoid(margin).mean(), margin


class DPORun(PairRun):
    """A DPO run: the Run's loop and saves, a step on pairs, the held-out pairs' loss as its validation loss."""

    def __init__(self, *args):
        super().__init__(*args)
        self.reference = load_model(self.base, name=self.c.init_from).to(self.device).eval().requires_grad_(False)
        with torch.no_grad():  # the frozen model's side of every held-out pair, once
            self.val_ref = reply_logprobs(self.reference, *self.val_data.batch(list(range(len(self.val_data)))))

    def step(self, step: int) -> tuple[dict, float, int]:
        c, data = self.c, self.train_data
        lr = self.set_rate(step)
        picks = self.draw(c.batch_size, len(data))
        prompts, replies = data.batch(picks)
        with self.ctx:
            logp = reply_logprobs(self.trained, prompts, replies, batch_size=len(prompts))
            with torch.no_grad():
                ref = reply_logprobs(self.reference, prompts, replies, batch_size=len(prompts))
        loss, margin = dpo_loss(logp, ref, c.beta)
        if c.rpo_alpha:  # the chosen replies (the first half) by their own loss per token, as TRL's rpo_alpha
            chosen = replies[: len(replies) // 2]
            loss = loss - c.rpo_alpha * logp[: len(chosen)].sum() / sum(map(len, chosen))
        tokens = sum(len(p) + len(r) for p, r in zip(prompts, replies))
        return self.learn(loss, margin, tokens), lr, tokens

    @torch.no_grad()
    def held_out(self, model) -> dict:
        logp = reply_logprobs(model, *self.val_data.batch(list(range(len(self.val_data)))))
        loss, margin = dpo_loss(logp, self.val_ref, self.c.beta)
        return {"loss": loss.item(), "accuracy": (margin > 0).float().mean().item(), "margin": margin.mean().item()}

    def final_figures(self, lm: LM) -> dict:
        """The held-out pairs' figures for the best model, and the pre-training loss before and after (--text)."""
        figures = {"val_pairs": len(self.val_data), **{f"val_{k}": v for k, v in self.held_out(lm.model).items()}}
        if self.c.text:
            text = read_text(self.c.text)
            figures["pretraining_val_loss"] = validation_loss(lm, text)[0]
            figures["start_pretraining_val_loss"] = validation_loss(LM(self.reference.cpu(), lm.tokenizer), text)[0]
        return figures
