"""Every GPT folder is also a transformers model (GPT-2, Llama or Qwen3 by its block): same tokens, same logits, same
greedy text, no remote code."""

import json
from pathlib import Path

import pytest
import torch

import gpt
from gpt.models.model import GPT, GPTConfig
from gpt.models.tokenizer import CharTokenizer
from gpt.storage.folder import save_folder

pytestmark = pytest.mark.slow  # the slow tier: trains, serves or starts processes

transformers = pytest.importorskip("transformers")
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bias_model(tmp_path_factory, play_file):
    """A model with biases (random weights): GPT-2's biases must carry over, not just zeros."""
    text = play_file.read_text()
    tokenizer = CharTokenizer.from_text(text)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32, bias=True))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    out = tmp_path_factory.mktemp("models") / "bias"
    save_folder(model, tokenizer, out)
    return out


def random_folder(root, play_file, name: str, **switches) -> Path:
    """A model of random weights (std 0.2: far from the initialisation's near-uniform logits) with these switches."""
    tokenizer = CharTokenizer.from_text(play_file.read_text())
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=tokenizer.vocab_size, block_size=48, n_layer=2, n_head=2, n_embd=32, **switches)
    model = GPT(config)
    for p in model.parameters():
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.2)  # norms' gains about one
    save_folder(model, tokenizer, root / name)
    return root / name


MODERN = dict(rotary=True, rms_norm=True, mlp="swiglu")


@pytest.fixture(scope="module")
def llama_model(tmp_path_factory, play_file):
    return random_folder(tmp_path_factory.mktemp("models"), play_file, "llama", **MODERN)


@pytest.fixture(scope="module")
def qwen3_model(tmp_path_factory, play_file):
    return random_folder(
        tmp_path_factory.mktemp("models"), play_file, "qwen3", qk_norm=True, tie_embeddings=False, **MODERN
    )


FOLDERS = ["tiny_model", "names_model", "bias_model", "bpe_model", "llama_model", "qwen3_model"]


@pytest.mark.parametrize(
    "which, architecture", [("llama_model", "LlamaForCausalLM"), ("qwen3_model", "Qwen3ForCausalLM")]
)
def test_the_modern_block_is_written_as_its_transformers_family(request, which, architecture):
    folder = request.getfixturevalue(which)
    assert json.loads((folder / "config.json").read_text())["architectures"] == [architecture]
    assert f"`transformers`' {architecture.split('For')[0]}" in (folder / "README.md").read_text()


def test_a_block_no_family_has_loads_here_alone(tmp_path, play_file):
    folder = random_folder(tmp_path, play_file, "mix", rotary=True, mlp="relu2")
    config = json.loads((folder / "config.json").read_text())
    assert "model_type" not in config and config["mlp"] == "relu2" and config["rotary"] is True
    lm = gpt.load(folder, device="cpu")
    ids = torch.tensor([lm.tokenizer.encode("ROMEO:\nWhat, ho!")])
    torch.manual_seed(0)
    model = GPT(lm.model.config)
    for p in model.parameters():
        torch.nn.init.normal_(p, mean=1.0 if p.dim() == 1 else 0.0, std=0.2)
    assert torch.equal(lm.model(ids)[0], model.eval()(ids)[0])  # every weight back where it was
    assert "only it loads it" in (folder / "README.md").read_text()


def a_prompt(lm, greedy: bool = False) -> str:
    if lm.tokenizer.documents:
        return "an" if greedy else "emma"
    if lm.tokenizer.kind != "character":
        return "Un café 🙂" if greedy else "Un café naïve — “日本” 🙂 ✓ Ελ"  # ✓ and Greek: bytes it never saw
    return "JULIET:\n" if greedy else "ROMEO:\nWhat, ho! 'Tis so."


def hf(folder):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder).eval()
    return model, transformers.AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("which", FOLDERS)
