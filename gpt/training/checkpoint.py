"""Resume state of a training run, in OUT/checkpoint/: safetensors for the tensors, JSON for everything else.

Tensors go to state-STEP.safetensors, the rest to state.json, which names that file. Writing the tensors first and
then state.json (each atomically) makes state.json the commit point: whenever a run is killed, state.json and the file
it names are from the same step. Older tensor files are removed after the commit.
"""

import json
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file
from torch.optim.swa_utils import AveragedModel

from gpt.models.window import Model
from gpt.storage.atomic import save_tensors, write_atomic


def read_checkpoint_meta(out: Path) -> dict:
    path = out / "checkpoint" / "state.json"
    if not path.is_file():
        raise ValueError(f"{path} not found: nothing to resume in {out} (train without --resume first)")
    try:
        return json.loads(path.read_text())
    except ValueError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): train again without --resume") from None


def tidy_checkpoint(folder: Path, keep: str | None) -> None:
    """Remove tensor files other than `keep` and any temporary file an interrupted write left behind.

    ".*.tmp" are ours (write_atomic); ".tmp*" are safetensors' own, which writes through a temporary file too.
    """
    for f in [*folder.glob("state-*.safetensors"), *folder.glob(".*.tmp"), *folder.glob(".tmp*")]:
        if f.name != keep:
            f.unlink(missing_ok=True)


def once(prefix: str, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A state dict's tensors under a prefix, a tied head left out (it is the token embedding, stored once)."""
    kept, seen = {}, set()
    for k, v in state.items():
        if not (k.endswith("lm_head.weight") and v.data_ptr() in seen):
            kept[prefix + k] = v
        seen.add(v.data_ptr())
    return kept


def tie(state: dict[str, torch.Tensor], expected) -> dict[str, torch.Tensor]:
    """A stored state with each tied head the model expects restored as its token embedding."""
    for k in expected:
        if k.endswith("lm_head.weight") and k not in state:
            state[k] = state.get(k.replace("lm_head.weight", "transformer.wte.weight"))
    return state


def save_checkpoint(
    out: Path,
    model: Model,
    optimizers: dict,
    meta: dict,
    rng: dict[str, torch.Tensor],
    averaged: AveragedModel | None = None,
) -> None:
    tensors = once("model.", model.state_dict())
    if averaged is not None:
        tensors.update(once("ema.", averaged.state_dict()))
    param_groups = {}
    for kind, optimizer in optimizers.items():
        opt = optimizer.state_dict()
        param_groups[kind] = opt["param_groups"]
        for i, state in opt["state"].items():
            for name, value in state.items():
                tensors[f"optimizer.{kind}.{i}.{name}"] = value
    tensors.update({f"rng.{k}": v for k, v in rng.items()})
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    name = f"state-{meta['step']}.safetensors"
    meta = {**meta, "param_groups": param_groups, "tensors": name}
    folder = out / "checkpoint"
    folder.mkdir(parents=True, exist_ok=True)
    write_atomic(folder / name, lambda p: save_tensors(tensors, p, {"step": str(meta["step"])}))
    write_atomic(folder / "state.json", lambda p: p.write_text(json.dumps(meta, indent=1)))
    tidy_checkpoint(folder, keep=name)


def load_checkpoint(
    out: Path, model: Model, optimizers: dict, averaged: AveragedModel | None = None
) -> tuple[dict, dict[str, torch.Tensor]]:
    meta = read_checkpoint_meta(out)
    path = out / "checkpoint" / meta.get("tensors", "state.safetensors")
    restart = "restore the checkpoint folder or train again without --resume"
    try:
        with safe_open(str(path), "pt") as f:
            step = (f.metadata() or {}).get("step")
        tensors = load_file(str(path))
    except (SafetensorError, OSError) as e:
        raise ValueError(f"{path} is missing, unreadable or truncated ({e}): {restart}") from None
    if step is not None and step != str(meta["step"]):
        raise ValueError(f"{path} holds step {step} but state.json step {meta['step']}: {restart}")
    weights = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[len("ema.") :]: v for k, v in tensors.items() if k.startswith("ema.")}
    weights = tie(weights, model.state_dict())
    ema = tie(ema, averaged.state_dict()) if ema and averaged is not None else ema
    groups = meta["param_groups"]
    groups = {"adamw": groups} if isinstance(groups, list) else groups  # the first format had AdamW alone
    states: dict[str, dict[int, dict]] = {kind: {} for kind in groups}
    for key, value in tensors.items():
        if key.startswith("optimizer."):
            rest = key.split(".", 1)[1]
            rest = f"adamw.{rest}" if rest.split(".", 1)[0].isdigit() else rest
            kind, i, name = rest.split(".", 2)
            states.setdefault(kind, {}).setdefault(int(i), {})[name] = value
    try:
        model.load_state_dict(weights, strict=True)
        if bool(ema) != (averaged is not None):
            raise ValueError(f"it was saved {'with' if ema else 'without'} --ema")
        if averaged is not None:
            averaged.load_state_dict(ema, strict=True)
        if set(groups) != set(optimizers):
            raise ValueError(f"it was saved with {', '.join(groups)}, this run uses {', '.join(optimizers)}")
        for kind, optimizer in optimizers.items():
            optimizer.load_state_dict({"state": states[kind], "param_groups": groups[kind]})
    except (RuntimeError, ValueError, KeyError, TypeError) as e:
        reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e).__name__
        raise ValueError(f"{path} does not match this run's model or optimizer ({reason}): {restart}") from None
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    return meta, rng
