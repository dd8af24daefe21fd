import asyncio
import math
import threading

import pytest
import torch
from conftest import slow_fixture

import gpt
from gpt.models.model import GPT, GPTConfig
from gpt.models.tokenizer import CharTokenizer
from gpt.posttraining.rl import sample_replies
from gpt.serving.decode import CompiledStep, DecodeBatch
from gpt.serving.engine import Engine, Job
from gpt.serving.generate import LM
from gpt.serving.sampling import Sampler, SamplingParams, StopStrings, Token


@pytest.fixture(scope="module")
def lm(random_model):
    return gpt.load(random_model, device="cpu")


@pytest.mark.parametrize(
    "controls, message",
    [
        (dict(max_new_tokens=-1), "max_new_tokens"),
        (dict(max_new_tokens=2.5), "max_new_tokens"),
        (dict(temperature=-0.1), "temperature"),
        (dict(temperature=math.nan), "temperature"),
        (dict(top_k=-1), "top_k"),
        (dict(top_p=0), "top_p"),
        (dict(top_p=1.5), "top_p"),
        (dict(repetition_penalty=0), "repetition_penalty"),
        (dict(stop=[""]), "stop"),
        (dict(seed="x"), "seed"),
        (dict(temperature="hot"), "temperature"),
    ],
)
def test_bad_controls_raise_value_error(lm, controls, message):
    with pytest.raises(ValueError, match=message):
        lm.generate("ROMEO:", **controls)


def naive_greedy(model, ids, n):
    """Reference without the KV cache: a full forward over the whole sequence at every step."""
    ids = list(ids)
    for _ in range(n):
        logits, _ = model(torch.tensor([ids]))
        ids.append(int(logits[0, -1].argmax()))
    return ids


def test_greedy_matches_full_forward_reference(lm):
    prompt = "JULIET:\n"
    text = lm.generate(prompt, max_new_tokens=20, temperature=0)
    ids = naive_greedy(lm.model, lm.tokenizer.encode(prompt), 20)
    assert text == lm.tokenizer.decode(ids[len(prompt) :])
    assert text == lm.generate(prompt, max_new_tokens=20, temperature=0)


def test_seed_repeats_and_varies(lm):
    a = lm.generate("ROMEO:", max_new_tokens=40, temperature=1.0, seed=7)
    assert a == lm.generate("ROMEO:", max_new_tokens=40, temperature=1.0, seed=7)
    others = {lm.generate("ROMEO:", max_new_tokens=40, temperature=1.0, seed=s) for s in range(8, 12)}
    assert len(others - {a}) >= 3


def test_top_k_one_and_tiny_top_p_are_greedy(lm):
    greedy = lm.generate("NURSE:", max_new_tokens=30, temperature=0)
    assert lm.generate("NURSE:", max_new_tokens=30, temperature=1.5, top_k=1, seed=1) == greedy
    assert lm.generate("NURSE:", max_new_tokens=30, temperature=1.5, top_p=1e-6, seed=1) == greedy


def test_sampler_filters_and_penalty():
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    top2 = Sampler([SamplingParams(temperature=1.0, top_k=2, seed=0)], 4, "cpu")
    assert {int(top2(logits, None)) for _ in range(50)} == {0, 1}
    seen = torch.tensor([[True, False, False, True]])
    penalised = Sampler([SamplingParams(temperature=0, repetition_penalty=10.0)], 4, "cpu")
    assert int(penalised(logits, seen)) == 1  # 2.0 / 10 falls below 1.0
    assert int(penalised(logits, None)) == 0


def test_max_new_tokens_and_finish_reason(lm):
    c = lm.complete("ROMEO:", max_new_tokens=12, temperature=0.8, seed=0)
    assert len("".join(t.text for t in c)) == 12
    assert c.finish_reason == "length" and c.completion_tokens == 12 and c.prompt_tokens == 6
    assert lm.generate("ROMEO:", max_new_tokens=0) == ""