def test_same_tokens_and_logits(request, which):
    folder = request.getfixturevalue(which)
    lm = gpt.load(folder, device="cpu")
    model, tokenizer = hf(folder)
    assert type(model).__name__ == {"llama_model": "LlamaForCausalLM", "qwen3_model": "Qwen3ForCausalLM"}.get(
        which, "GPT2LMHeadModel"
    )
    prompt = a_prompt(lm)
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    assert ids[0].tolist() == lm.encode_prompt(prompt)
    with torch.no_grad():
        difference = (model(ids).logits - lm.model(ids)[0]).abs().max().item()
    assert difference <= 1e-4


@pytest.mark.parametrize("which", FOLDERS)
def test_same_greedy_text(request, which):
    folder = request.getfixturevalue(which)
    lm = gpt.load(folder, device="cpu")
    model, tokenizer = hf(folder)
    prompt = a_prompt(lm, greedy=True)
    room = lm.block_size - len(lm.encode_prompt(prompt))
    inputs = tokenizer(prompt, return_tensors="pt")  # with its attention mask: the pad id is a real character here
    out = model.generate(**inputs, max_new_tokens=room, do_sample=False, pad_token_id=0)
    theirs = tokenizer.decode(out[0, inputs.input_ids.size(1) :], skip_special_tokens=True)
    ours = lm.generate(prompt, max_new_tokens=room, temperature=0)
    assert theirs.removesuffix("\ufffd") == ours  # a character cut by the limit: theirs marks it, ours holds it back


def test_pipeline_text_generation(tiny_model):
    generate = transformers.pipeline("text-generation", model=str(tiny_model))
    text = generate("ROMEO:", max_new_tokens=20, do_sample=False)[0]["generated_text"]
    assert text == "ROMEO:" + gpt.load(tiny_model, device="cpu").generate("ROMEO:", max_new_tokens=20, temperature=0)


def test_tokenizer_round_trips_every_character(tiny_model, play_file):
    tokenizer = transformers.AutoTokenizer.from_pretrained(tiny_model)
    ours = CharTokenizer.load(tiny_model)
    text = play_file.read_text()[:3000] + "".join(ours.chars) + "  \n\n \t"[: 0 if "\t" not in ours.chars else 6]
    ids = tokenizer(text).input_ids
    assert ids == ours.encode(text)
    assert tokenizer.decode(ids) == text


def test_document_boundary_round_trips(names_model):
    tokenizer = transformers.AutoTokenizer.from_pretrained(names_model)
    assert tokenizer.bos_token == tokenizer.eos_token == "\n" and tokenizer.eos_token_id == 0
    ids = tokenizer("emma").input_ids
    assert ids[0] == 0 and tokenizer.decode(ids, skip_special_tokens=True) == "emma"
    assert tokenizer.decode(ids) == "\nemma"


def test_a_pushed_repo_loads_in_transformers_by_repo_id(hub, tiny_model, monkeypatch):
    from gpt.storage.hub import push

    monkeypatch.setenv("HF_TOKEN", "hf_local_test_token")
    push(tiny_model, "alice/for-transformers")
    model = transformers.AutoModelForCausalLM.from_pretrained("alice/for-transformers").eval()
    tokenizer = transformers.AutoTokenizer.from_pretrained("alice/for-transformers")
    lm = gpt.load("alice/for-transformers", device="cpu")
    ids = tokenizer("ROMEO:", return_tensors="pt").input_ids
    with torch.no_grad():
        assert (model(ids).logits - lm.model(ids)[0]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("name", ["shakespeare-char", "names", "names-assistant"])
def test_shipped_folders_load_in_transformers(name):
    folder = ROOT / "weights" / name
    lm = gpt.load(folder, device="cpu")
    model, tokenizer = hf(folder)
    prompt = {"shakespeare-char": "ROMEO:", "names": "em"}.get(name, "<|user|>A name that has 5 letters.\n<|end|>")
    ids = tokenizer(prompt, return_tensors="pt").input_ids
    with torch.no_grad():
        assert (model(ids).logits - lm.model(ids)[0]).abs().max().item() <= 1e-4


def first_format_folder(root, play_file):
    """A folder as the first version of this library wrote it: flat config, nn.Linear layout, {"type": "char"}."""
    import json

    from safetensors.torch import save_model

    chars = sorted(set(play_file.read_text()))
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=len(chars), block_size=32, n_layer=2, n_head=2, n_embd=32))
    folder = root / "old"
    folder.mkdir()
    save_model(model, str(folder / "model.safetensors"))
    (folder / "config.json").write_text(json.dumps(vars(model.config)))
    (folder / "tokenizer.json").write_text(
        json.dumps({"type": "char", "version": 1, "documents": False, "chars": chars})
    )
    return folder, model


