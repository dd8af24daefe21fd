"""Muon with its orthogonalisation in float32 on a CPU takes torch's Muon's steps and keeps its state."""

import torch

from gpt.training.optim import Muon

SHAPES = [(64, 16), (16, 64), (32, 32)]


def muons():
    torch.manual_seed(0)
    ours = [torch.nn.Parameter(torch.randn(s)) for s in SHAPES]
    theirs = [torch.nn.Parameter(p.detach().clone()) for p in ours]
    settings = dict(lr=0.02, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    return ours, theirs, Muon(ours, **settings), torch.optim.Muon(theirs, **settings)


def test_muon_on_a_cpu_takes_torchs_steps_to_bfloat16s_precision():
    ours, theirs, a, b = muons()
    start = [p.detach().clone() for p in ours]
    for _ in range(5):
        for p, q in zip(ours, theirs):
            p.grad = torch.randn(p.shape)
            q.grad = p.grad.clone()
        a.step()
        b.step()
    for p, q, p0 in zip(ours, theirs, start):  # torch's runs in bfloat16 (8 bits of mantissa), ours in float32
        assert (p - q).norm() < 0.02 * (q - p0).norm() and not torch.equal(p, q)


def test_a_checkpoint_of_torchs_muon_resumes_in_ours():
    ours, theirs, a, b = muons()
    for p, q in zip(ours, theirs):
        p.grad = q.grad = torch.ones(p.shape)
    a.step()
    b.step()
    saved = b.state_dict()
    assert a.state_dict()["state"][0].keys() == saved["state"][0].keys()
    a.load_state_dict(saved)
    assert torch.equal(a.state[ours[0]]["momentum_buffer"], b.state[theirs[0]]["momentum_buffer"])
