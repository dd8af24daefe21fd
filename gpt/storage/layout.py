"""How a GPT is laid out in its folder: as one of transformers' own architectures wherever its block is one, so that
the same files serve this library, transformers, the Hub, vLLM and llama.cpp.

- GPT-2's block -> GPT2LMHeadModel: config.json has GPT2Config's fields (n_positions = our block_size, exact GELU,
  the head tied unless tie_word_embeddings is false) plus our `bias` flag; model.safetensors has the attention and
  MLP weights transposed (GPT-2's Conv1D is the transpose of nn.Linear), zero biases where a model has none (GPT-2
  always has them) and a tied head stored once.
- the modern block (rotary positions, RMS norm, a SwiGLU MLP, no biases) -> LlamaForCausalLM, and with QK-norm
  Qwen3ForCausalLM: the fused query-key-value and gate-up products are split into transformers' separate ones.
- any other mix of the switches (an ablation: squared ReLU, or RMS norm with learnt positions) -> this library's own
  config (GPTConfig's fields, no model_type) and state dict: such a folder loads here only.
"""

from dataclasses import asdict

import torch

from gpt.models.model import GPT, RMS_EPS, ROPE_THETA, GPTConfig
from gpt.storage.folder_checks import ModelFileError

ARCHITECTURES = {"gpt2": "GPT2LMHeadModel", "llama": "LlamaForCausalLM", "qwen3": "Qwen3ForCausalLM"}
REWARD_ARCHITECTURES = {  # a GPT with a one-score head (gpt/posttraining/reward.py), by family; None: this library's
    "gpt2": "GPT2ForSequenceClassification",
    "llama": "LlamaForSequenceClassification",
    "qwen3": "Qwen3ForSequenceClassification",
    None: "GPTForSequenceClassification",
}
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")  # stored transposed
BIASES = ("ln_1.bias", "ln_2.bias", "attn.c_attn.bias", "attn.c_proj.bias", "mlp.c_fc.bias", "mlp.c_proj.bias")
HF_BUFFERS = (".attn.bias", ".attn.masked_bias")  # causal-mask buffers older transformers versions saved
GPT2_SWITCHES = {"rotary": False, "rms_norm": False, "qk_norm": False, "mlp": "gelu"}  # GPT-2's block: none on
RENAMED = [  # this library's names -> Llama's and Qwen3's, part by part
    ("transformer.wte.", "model.embed_tokens."),
    ("transformer.ln_f.", "model.norm."),
    ("transformer.h.", "model.layers."),
    (".ln_1.", ".input_layernorm."),
    (".ln_2.", ".post_attention_layernorm."),
    (".attn.c_proj.", ".self_attn.o_proj."),
    (".attn.q_norm.", ".self_attn.q_norm."),
    (".attn.k_norm.", ".self_attn.k_norm."),
    (".mlp.c_proj.", ".mlp.down_proj."),
]
SPLIT = {  # one fused product here, its parts there (in this order along the output rows)
    ".attn.c_attn.weight": (".self_attn.q_proj.weight", ".self_attn.k_proj.weight", ".self_attn.v_proj.weight"),
    ".mlp.c_fc.weight": (".mlp.gate_proj.weight", ".mlp.up_proj.weight"),
}


def family(config: GPTConfig) -> str | None:
    """The transformers architecture a GPT's block is (gpt2, llama or qwen3), or None: this library's own."""
    if config.rotary and config.rms_norm and config.mlp == "swiglu" and not config.bias:
        return "qwen3" if config.qk_norm else "llama"
    if not (config.rotary or config.rms_norm or config.qk_norm) and config.mlp == "gelu":
        return "gpt2"
    return None


