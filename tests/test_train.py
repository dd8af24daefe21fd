import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

import gpt
from gpt.storage.card import RECIPE
from gpt.training.config import PRESET_ABOUT, PRESETS, TrainConfig, build_parser
from gpt.training.optim import learning_rate
from gpt.training.train import resolve_settings

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

ROOT = Path(__file__).resolve().parents[1]


def curve(folder: Path) -> list[dict]:
    return [
        {k: c[k] for k in ("step", "train_loss", "val_loss")}
        for c in json.loads((folder / "metrics.json").read_text())["curve"]
    ]


def test_training_writes_a_model_folder_that_learns(tiny_model):
    for name in ["config.json", "model.safetensors", "tokenizer.json", "README.md", "metrics.json", "loss.png"]:
        assert (tiny_model / name).is_file(), name
    metrics = json.loads((tiny_model / "metrics.json").read_text())
    points = metrics["curve"]
    assert [p["step"] for p in points] == [0, 50, 100, 150]
    assert points[-1]["val_loss"] < points[0]["val_loss"] - 1.0
    assert metrics["run"]["best_val_loss"] == min(p["val_loss"] for p in points)
    assert all(p["tokens_per_s"] > 0 for p in points[1:]) and points[-1]["lr"] > 0
    card = (tiny_model / "README.md").read_text()
    assert card.startswith("---\n") and "pipeline_tag: text-generation" in card and "python -m gpt.train" in card
    assert not list(tiny_model.glob(".saving-*"))


def test_cli_progress_and_final_line(tmp_path, play_file, cli, tiny_args):
    out = tmp_path / "m"
    r = cli(
        "-m",
        "gpt.train",
        "--data",
        str(play_file),
        "--out",
        str(out),
        *tiny_args,
        *"--max-steps 20 --eval-interval 10 --eval-steps 2".split(),
    )
    assert r.returncode == 0, r.stderr
    assert "tok_s=" in r.stderr and "20/20" in r.stderr  # tqdm bar with throughput
    note = r.stderr.splitlines()[0]  # before the first step: what was read and what will be trained
    assert note.startswith("training on play.txt: ") and "training tokens (character" in note and "parameters" in note
    last = r.stdout.strip().splitlines()[-1]
    assert last.startswith("best val loss ") and "tokens seen 10,240" in last and "wall time" in last


RECIPES = {
    "adamw-cosine": [],
    "muon-wsd": ["--optimizer", "muon", "--schedule", "wsd", "--decay-fraction", "0.3"],
    "adamw-ema": ["--ema", "0.8"],  # the moving average is restored too, or the curve after resume would differ
    "qwen3-block": "--optimizer muon --rotary --rms-norm --qk-norm --mlp swiglu --untied-head".split(),
}


@pytest.mark.parametrize("recipe", RECIPES)
def test_resume_gives_the_same_losses_as_an_uninterrupted_run(tmp_path, play_file, tiny_args, recipe):
    common = [
        "--data",
        str(play_file),
        *tiny_args,
        *"--eval-interval 5 --eval-steps 2 --dropout 0.1".split(),
        *RECIPES[recipe],
    ]
    gpt.training.train.main([*common, "--out", str(tmp_path / "full"), "--max-steps", "20"])
    gpt.training.train.main([*common, "--out", str(tmp_path / "split"), "--max-steps", "10", "--lr-decay-steps", "20"])
    assert curve(tmp_path / "split")[-1]["step"] == 10
    gpt.training.train.main(["--out", str(tmp_path / "split"), "--resume", "--max-steps", "20"])
    assert curve(tmp_path / "split") == curve(tmp_path / "full")
    run = json.loads((tmp_path / "split" / "metrics.json").read_text())["run"]
    assert "--max-steps 10" in run["command"] and run["resumed_with"] == [
        "python -m gpt.train --out split --resume --max-steps 20"  # no machine's folders in a record
    ]
    assert "Continued by exact resume with:" in (tmp_path / "split" / "README.md").read_text()
    state = tmp_path / "split" / "checkpoint"
    assert sorted(p.name for p in state.iterdir()) == ["state-20.safetensors", "state.json"]