def test_stop_strings_end_before_the_stop(lm):
    full = lm.generate("ROMEO:", max_new_tokens=200, temperature=0)
    stop = full[30:33]
    first = full.find(stop)
    c = lm.complete("ROMEO:", max_new_tokens=200, temperature=0, stop=[stop, "zzzz"])
    assert "".join(t.text for t in c) == full[:first]
    assert c.finish_reason == "stop"


def test_stop_strings_hold_back_partial_matches():
    stops = StopStrings(("ab",))
    out = [stops.feed(Token(i, ch)) for i, ch in enumerate("xaac")]
    assert [[t.text for t in ready] for ready, _ in out] == [["x"], [], ["a"], ["a", "c"]]
    assert stops.feed(Token(9, "a")) == ([], False) and stops.feed(Token(9, "b")) == ([], True)


def test_stream_pieces_join_to_generate_and_close_stops_decoding(lm):
    pieces = list(lm.stream("TYBALT:", max_new_tokens=25, temperature=0))
    assert len(pieces) == 25 and "".join(pieces) == lm.generate("TYBALT:", max_new_tokens=25, temperature=0)
    calls = []
    hook = lm.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        stream = lm.stream("TYBALT:", max_new_tokens=10_000, temperature=1.0, seed=0)
        for _ in range(5):
            next(stream)
        stream.close()
        after_close = len(calls)
        assert after_close <= 7  # prefill + 5 steps (+1 in flight)
        with pytest.raises(StopIteration):
            next(stream)
        assert len(calls) == after_close
    finally:
        hook.remove()


def test_batch_equals_one_by_one(lm):
    prompts = ["ROMEO:", "JULIET:\nThe night", "N"]
    batch = lm.generate_batch(prompts, max_new_tokens=30, temperature=0)
    assert batch == [lm.generate(p, max_new_tokens=30, temperature=0) for p in prompts]
    sampled = lm.generate_batch(prompts, max_new_tokens=30, temperature=1.0, top_k=10, seed=5)
    assert sampled == [
        lm.generate(p, max_new_tokens=30, temperature=1.0, top_k=10, seed=5 + i) for i, p in enumerate(prompts)
    ]


def test_rows_of_one_length_fill_and_refill_in_one_pass_and_write_what_each_writes_alone(lm):
    prompts, n = ["ROMEO:", "JULIET", "Night!"], 3 * lm.block_size  # one length: the rows shift together too
    fills = []  # the rows of each forward pass: decode steps are GPT.decode_step, so these are the cache fills
    hook = lm.model.register_forward_pre_hook(lambda module, args: fills.append(args[0].size(0)))
    try:
        greedy = lm.generate_batch(prompts, max_new_tokens=n, temperature=0)
        sampled = lm.generate_batch(prompts, max_new_tokens=n, temperature=1.0, top_k=10, seed=7)
        batch_fills, fills[:] = list(fills), []
        assert greedy == [lm.generate(p, max_new_tokens=n, temperature=0) for p in prompts]
        assert sampled == [
            lm.generate(p, max_new_tokens=n, temperature=1.0, top_k=10, seed=7 + i) for i, p in enumerate(prompts)
        ]
    finally:
        hook.remove()
    assert len(batch_fills) > 2 and set(batch_fills) == {len(prompts)}  # the prompts, then each shift: one pass
    assert len(fills) == len(prompts) * len(batch_fills)  # alone, each row had a pass of its own


def test_a_burst_fills_each_length_once_and_each_distinct_prompt_once(lm):
    prompts = ["ROMEO:", "N", "JULIET", "ROMEO:", "Night!"]  # three distinct of one length, apart; one repeated
    fills = []
    hook = lm.model.register_forward_pre_hook(lambda module, args: fills.append(args[0].size(0)))
    try:
        sampled = lm.generate_batch(prompts, max_new_tokens=10, temperature=1.0, top_k=10, seed=3)
    finally:
        hook.remove()
    assert fills == [3]  # "N" has no tokens before its last to fill
    assert sampled == [
        lm.generate(p, max_new_tokens=10, temperature=1.0, top_k=10, seed=3 + i) for i, p in enumerate(prompts)
    ]


