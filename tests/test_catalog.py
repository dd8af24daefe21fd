"""The catalog's background compile: a compiled step is swapped in only when it measured faster, and it says so."""

import pytest

import gpt
import gpt.serving.catalog
from gpt.serving.catalog import Catalog


def compile_with_rates(lm, monkeypatch, capsys, compiled: float, uncompiled: float) -> tuple[bool, str]:
    """Whether the engine decodes compiled after the catalog's compile measured these one-stream rates, and its log."""
    rates = iter([compiled, uncompiled])
    monkeypatch.setattr(gpt.serving.catalog, "one_stream_rate", lambda batch: next(rates))
    monkeypatch.setattr(gpt.serving.catalog, "CompiledStep", lambda model: type("Step", (), {"failed": False})())
    monkeypatch.setattr(gpt.serving.catalog.DecodeBatch, "warm_up", lambda self: None)
    catalog = Catalog("play")
    served = catalog.put("play", lm)
    try:
        catalog._compile(served)
        return served.engine.compiled, capsys.readouterr().out
    finally:
        catalog.close()


def test_a_compiled_step_that_measured_slower_is_not_swapped_in(random_model, monkeypatch, capsys):
    lm = gpt.load(random_model, device="cpu")
    compiled, log = compile_with_rates(lm, monkeypatch, capsys, compiled=7.0, uncompiled=15.0)
    assert not compiled and "kept uncompiled" in log and "7 tok/s" in log and "uncompiled 15" in log


def test_a_compiled_step_that_measured_faster_is_swapped_in(random_model, monkeypatch, capsys):
    lm = gpt.load(random_model, device="cpu")
    compiled, log = compile_with_rates(lm, monkeypatch, capsys, compiled=30.0, uncompiled=15.0)
    assert compiled and "decoding compiled" in log


def test_a_model_whose_kv_cache_would_not_fit_is_refused_before_it_is_allocated(tmp_path):
    """A context of 65,536 inside the loader's limits: the engine's cache for 16 rows would be 4.3 GB. Refused in
    one line that says what would fit, before the engine (and its cache) is made."""
    from gpt.models.model import GPT, GPTConfig
    from gpt.models.tokenizer import CharTokenizer
    from gpt.serving.catalog import ModelTooLarge
    from gpt.storage.folder import save_folder

    tokenizer = CharTokenizer(list("abc"))
    folder = tmp_path / "long"
    save_folder(GPT(GPTConfig(vocab_size=3, block_size=65536, n_layer=8, n_head=2, n_embd=64)), tokenizer, folder)
    catalog = Catalog.from_settings(str(folder), None, None)
    try:
        with pytest.raises(ModelTooLarge, match=r"long: serving it takes 4\.\d GB .*16 rows.*--max-batch"):
            catalog.get("long")
        assert catalog.loaded("long") is None
    finally:
        catalog.close()