def test_compiled_training_follows_eager_training_and_saves_the_plain_model(tmp_path, play_file, tiny_args):
    """--compile (here the modern block, whose norms, rotation and SwiGLU it fuses) learns what eager training learns,
    and the folder holds the model's own tensor names (a compiled module's would be prefixed), which loaders read."""
    from safetensors import safe_open
    from torch import _dynamo
    from torch._dynamo.utils import counters

    common = ["--data", str(play_file), *tiny_args, *RECIPES["qwen3-block"], "--dropout", "0.1"]
    common += "--max-steps 20 --eval-interval 10 --eval-steps 2 --lr 3e-3".split()
    gpt.training.train.main([*common, "--out", str(tmp_path / "eager")])
    counters.clear()
    try:
        gpt.training.train.main([*common, "--out", str(tmp_path / "compiled"), "--compile"])
        assert counters["stats"]["unique_graphs"] >= 2  # training's graph and evaluation's: it did compile
    finally:
        _dynamo.reset()  # the worker's other tests run eagerly
    eager, compiled = curve(tmp_path / "eager"), curve(tmp_path / "compiled")
    assert [p["step"] for p in compiled] == [p["step"] for p in eager] == [0, 10, 20]
    for e, c in zip(eager, compiled):
        assert c["train_loss"] == pytest.approx(e["train_loss"], abs=2e-3)
        assert c["val_loss"] == pytest.approx(e["val_loss"], abs=2e-3)
    assert eager[-1]["val_loss"] < eager[0]["val_loss"] - 0.1  # it learnt something to compare
    names = []
    for folder in ("eager", "compiled"):
        with safe_open(tmp_path / folder / "model.safetensors", "pt") as f:
            names.append(sorted(f.keys()))
    assert names[0] == names[1]
    run = json.loads((tmp_path / "compiled" / "metrics.json").read_text())["run"]
    assert run["settings"]["compile"] is True