def test_rl_samples_leave_the_batch_at_their_turn_token_and_write_what_each_writes_alone(lm):
    ids = [lm.tokenizer.encode(p) for p in ("ROMEO:", "JULIET:\nThe night", "N", "ROMEO:")]
    stops = {lm.tokenizer.encode("\n")[0]}
    together = sample_replies(lm.model, ids, [1, 2, 3, 4], 40, stops, temperature=1.0)
    assert together == [
        sample_replies(lm.model, [p], [s], 40, stops, temperature=1.0)[0] for p, s in zip(ids, [1, 2, 3, 4])
    ]
    assert all(len(r) == 40 or (r[-1] in stops and not stops & set(r[:-1])) for r in together)
    assert any(len(r) < 40 for r in together)  # some row left early


def test_long_prompt_and_generation_past_the_context(lm):
    block = lm.block_size
    long_prompt = ("ROMEO:\nThe night is fair and sweet.\n" * 10)[: block * 3]
    text = lm.generate(long_prompt, max_new_tokens=block * 3, temperature=0)
    assert len(text) == block * 3
    tail = lm.generate(long_prompt[-block:], max_new_tokens=block * 3, temperature=0)
    assert text == tail  # only the last block_size prompt tokens count


def test_the_sampled_from_distribution_is_what_the_sampler_draws(lm):
    logits = torch.tensor([[2.0, 1.0, 0.5, -1.0]])
    for params in [dict(top_k=2), dict(top_p=0.6), dict(temperature=0.3), dict(temperature=0)]:
        sampler = Sampler([SamplingParams(**{"temperature": 1.0, **params}, seed=0)], 4, "cpu")
        drawn = sampler.probabilities(logits, None)[0]
        picks = torch.tensor([int(sampler(logits, None)) for _ in range(2000)])
        frequency = torch.bincount(picks, minlength=4) / len(picks)
        assert drawn.sum() == pytest.approx(1.0) and torch.allclose(frequency, drawn, atol=0.04), (params, drawn)
    assert Sampler([SamplingParams(top_k=2)], 4, "cpu").probabilities(logits, None)[0, 2:].sum() == 0


def test_next_token_gives_the_models_distribution_and_the_settings_one(lm):
    c = lm.complete("ROMEO:", max_new_tokens=6, temperature=1.0, seed=3, top_logprobs=1)
    tokens = list(c)
    written = "".join(t.text for t in tokens[:5])
    model, drawn = lm.next_token("ROMEO:" + written, temperature=0.5, top_k=3)
    assert float(model[tokens[5].id].log()) == pytest.approx(tokens[5].logprob, abs=1e-4)
    assert set(drawn.nonzero().flatten().tolist()) == set(model.topk(3).indices.tolist())
    penalised = lm.next_token("ROMEO:" + written, temperature=1.0, repetition_penalty=3.0)[1]
    seen = lm.tokenizer.encode("ROMEO:" + written)
    assert penalised[seen].sum() < model[seen].sum()


def test_top_logprobs_are_the_models_distribution(lm):
    c = lm.complete("ROMEO:", max_new_tokens=5, temperature=0, top_logprobs=3)
    tokens = list(c)
    with torch.no_grad():
        logits, _ = lm.model(torch.tensor([lm.encode_prompt("ROMEO:")]))
    expected = logits[0, -1].log_softmax(-1)
    assert tokens[0].logprob == pytest.approx(float(expected.max()), abs=1e-4)
    assert len(tokens[0].top) == 3 and tokens[0].top[0][0] == tokens[0].text
    assert all(a[1] >= b[1] for a, b in zip(tokens[0].top, tokens[0].top[1:]))


