"""Training on several processes: torchrun with DistributedDataParallel on this CPU (gloo), as users scale out."""

import json

import pytest

import gpt

pytestmark = pytest.mark.slow
SHAPE = "--n-layer 1 --n-head 2 --n-embd 32 --block-size 32 --warmup-steps 5 --lr-decay-steps 20 --dropout 0"
RUN = f"{SHAPE} --eval-interval 10 --eval-steps 2 --threads 1 --lr 3e-3".split()
TORCHRUN = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "-m", "gpt.train"]


def curve(folder) -> list[tuple[int, float, float]]:
    return [
        (e["step"], e["train_loss"], e["val_loss"]) for e in json.loads((folder / "metrics.json").read_text())["curve"]
    ]


def test_two_processes_learn_what_one_does_at_the_same_global_batch_and_resume(cli, play_file, tmp_path):
    """2 processes at batch 4 draw the global batch of 8 alike and take halves: the losses of one process at batch 8
    (to float rounding: 1e-4), with rank 0 alone writing the folder; stopped at step 10 and resumed, the same."""
    data = ["--data", str(play_file)]
    one = cli("-m", "gpt.train", *data, *RUN, "--batch-size", "8", "--max-steps", "20", "--out", str(tmp_path / "one"))
    assert one.returncode == 0, one.stderr
    two = tmp_path / "two"
    first = cli(*TORCHRUN, *data, *RUN, "--batch-size", "4", "--max-steps", "10", "--out", str(two))
    assert first.returncode == 0, first.stderr[-3000:]
    again = cli(*TORCHRUN, "--resume", "--max-steps", "20", "--out", str(two))
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("best val loss") == 1  # only rank 0 reports
    ours, theirs = curve(two), curve(tmp_path / "one")
    assert [s for s, _, _ in ours] == [s for s, _, _ in theirs] == [0, 10, 20]
    for (_, train_a, val_a), (_, train_b, val_b) in zip(ours, theirs):
        assert abs(train_a - train_b) < 1e-4 and abs(val_a - val_b) < 1e-4, (ours, theirs)
    run = json.loads((two / "metrics.json").read_text())["run"]
    assert run["world_size"] == 2 and run["resumed_with"] and run["tokens_seen"] == 20 * 8 * 32
    assert gpt.load(two, device="cpu").generate("ROMEO:", max_new_tokens=5, temperature=0)
    assert sorted(p.name for p in two.iterdir() if p.name.endswith(".safetensors")) == ["model.safetensors"]
    assert not list(two.glob(".*")), "a write left behind"