def test_each_stop_signal_saves_state_and_resume_goes_on(tmp_path, play_file, cli, tiny_args):
    """Ctrl-C (INT), kill (TERM) and a closed terminal (HUP), each sent to the run the last one resumed."""
    out = tmp_path / "m"
    first = ["--data", str(play_file), *tiny_args, "--eval-interval", "50"]
    step = 0
    for sig, args in ((signal.SIGINT, first), (signal.SIGTERM, ["--resume"]), (signal.SIGHUP, ["--resume"])):
        command = [sys.executable, "-m", "gpt.train", "--out", str(out), "--max-steps", "100000", *args]
        proc = subprocess.Popen(command, cwd=ROOT, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        state = out / "checkpoint" / "state.json"
        deadline = time.time() + 120
        while not (state.exists() and json.loads(state.read_text())["step"] > step) and time.time() < deadline:
            time.sleep(0.2)
        proc.send_signal(sig)
        stdout, stderr = proc.communicate(timeout=60)
        assert proc.returncode == 0, stderr
        assert "interrupted at step" in stdout and "--resume" in stdout, sig
        assert json.loads(state.read_text())["step"] > step, sig
        step = json.loads(state.read_text())["step"]
    r = cli("-m", "gpt.train", "--out", str(out), "--resume", "--max-steps", str(step + 10))
    assert r.returncode == 0, r.stderr
    assert json.loads(state.read_text())["step"] == step + 10


def checkpoint_is_consistent(out: Path) -> int:
    """The step of a checkpoint whose JSON and tensors agree; at most the write that was cut short is left over."""
    from safetensors import safe_open

    folder = out / "checkpoint"
    meta = json.loads((folder / "state.json").read_text())
    with safe_open(str(folder / meta["tensors"]), "pt") as f:
        assert f.metadata()["step"] == str(meta["step"])
    leftovers = sorted(p.name for p in folder.iterdir() if p.name not in ("state.json", meta["tensors"]))
    temporary = all(p.endswith(".tmp") or p.startswith((".tmp", "state-")) for p in leftovers)  # ours or safetensors'
    assert len(leftovers) <= 2 and temporary, leftovers
    return meta["step"]


def test_kill_9_at_random_moments_leaves_a_consistent_checkpoint_and_folder(tmp_path, play_file, tiny_args):
    """A checkpoint every step, so most kills land in or near a write; each time the run resumes from what is left."""
    import random

    out = tmp_path / "m"
    common = ["--out", str(out), "--max-steps", "100000", "--eval-interval", "1", "--eval-steps", "1"]
    rng = random.Random(0)
    steps = []
    for attempt in range(5):
        args = ["--resume"] if attempt else ["--data", str(play_file), *tiny_args, "--n-embd", "128"]
        proc = subprocess.Popen(
            [sys.executable, "-m", "gpt.train", *args, *common],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        start = steps[-1] if steps else -1
        while time.time() < deadline:
            try:
                if json.loads((out / "checkpoint" / "state.json").read_text())["step"] > start:
                    break
            except (OSError, ValueError, KeyError):
                pass
            time.sleep(0.05)
        time.sleep(rng.uniform(0, 0.5))
        proc.kill()
        proc.wait(timeout=30)
        steps.append(checkpoint_is_consistent(out))
        lm = gpt.load(out, device="cpu")  # the model folder is whole
        assert lm.generate("ROMEO:", max_new_tokens=5, temperature=0)
        fixed_names = {".saving", ".metrics.json.tmp", ".README.md.tmp", ".loss.png.tmp"}  # reused: cannot pile up
        assert {p.name for p in out.iterdir() if p.name.startswith(".")} <= fixed_names
    assert steps == sorted(steps) and steps[-1] > steps[0]


@pytest.mark.parametrize("damage", ["truncate", "drop", "other-step"])
def test_a_damaged_checkpoint_is_refused_in_one_line(tmp_path, play_file, damage, cli, tiny_args):
    out = tmp_path / "m"
    gpt.training.train.main(
        [
            "--data",
            str(play_file),
            "--out",
            str(out),
            *tiny_args,
            *"--max-steps 4 --eval-interval 2 --eval-steps 1".split(),
        ]
    )
    folder = out / "checkpoint"
    meta = json.loads((folder / "state.json").read_text())
    tensors = folder / meta["tensors"]
    if damage == "truncate":
        tensors.write_bytes(tensors.read_bytes()[:1000])
    elif damage == "drop":
        tensors.unlink()
    else:
        (folder / "state.json").write_text(json.dumps({**meta, "step": 2}))
    r = cli("-m", "gpt.train", "--out", str(out), "--resume", "--max-steps", "8")
    lines = r.stderr.strip().splitlines()
    assert r.returncode != 0 and len(lines) == 1 and "Traceback" not in r.stderr
    assert "without --resume" in lines[0]


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "missing.txt"], "no such file"),
        ([], "--data is required"),
        (["--n-embd", "30", "--n-head", "4"], "divisible"),
        (["--max-steps", "0"], "--max-steps must be at least 1"),
        (["--resume"], "nothing to resume"),
        (["--block-size", "4000"], "too short"),
        (["--out", "README.md"], "is a file: give a folder"),
        (["--arch", "mlp", "--rotary"], "switches are for --arch gpt"),
        (["--rotary", "--n-embd", "24", "--n-head", "8"], "--rotary needs an even head size"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(tmp_path, play_file, args, message, refused):
    if "--data" not in args and "--resume" not in args and args:
        args = ["--data", str(play_file), *args]
    r = refused("-m", "gpt.train", "--out", str(tmp_path / "x"), *args)
    assert r.returncode != 0
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "Traceback" not in r.stderr


def test_preset_fills_defaults_and_flags_override():
    s = resolve_settings(build_parser().parse_args(["--out", "x", "--data", "d", "--preset", "shakespeare-char"]))
    assert s.n_layer == PRESETS["shakespeare-char"]["n_layer"] and s.dropout == PRESETS["shakespeare-char"]["dropout"]
    s = resolve_settings(
        build_parser().parse_args(["--out", "x", "--data", "d", "--preset", "shakespeare-char", "--n-layer", "2"])
    )
    assert s.n_layer == 2 and s.n_embd == PRESETS["shakespeare-char"]["n_embd"]


def test_muon_recipe_learns_and_saves_a_loadable_folder(tmp_path, play_file, tiny_args):
    out = tmp_path / "muon"
    gpt.training.train.main(
        [
            "--data",
            str(play_file),
            "--out",
            str(out),
            *tiny_args,
            *"--max-steps 60 --eval-interval 30 --eval-steps 4".split(),
            *RECIPES["muon-wsd"],
        ]
    )
    losses = [c["val_loss"] for c in curve(out)]
    assert losses[-1] < losses[0] - 0.5
    assert gpt.load(out, device="cpu").generate("ROMEO:", max_new_tokens=5, temperature=0)


def test_ema_is_what_is_evaluated_and_saved(tmp_path, play_file, tiny_args):
    common = ["--data", str(play_file), *tiny_args, "--max-steps", "20", "--eval-interval", "10", "--eval-steps", "2"]
    gpt.training.train.main([*common, "--out", str(tmp_path / "plain")])
    gpt.training.train.main([*common, "--out", str(tmp_path / "ema"), "--ema", "0.9"])
    plain, ema = curve(tmp_path / "plain"), curve(tmp_path / "ema")
    assert plain[0] == ema[0] and plain[-1]["val_loss"] != ema[-1]["val_loss"]  # same start, averaged weights after
    lm = gpt.load(tmp_path / "ema", device="cpu")
    assert lm.generate("a", max_new_tokens=5, temperature=0)
    assert (
        "ema=0.9" in (tmp_path / "ema" / "README.md").read_text()
        and "ema=" not in (tmp_path / "plain" / "README.md").read_text()
    )


def test_a_run_killed_between_a_checkpoint_and_its_evaluation_resumes_to_the_same_curve_and_model(
    tmp_path, play_file, tiny_args, monkeypatch
):
    """The clock's checkpoint at step 20 is written before step 20 is evaluated; a kill in between must not lose the
    evaluation (its curve entry, and at the last step the final best model)."""
    import gpt.training.run

    common = ["--data", str(play_file), *tiny_args, *"--eval-interval 10 --eval-steps 2 --max-steps 20".split()]
    gpt.training.train.main([*common, "--out", str(tmp_path / "full")])
    real = gpt.training.run.Run.evaluate

    def killed_at_20(self, step, *rest):
        if step == 20:
            raise SystemExit("killed")
        return real(self, step, *rest)

    with monkeypatch.context() as m:
        m.setattr(gpt.training.run.Run, "evaluate", killed_at_20)
        with pytest.raises(SystemExit):
            gpt.training.train.main([*common, "--out", str(tmp_path / "split"), "--checkpoint-minutes", "0"])
    assert json.loads((tmp_path / "split" / "checkpoint" / "state.json").read_text())["step"] == 20
    gpt.training.train.main(["--out", str(tmp_path / "split"), "--resume"])
    assert curve(tmp_path / "split") == curve(tmp_path / "full") and curve(tmp_path / "full")[-1]["step"] == 20
    weights = [(tmp_path / d / "model.safetensors").read_bytes() for d in ("full", "split")]
    assert weights[0] == weights[1]


def test_resume_state_is_saved_by_the_clock_between_evaluations(tmp_path, play_file, tiny_args, monkeypatch):
    saved = []
    real = gpt.training.run.save_checkpoint
    monkeypatch.setattr(
        gpt.training.run,
        "save_checkpoint",
        lambda out, m, o, meta, *rest: saved.append(meta["step"]) or real(out, m, o, meta, *rest),
    )
    gpt.training.train.main(
        [
            "--data",
            str(play_file),
            "--out",
            str(tmp_path / "m"),
            *tiny_args,
            *"--max-steps 30 --eval-interval 1000 --eval-steps 1 --checkpoint-minutes 0".split(),
        ]
    )
    assert saved == [0, 10, 20, 30, 30]  # evaluations at 0 and 30, the clock at every 10th step


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_a_preset_learns_and_its_card_states_its_recipe(tmp_path, play_file, names_file, preset):
    """Each preset, shrunk to a few seconds (shape and steps overridden), lowers the loss; the card gives the rest."""
    out = tmp_path / preset
    small = [
        *"--n-layer 2 --n-head 2 --n-embd 48 --block-size 32 --batch-size 16 --max-steps 60 --warmup-steps".split(),
        *"5 --eval-interval 30 --eval-steps 4".split(),
    ]
    data = names_file if PRESETS[preset].get("docs") else play_file
    gpt.training.train.main(["--data", str(data), "--out", str(out), "--preset", preset, *small])
    losses = [c["val_loss"] for c in curve(out)]
    assert losses[-1] < losses[0]
    card = (out / "README.md").read_text()
    overridden = {"n_layer", "n_head", "n_embd", "block_size", "batch_size", "max_steps", "warmup_steps"}
    for key, value in PRESETS[preset].items():
        if key in RECIPE and key not in overridden:
            assert f"{key}={value}" in card, (key, value)
    assert f"--preset {preset}" in card


def test_wsd_schedule():
    s = TrainConfig(data="d", lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110, schedule="wsd", decay_fraction=0.2)
    assert learning_rate(5, s) == pytest.approx(6 / 11) and learning_rate(50, s) == 1.0 and learning_rate(88, s) == 1.0
    assert learning_rate(99, s) == pytest.approx(0.55) and learning_rate(110, s) == 0.1


def test_learning_rate_schedule():
    s = TrainConfig(data="d", lr=1.0, min_lr=0.1, warmup_steps=10, max_steps=110)
    assert learning_rate(0, s) == pytest.approx(1 / 11)
    assert learning_rate(10, s) == pytest.approx(1.0)
    assert learning_rate(60, s) == pytest.approx(0.55)
    assert learning_rate(110, s) == pytest.approx(0.1) and learning_rate(500, s) == 0.1


def test_help_explains_every_flag(cli):
    r = cli("-m", "gpt.train", "--help")
    for action in build_parser()._actions:
        assert action.help, action.dest
    assert r.returncode == 0 and "--max-steps" in r.stdout and "preset" in r.stdout
    assert "(default: None)" not in r.stdout  # an unset flag says nothing of a default
    squashed = "".join(r.stdout.split())  # argparse wraps lines, at hyphens too
    assert all("".join(f"{name}:{about}".split()) in squashed for name, about in PRESET_ABOUT.items())


def test_eval_cli_prints_the_cards_figure(tiny_model, play_file, names_model, names_file, cli):
    r = cli("-m", "gpt.eval", str(tiny_model), "--data", str(play_file))
    assert r.returncode == 0, r.stderr
    figure = r.stdout.split()[2]
    assert f"**{figure}**" in (tiny_model / "README.md").read_text()
    assert json.loads((tiny_model / "metrics.json").read_text())["run"]["exact_val_loss"] == pytest.approx(
        float(figure), abs=1e-4
    )
    r = cli("-m", "gpt.eval", str(names_model), "--data", str(names_file), "--docs")
    assert r.returncode == 0 and float(r.stdout.split()[2]) < 3
    r = cli("-m", "gpt.eval", str(names_model), "--data", str(names_file))
    assert r.returncode != 0 and "add --docs" in r.stderr and "Traceback" not in r.stderr


def test_track_logs_the_run_to_trackio_locally(cli, play_file, tiny_args, tmp_path):
    """--track PROJECT: the settings, each evaluation's losses and the bar's loss, rate and tokens/s, in trackio's
    local store (read back through trackio itself)."""
    pytest.importorskip("trackio")
    env = {"TRACKIO_DIR": str(tmp_path / "trackio")}
    steps = "--max-steps 20 --eval-interval 10 --eval-steps 2".split()
    out = tmp_path / "tracked"
    r = cli("-m", "gpt.train", "--data", str(play_file), "--out", str(out), *tiny_args, *steps, "--track", "p", env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    read = (
        "import json, trackio; s = trackio.SQLiteStorage; "
        "print(json.dumps([s.get_logs('p', 'tracked'), s.get_run_config('p', 'tracked')]))"
    )
    logs, config = json.loads(cli("-c", read, env=env).stdout.strip().splitlines()[-1])
    curve = json.loads((out / "metrics.json").read_text())["curve"]
    evaluated = {e["step"]: e["val_loss"] for e in logs if "val_loss" in e}
    assert evaluated == {e["step"]: pytest.approx(e["val_loss"]) for e in curve}
    bar = [e for e in logs if "loss" in e]
    assert [e["step"] for e in bar] == [10, 20] and all(e["lr"] > 0 and e["tokens_per_s"] > 0 for e in bar)
    assert config["max_steps"] == 20 and config["data"] == play_file.name