def test_document_model_starts_fresh_items_and_ends_them(names_model):
    lm = gpt.load(names_model, device="cpu")
    names = lm.generate_batch([""] * 20, max_new_tokens=30, temperature=1.0, seed=0)
    finished = [n for n in names if 0 < len(n) < 30]
    assert len(finished) >= 15 and all(n.isalpha() and n.islower() for n in finished)
    c = lm.complete("k", max_new_tokens=30, temperature=0)
    assert list(c) and c.finish_reason == "stop"


def test_empty_prompt_and_unknown_characters(lm):
    assert len(lm.generate("", max_new_tokens=5, temperature=0)) == 5
    with pytest.raises(ValueError, match="'#'"):
        lm.generate("ROMEO# hi", max_new_tokens=5)


def test_vocab_mismatch_is_refused():
    m = GPT(GPTConfig(vocab_size=10, block_size=8, n_layer=1, n_head=1, n_embd=8))
    with pytest.raises(ValueError, match="vocab_size"):
        LM(m, CharTokenizer.from_text("abc"))


@slow_fixture(scope="module")
def compiled_lm(lm):
    """The tiny model again, its decoding compiled (both graphs: one row and several rows)."""
    return LM(lm.model, lm.tokenizer, compile=True)


def test_compiled_decoding_writes_what_uncompiled_decoding_writes(lm, compiled_lm):
    block = lm.block_size
    for controls in (dict(temperature=0), dict(temperature=1.0, top_k=10, seed=3)):  # past the context: shifts too
        assert compiled_lm.generate("ROMEO:", max_new_tokens=3 * block, **controls) == lm.generate(
            "ROMEO:", max_new_tokens=3 * block, **controls
        )
    prompts = ["ROMEO:", "JULIET:\nThe night is fair", "N"]  # rows at different places in one batch
    assert compiled_lm.generate_batch(prompts, max_new_tokens=2 * block, temperature=0) == lm.generate_batch(
        prompts, max_new_tokens=2 * block, temperature=0
    )
    assert compiled_lm.compiled is not None and not compiled_lm.compiled.failed


def test_compiled_step_logits_match_with_rows_joining_and_leaving(lm, compiled_lm):
    batches = [DecodeBatch(lm.model, 4), DecodeBatch(lm.model, 4, compiled_lm.compiled)]
    ids = lm.tokenizer.encode("ROMEO:\nThe night")
    for i, n in enumerate((3, 9, 1, 12)):
        for b in batches:
            b.add([ids[:n]], [SamplingParams(temperature=0)])
            if i == 2:
                b.remove(0)
        (eager, _), (compiled, _) = (b.step(with_logprobs=True) for b in batches)
        assert torch.equal(eager, compiled)
        (_, eager_lp), (_, compiled_lp) = (b.step(with_logprobs=True) for b in batches)
        assert torch.allclose(eager_lp, compiled_lp, atol=1e-4)


@pytest.mark.slow
def test_engine_compiles_every_graph_before_it_serves_and_one_row_runs_its_own_graph():
    from torch._dynamo.utils import counters

    tok = CharTokenizer(list("abcdefghij\n"))  # a shape of its own: no graph compiled by another test fits it
    qwen3 = dict(rotary=True, rms_norm=True, qk_norm=True, mlp="swiglu")  # the modern block compiles as GPT-2's does
    config = GPTConfig(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8, **qwen3)
    lm = LM(GPT(config).eval(), tok, compile=True)
    engine = Engine(lm, max_batch=3)
    engine.close()
    assert len(engine.batch) == 0
    graphs = counters["stats"]["unique_graphs"]
    batch, eager = DecodeBatch(lm.model, 3, lm.compiled), DecodeBatch(lm.model, 3)
    for _ in range(3):  # one row, then two, then three: no new graph, and the uncompiled step's tokens
        for b in (batch, eager):
            b.add([[1, 2, 3, 4]], [SamplingParams(temperature=0)])
        assert torch.equal(batch.step()[0], eager.step()[0])
    assert counters["stats"]["unique_graphs"] == graphs
    ran = []  # which graph each step runs: one row, after several rows, runs the one-row graph (twice as fast)
    for kind in ("one_row", "rows"):
        graph = getattr(lm.compiled, kind)
        setattr(lm.compiled, kind, lambda *args, graph=graph, kind=kind: ran.append(kind) or graph(*args))
    batch.step()
    while len(batch) > 1:
        batch.remove(0)
    batch.step()
    assert ran == ["rows", "one_row"]