def gpt_config_json(config: GPTConfig, boundary_id: int | None, end_id: int | None, dtype: str) -> dict:
    """config.json of a GPT: its family's, as transformers writes it, or this library's own fields."""
    kind = family(config)
    ends = {"bos_token_id": boundary_id, "eos_token_id": end_id, "dtype": dtype}
    if kind is None:
        return {**asdict(config), **ends}
    if kind == "gpt2":
        return {
            "architectures": [ARCHITECTURES[kind]],
            "model_type": kind,
            "vocab_size": config.vocab_size,
            "n_positions": config.block_size,
            "n_embd": config.n_embd,
            "n_layer": config.n_layer,
            "n_head": config.n_head,
            "activation_function": "gelu",
            "resid_pdrop": config.dropout,
            "embd_pdrop": config.dropout,
            "attn_pdrop": 0.0,  # the attention weights get no dropout (gpt/models/model.py)
            "layer_norm_epsilon": 1e-5,
            "tie_word_embeddings": config.tie_embeddings,
            **ends,
            "bias": config.bias,
        }
    return {
        "architectures": [ARCHITECTURES[kind]],
        "model_type": kind,
        "vocab_size": config.vocab_size,
        "max_position_embeddings": config.block_size,
        "hidden_size": config.n_embd,
        "intermediate_size": config.mlp_hidden,
        "num_hidden_layers": config.n_layer,
        "num_attention_heads": config.n_head,
        "num_key_value_heads": config.n_head,
        "head_dim": config.head_size,
        "hidden_act": "silu",
        "rms_norm_eps": RMS_EPS,
        "rope_theta": ROPE_THETA,  # older readers' key (llama.cpp's converter, vLLM); transformers 5 reads the next
        "rope_parameters": {"rope_type": "default", "rope_theta": ROPE_THETA},
        "attention_bias": False,
        "attention_dropout": 0.0,
        "mlp_bias": False,
        "tie_word_embeddings": config.tie_embeddings,
        "dropout": config.dropout,  # training's, kept for a fine-tune (transformers ignores it)
        **ends,
    }


def parse_gpt_config(data: dict, source: str) -> tuple[GPTConfig, str | None]:
    """The GPTConfig of a config.json and its family (None: this library's own fields, the first format's too)."""
    kind = data.get("model_type")
    if kind == "gpt2":
        if data.get("activation_function", "gelu_new") != "gelu" or data.get("n_inner") not in (
            None,
            4 * data.get("n_embd", 0),
        ):
            raise ModelFileError(
                f"{source}: config.json describes a GPT-2 variant this library does not run "
                "(it needs activation_function 'gelu' and n_inner 4 * n_embd)"
            )
        fields = {
            "vocab_size": data.get("vocab_size"),
            "block_size": data.get("n_positions"),
            "n_layer": data.get("n_layer"),
            "n_head": data.get("n_head"),
            "n_embd": data.get("n_embd"),
            "dropout": data.get("resid_pdrop", 0.0),
            "bias": data.get("bias", True),
            "tie_embeddings": data.get("tie_word_embeddings", True),
            **GPT2_SWITCHES,
        }
    elif kind in ("llama", "qwen3"):
        fields = {
            "vocab_size": data.get("vocab_size"),
            "block_size": data.get("max_position_embeddings"),
            "n_layer": data.get("num_hidden_layers"),
            "n_head": data.get("num_attention_heads"),
            "n_embd": data.get("hidden_size"),
            "dropout": data.get("dropout", 0.0),
            "bias": False,
            "tie_embeddings": data.get("tie_word_embeddings", False),
            "rotary": True,
            "rms_norm": True,
            "qk_norm": kind == "qwen3",
            "mlp": "swiglu",
        }
    elif kind is not None:
        raise ModelFileError(f"{source}: config.json is a {kind!r} model; this library runs gpt2, llama and qwen3 ones")
    else:  # this library's own fields; the switches came later, so a first-format folder has none
        fields = {k: data[k] for k in GPTConfig.__dataclass_fields__ if k in data}
        fields = {"tie_embeddings": True, **GPT2_SWITCHES} | fields
    missing = [k for k, v in fields.items() if v is None] or [
        k for k in GPTConfig.__dataclass_fields__ if k not in fields
    ]
    if missing:
        raise ModelFileError(f"{source}: config.json lacks {', '.join(missing)}")
    config = GPTConfig(**fields)
    if kind in ("llama", "qwen3"):
        check_variant(data, config, source)
    return config, kind