def test_first_format_folders_load_and_upgrade_in_one_command(tmp_path, play_file, cli):
    folder, model = first_format_folder(tmp_path, play_file)
    ids = torch.tensor([gpt.load(folder, device="cpu").encode_prompt("ROMEO:")])
    with torch.no_grad():
        expected = model(ids)[0]
        assert torch.equal(gpt.load(folder, device="cpu").model(ids)[0], expected)
    r = cli("-m", "gpt.folder", "upgrade", str(folder))
    assert r.returncode == 0 and "upgraded" in r.stdout, r.stderr
    hf_model, _ = hf(folder)
    with torch.no_grad():
        assert (hf_model(ids).logits - expected).abs().max().item() <= 1e-4
        assert torch.equal(gpt.load(folder, device="cpu").model(ids)[0], expected)
    assert "already" in cli("-m", "gpt.folder", "upgrade", str(folder)).stdout


@pytest.mark.parametrize("which", ["tiny_model", "names_model"])
def test_ctranslate2_decodes_a_converted_folder_as_gpt_load_does(request, which, tmp_path, cli):
    """`python -m gpt.folder ctranslate2` (CTranslate2's converter plus the special tokens it needs) gives a model
    whose greedy continuation is ours, token for token."""
    ctranslate2 = pytest.importorskip("ctranslate2")
    folder = request.getfixturevalue(which)
    r = cli("-m", "gpt.folder", "ctranslate2", str(folder), str(tmp_path / "ct2"))
    assert r.returncode == 0, r.stderr
    lm = gpt.load(folder, device="cpu")
    generator = ctranslate2.Generator(str(tmp_path / "ct2"), device="cpu", intra_threads=1)
    vocabulary = json.loads((tmp_path / "ct2" / "vocabulary.json").read_text())
    compared = 0
    for text in ["", "jo", "mar", *"aeijklmnorsy"] if lm.tokenizer.documents else ["ROMEO:"]:
        prompt = lm.encode_prompt(text)
        room = lm.block_size - len(prompt)
        result = generator.generate_batch(
            [[vocabulary[i] for i in prompt]],
            max_length=room,
            min_length=room,
            sampling_topk=1,
            include_prompt_in_result=False,
            end_token=[],
        )
        theirs = result[0].sequences_ids[0]
        if lm.tokenizer.boundary_id in theirs:  # a document ends there: ours stops, theirs (no end token) goes on
            theirs = theirs[: theirs.index(lm.tokenizer.boundary_id)]
        assert lm.tokenizer.decode(theirs) == lm.generate(text, max_new_tokens=room, temperature=0)
        compared += len(theirs)
    assert compared > 10


def test_only_gpt_folders_convert_for_ctranslate2(tmp_path, cli):
    folder = ROOT / "weights" / "names-mlp"
    r = cli("-m", "gpt.folder", "ctranslate2", str(folder), str(tmp_path / "ct2"))
    assert r.returncode == 1
    assert r.stderr.splitlines() == [f"error: {folder}: not a GPT model folder (only GPTs convert)"]
    assert not (tmp_path / "ct2").exists()