def test_the_engine_hands_the_first_token_over_at_once_and_gathers_the_rest(lm):
    """With a long delivery interval the first token arrives alone, then the others and the end in one hand-over."""
    engine = Engine(lm, max_batch=2, delivery_interval=3600)

    async def run():
        job = Job(
            lm.encode_prompt("ROMEO:"), SamplingParams(max_new_tokens=40, temperature=0), 0, asyncio.get_running_loop()
        )
        assert engine.submit([job])
        first = await job.events.get()
        assert job.events.empty()  # nothing else was handed over with it
        second = await job.events.get()
        rest = [job.events.get_nowait() for _ in range(job.events.qsize())]  # arrived together
        return [first, second] + rest

    try:
        items = asyncio.run(run())
        assert items[-1] is None and len(items) == 41
        assert "".join(t.text for t in items[:-1]) == lm.generate("ROMEO:", max_new_tokens=40, temperature=0)
        assert engine.admitted == 0
    finally:
        engine.close()


def test_a_compiler_that_cannot_run_warns_once_and_decoding_goes_on(lm, monkeypatch):
    step = CompiledStep(lm.model)

    def broken(*args):
        raise RuntimeError("no C++ compiler")

    monkeypatch.setattr(step, "one_row", broken)
    fallback = LM(lm.model, lm.tokenizer)
    fallback.compiled = step
    with pytest.warns(UserWarning, match="decoding uncompiled: RuntimeError: no C\\+\\+ compiler"):
        text = fallback.generate("ROMEO:", max_new_tokens=20, temperature=0)
    assert step.failed and text == lm.generate("ROMEO:", max_new_tokens=20, temperature=0)


@pytest.mark.slow
def test_two_compiled_models_of_one_shape_but_their_vocabulary_keep_their_own_graphs():
    torch.manual_seed(0)
    lms = []
    for chars in ("abcdefghij\n", "abcdefghijklm\n"):  # the same cache shape: only the weights tell them apart
        model = GPT(GPTConfig(vocab_size=len(chars), block_size=8, n_layer=1, n_head=2, n_embd=8)).eval()
        lms.append((LM(model, CharTokenizer(list(chars)), compile=True), LM(model, CharTokenizer(list(chars)))))
    for _ in range(2):  # each model after the other has compiled
        for compiled, plain in lms:
            text = compiled.generate("abc", max_new_tokens=30, temperature=1.0, seed=4)
            assert text == plain.generate("abc", max_new_tokens=30, temperature=1.0, seed=4)


def test_a_reader_that_leaves_frees_its_row_within_one_step(lm):
    engine = Engine(lm, max_batch=2)

    async def run():
        job = Job(lm.encode_prompt("ROMEO:"), SamplingParams(max_new_tokens=100_000, temperature=1.0))
        assert engine.submit([job])

        async def read():
            async for _ in job.tokens():
                pass

        reader = asyncio.ensure_future(read())
        while engine.steps < 20:
            await asyncio.sleep(0.01)
        reader.cancel()  # as the app's Stop cancels its handler
        await asyncio.gather(reader, return_exceptions=True)
        left_at = engine.steps
        while engine.decoding:
            await asyncio.sleep(0.001)
        return engine.steps - left_at

    try:
        assert asyncio.run(run()) <= 1 and engine.admitted == 0
    finally:
        engine.close()