def check_variant(data: dict, config: GPTConfig, source: str) -> None:
    """A Llama or Qwen3 config.json describes the block this library builds: full attention heads, SwiGLU of our
    width, our rotation base and norm epsilon, no biases (the types and ranges are checked later)."""
    try:
        width = config.mlp_hidden
        head = config.n_embd // config.n_head
    except (TypeError, ZeroDivisionError):
        return
    rope = data.get("rope_parameters") or {"rope_type": "default", "rope_theta": data.get("rope_theta", ROPE_THETA)}
    wanted = {
        "hidden_act": ("silu", data.get("hidden_act")),
        "num_key_value_heads": (config.n_head, data.get("num_key_value_heads", config.n_head)),
        "head_dim": (head, data.get("head_dim", head)),
        "intermediate_size": (width, data.get("intermediate_size")),
        "rms_norm_eps": (RMS_EPS, data.get("rms_norm_eps")),
        "rope_theta": (ROPE_THETA, rope.get("rope_theta") if isinstance(rope, dict) else rope),
        "rope_type": ("default", rope.get("rope_type") if isinstance(rope, dict) else rope),
        "attention_bias": (False, data.get("attention_bias", False)),
        "mlp_bias": (False, data.get("mlp_bias", False)),
    }
    wrong = [f"{k} {found!r} (needs {need!r})" for k, (need, found) in wanted.items() if found != need]
    if wrong:
        raise ModelFileError(
            f"{source}: config.json describes a {data['model_type']} variant this library does not run: {wrong[0]}"
        )


def stored_tensors(model: GPT, kind: str | None) -> dict[str, torch.Tensor]:
    """The model's tensors as a folder of this family stores them (shapes alone work on the meta device too)."""
    state = dict(model.state_dict())
    if model.config.tie_embeddings:
        del state["lm_head.weight"]  # it is the token embedding
    if kind == "gpt2":
        tensors = {name: value.t() if name.endswith(CONV1D) else value for name, value in state.items()}
        c, like = model.config, model.transformer.wte.weight
        sizes = {"attn.c_attn.bias": 3 * c.n_embd, "mlp.c_fc.bias": 4 * c.n_embd}
        for i in range(c.n_layer):
            for name in BIASES:
                tensors.setdefault(f"transformer.h.{i}.{name}", like.new_zeros(sizes.get(name, c.n_embd)))
        tensors.setdefault("transformer.ln_f.bias", like.new_zeros(c.n_embd))
    elif kind in ("llama", "qwen3"):
        tensors = {}
        for name, value in state.items():
            parts = their_names(name)
            tensors.update(zip(parts, value.chunk(len(parts))))
    else:
        tensors = state
    return {k: v.contiguous() for k, v in tensors.items()}


def from_stored(tensors: dict[str, torch.Tensor], config: GPTConfig, kind: str | None, source: str) -> dict:
    """A folder's tensors (already checked against the model's names and shapes) as the model's state dict."""
    state = {}
    if kind == "gpt2":
        for name, value in tensors.items():
            if name.endswith(HF_BUFFERS) or (name == "lm_head.weight" and config.tie_embeddings):
                continue
            if name.endswith(".bias") and not config.bias:
                if value.any():
                    raise ModelFileError(f"{source}: {name} is not zero but config.json says bias is false")
                continue
            state[name] = value.t() if name.endswith(CONV1D) else value
    elif kind in ("llama", "qwen3"):
        with torch.device("meta"):
            names = GPT(config).state_dict().keys()
        for name in names:
            parts = their_names(name)
            if name == "lm_head.weight" and config.tie_embeddings:
                continue
            if any(part not in tensors for part in parts):
                raise ModelFileError(f"{source}: model.safetensors lacks {parts[0]}")
            state[name] = torch.cat([tensors[part] for part in parts])
    else:  # this library's own layout; a tied head may be stored under either name
        state = {**tensors, "lm_head.weight": tensors.get("lm_head.weight", tensors.get("transformer.wte.weight"))}
        state.setdefault("transformer.wte.weight", state["lm_head.weight"])
    if config.tie_embeddings:
        state["lm_head.weight"] = state.get("transformer.wte.weight")
    return state


def their_names(name: str) -> tuple[str, ...]:
    """The Llama/Qwen3 tensors one of this library's tensors is stored as (two or three for a fused product)."""
    for fused, parts in SPLIT.items():
        if name.endswith(fused):
            prefix = their_names(name.removesuffix(fused) + ".")[0].removesuffix(".")
            return tuple(prefix + part for part in parts)
    for ours, theirs in RENAMED:
        name = name.replace(ours, theirs)
    return (name,)
