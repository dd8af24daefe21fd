import pytest
import torch

from gpt.training.data import DataError, load_dataset, read_text, split_documents, split_text


def test_bad_files_are_clear_errors(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        read_text(tmp_path / "missing.txt")
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "short.txt").write_text("x" * 300)
    with pytest.raises(DataError, match="too short"):
        load_dataset(tmp_path / "short.txt", block_size=64, documents=False)


def test_running_text_split_is_last_tenth():
    text = "".join(chr(97 + i % 26) for i in range(1000))
    train, val = split_text(text)
    assert train + val == text and len(val) == 100


def test_document_split_is_every_tenth_line():
    lines = [f"name{i}" for i in range(30)]
    train, val = split_documents("\n".join(lines) + "\n")
    assert val == ["name9", "name19", "name29"]
    assert len(train) == 27


def test_text_batches_are_shifted_windows(play_file):
    tok, train, val = load_dataset(play_file, block_size=32, documents=False)
    x, y = train.sample(4, torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (4, 32)
    assert torch.equal(x[:, 1:], y[:, :-1])
    again, _ = train.sample(4, torch.Generator().manual_seed(0))
    assert torch.equal(x, again)


def test_document_batches_start_and_end_at_the_boundary(names_file):
    tok, train, val = load_dataset(names_file, block_size=16, documents=True)
    x, y = val.sample(8, torch.Generator().manual_seed(0))
    assert (x[:, 0] == tok.boundary_id).all()
    for xs, ys in zip(x.tolist(), y.tolist()):
        n = ys.index(-1) if -1 in ys else len(ys)
        assert ys[n - 1] == tok.boundary_id  # the item ends with the boundary, then padding
        assert xs[1:n] == ys[: n - 1]
        assert all(t == -1 for t in ys[n:])