def test_closing_the_engine_ends_the_requests_it_holds(lm):
    engine = Engine(lm, max_batch=1)

    async def run():
        params = SamplingParams(max_new_tokens=100_000)
        jobs = [Job(lm.encode_prompt("ROMEO:"), params) for _ in range(3)]  # one decoding, two waiting
        assert engine.submit(jobs)
        while not engine.steps:
            await asyncio.sleep(0.01)
        await asyncio.to_thread(engine.close)
        for job in jobs:
            async for _ in job.tokens():
                pass
        return [job.row.finish_reason for job in jobs]

    assert asyncio.run(asyncio.wait_for(run(), 30)) == ["error"] * 3


def test_the_engine_thread_ends_when_idle_and_a_request_starts_another(lm):
    """An idle engine holds no thread (and so no OpenMP threads: gpt/serving/engine.py); the next request brings
    one back."""
    engine = Engine(lm, max_batch=2, idle_exit=0.1)
    params = SamplingParams(max_new_tokens=20, temperature=0)

    async def one() -> tuple[str, str]:
        job = Job(lm.encode_prompt("ROMEO:"), params)
        assert engine.submit([job])
        name = engine.thread.name
        return "".join([t.text async for t in job.tokens()]), name

    async def run():
        first = await one()
        for _ in range(200):
            if engine.thread is None:
                break
            await asyncio.sleep(0.01)
        idle = engine.thread is None and not any(t.name == "gpt-engine" for t in threading.enumerate())
        return first, idle, await one()

    try:
        (first, name), idle, (again, _) = asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        engine.close()
    assert name == "gpt-engine" and idle
    assert first == again == lm.generate("ROMEO:", max_new_tokens=20, temperature=0)
    assert engine.admitted == 0


def test_run_calls_on_the_engine_thread_between_steps_and_passes_errors_back(lm):
    engine = Engine(lm, max_batch=2)

    async def run():
        job = Job(lm.encode_prompt("ROMEO:"), SamplingParams(max_new_tokens=100_000))
        assert engine.submit([job])
        while engine.steps < 5:
            await asyncio.sleep(0.01)
        where = await engine.run(lambda: (threading.current_thread(), engine.steps))
        with pytest.raises(ZeroDivisionError):
            await engine.run(lambda: 1 / 0)
        steps_before = engine.steps
        while engine.steps < steps_before + 5:  # decoding goes on after a call that failed
            await asyncio.sleep(0.01)
        job.cancelled.set()
        return where

    try:
        (thread, steps) = asyncio.run(asyncio.wait_for(run(), 30))
    finally:
        engine.close()
    assert thread.name == "gpt-engine" and thread is not threading.main_thread() and steps >= 5

    async def after_close():
        return await engine.run(lambda: 1)

    with pytest.raises(RuntimeError, match="stopped"):
        asyncio.run(after_close())


@pytest.mark.slow
def test_a_stream_keeps_its_tokens_when_the_compiled_step_is_swapped_in(lm, compiled_lm):
    """As the app does once its background compile is done: the rows decoding go on through the compiled graphs."""
    batch = DecodeBatch(lm.model, 2, compiled_lm.compiled)
    batch.warm_up()  # both graphs, for a batch of the engine's capacity
    engine = Engine(lm, max_batch=2)
    controls = [dict(max_new_tokens=300, temperature=0), dict(max_new_tokens=300, temperature=1.0, top_k=10, seed=5)]

    async def run():
        jobs = [Job(lm.encode_prompt("ROMEO:"), SamplingParams(**c)) for c in controls]
        assert engine.submit(jobs)
        while engine.steps < 50:
            await asyncio.sleep(0.001)
        assert not engine.compiled
        engine.use_compiled(compiled_lm.compiled)
        texts = []
        for job in jobs:
            texts.append([t.text async for t in job.tokens()])
        return texts, engine.steps

    try:
        texts, steps = asyncio.run(run())
    finally:
        engine.close()
    assert ["".join(t) for t in texts] == [lm.generate("ROMEO:", **c) for c in controls]
    assert engine.compiled and steps == 300 and not compiled_lm.compiled.failed
