"""Atomic writes: every file a user keeps (a model folder, the resume state, data, feedback) is written aside, flushed
and renamed into place, so a reader never sees half a file and a run killed at any moment loses nothing it saved."""

import errno
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import save_file


def file_mode() -> int:
    """Permissions a plain open() would give (temporary files are private by default)."""
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def temp_path(path: Path) -> Path:
    """The one temporary name used for writing `path`: a run killed mid-write leaves at most this, reused next time."""
    return path.with_name(f".{path.name}.tmp")


def save_tensors(tensors: dict[str, torch.Tensor], path: Path, metadata: dict[str, str]) -> None:
    """safetensors' save_file, whose failures (a full disk) are raised as the OSError they are."""
    try:
        save_file(tensors, str(path), metadata=metadata)
    except SafetensorError as e:
        full = "space" in str(e).lower()
        reason = os.strerror(errno.ENOSPC) if full else str(e)
        raise OSError(errno.ENOSPC if full else errno.EIO, reason, str(path)) from None


def write_atomic(path: Path, write: Callable[[Path], None]) -> None:
    """write(tmp_path) beside the target, flushed to disk, then renamed over it: a reader never sees half a file."""
    tmp = temp_path(path)
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def fresh_dir(path: Path) -> Path:
    """An empty folder at path, replacing whatever an interrupted run left there."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path
