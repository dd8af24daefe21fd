"""The Ladder tab: micrograd's graph and a network stepped by hand, the makemore ladder on names (each rung's size,
loss and samples), and the post-training rung (one request answered by each stage of the names assistant)."""

import asyncio
import html
import os
import random

import gradio as gr

from gpt.models.micrograd import MLP, fit, squared_error
from gpt.posttraining.names_task import base_prompt
from gpt.posttraining.names_task import parse as parse_request
from gpt.serving.catalog import Served
from gpt.serving.chat import chat_prompt
from gpt.serving.generate import LM
from gpt.serving.sampling import SamplingParams
from gpt.storage.folder import read_metrics
from gpt.ui.context import SEED_RULE, SEEDS, VALID, Context, logged, parse_seed, submit, text_of
from gpt.ui.figures import ladder_figure, micrograd_graph, micrograd_view

LADDER_SAMPLES = 6
RUNGS = {  # what each rung adds over the one before, by the ladder's architecture column
    "bigram": "A table of next-character scores read by the character before: counting pairs, learned by gradient "
    "descent.",
    "gpt (scalar engine)": "The transformer, trained one number at a time by micrograd's engine in pure Python: "
    "attention lets each character look back at every one before it.",
    "mlp": "Embeddings of the last 3 characters through a hidden layer with BatchNorm: context beyond one "
    "character, and characters that behave alike get alike vectors.",
    "wavenet": "8 characters fused two at a time in a tree of layers: a longer context without one huge layer.",
    "gpt": "The same transformer block in torch: batches, both cores (or a GPU) and a size the scalar engine "
    "could never train.",
}
STAGES = (  # the names assistant's stages, base first: what each one added
    (
        "pre-training",
        "A model of names: it writes names but knows nothing of requests; asked with the starting letters, "
        "it goes on as a name would.",
    ),
    ("supervised fine-tuning", "Requests answered by real names: it reads the request and answers in its turn."),
    (
        "reinforcement learning",
        "Its own answers, scored by the checker and by how name-like they read: it moves towards names that meet "
        "every constraint.",
    ),
)
ASSISTANT_REWARDS = ("gpt.names_task:reward", "gpt.names_task:namelike_reward")  # what makes an RL model the assistant
SWIPE_HINT = "Swipe the table sideways for every column →"  # above each table, on narrow screens only (style.css)
EXAMPLE_REQUEST = 'A name that starts with "ma", ends with "a" and has 6 letters.'


def rung_arch(lm: LM, run: dict) -> str:
    if lm.windowed:
        return lm.model.config.arch
    return "gpt (scalar engine)" if run.get("trainer") == "microgpt" else "gpt"


def micrograd_reset(seed):
    """A fresh MLP(3, [4, 4, 1]) from a seed (blank: random)."""
    value = parse_seed(seed)
    if value is None:
        raise gr.Error(SEED_RULE)
    model = MLP(3, [4, 4, 1], rng=random.Random(value))
    state = {"model": model, "losses": [squared_error(model).data], "seed": value}
    return state, *micrograd_view(state)


def micrograd_open(state, seed):
    """The network as it was left when the tab was last open, or a fresh one."""
    return (state, *micrograd_view(state)) if state else micrograd_reset(seed)


def micrograd_train(state, steps, lr):
    """Some steps of gradient descent on the four examples: forward, zero_grad, backward, update."""
    if steps != int(steps):  # the sliders hold both within their bounds, not to whole steps
        raise gr.Error("steps must be a whole number from 1 to 100.")
    if state is None:
        state = micrograd_reset("0")[0]
    model = state["model"]
    state["losses"] = state["losses"][:-1] + fit(model, int(steps), float(lr)) + [squared_error(model).data]
    return state, *micrograd_view(state)


@logged
def check_ladder(seed):
    return gr.validate(parse_seed(seed) is not None, SEED_RULE)


@logged
def check_request(request, seed):
    try:
        parse_request(request or "")
    except ValueError as e:
        return [gr.validate(False, str(e)), VALID]
    return [VALID, gr.validate(parse_seed(seed) is not None, SEED_RULE)]


class Ladder:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def offered_models(self) -> list[Served]:
        """Every model on offer that loads now (a Hub repo offline is left out: the Model tab says why when picked)."""
        served = []
        for name in self.ctx.catalog.sources:
            try:
                served.append(self.ctx.served(name))
            except gr.Error:
                continue
        return served

    async def ladder(self, seed):
        """Every document-mode model on offer (the makemore ladder and the GPT above it), smallest first: its size,
        exact validation loss and names sampled with one seed (as generate_batch samples them), as a table and a chart
        of loss against parameters. Every model's engine samples at once."""
        seed = parse_seed(seed)
        if seed is None:  # API callers skip the validator
            raise gr.Error(SEED_RULE)
        models = [s for s in await asyncio.to_thread(self.offered_models) if s.lm.tokenizer.documents]
        params = SamplingParams(max_new_tokens=32, temperature=1.0, seed=seed)
        jobs = [submit(served, "", params, n=LADDER_SAMPLES) for served in models]
        texts = [await asyncio.gather(*(text_of(job) for job in model_jobs)) for model_jobs in jobs]
        rungs = []
        for served, names in zip(models, texts):
            lm = served.lm
            run = read_metrics(lm.folder).get("run", {}) if lm.folder else {}
            rungs.append((lm.model.num_params(), served.name, rung_arch(lm, run), run.get("exact_val_loss"), names))
        if not rungs:
            return "No document-mode model (such as the names models) is on offer here.", None
        rungs.sort(key=lambda r: r[0])
        table = [
            f"| model | architecture | parameters | validation loss | samples (seed {seed}, temperature 1) "
            "| what it adds |",
            "|---|---|---|---|---|---|",
        ]
        for params, name, arch, loss, names in rungs:
            shown_loss = f"{loss:.4f}" if loss is not None else "—"
            samples = ", ".join(n.strip() or "∅" for n in names)
            table.append(f"| {name} | {arch} | {params:,} | {shown_loss} | {samples} | {RUNGS.get(arch, '')} |")
        return "\n".join(table), ladder_figure([r for r in rungs if r[3] is not None])

    async def resample(self):
        """A fresh seed, shown in the seed field so the samples can be had again."""
        seed = str(SEEDS.randrange(2**31))
        return seed, *(await self.ladder(seed))

    def assistant_stages(self) -> list[str]:
        """The offered names assistant (an RL model with a names reward) and the models it was tuned from, base
        first."""
        for name, source in self.ctx.catalog.sources.items():
            if os.path.isdir(source):
                if read_metrics(source).get("run", {}).get("settings", {}).get("rl") in ASSISTANT_REWARDS:
                    return self.ctx.catalog.lineage(name)
        return []

    async def post_training(self, request, seed):
        """One request answered by each stage of the names assistant (the app's sampling, one seed), each checked."""
        seed = parse_seed(seed)
        try:
            asked = parse_request(request or "")
        except ValueError as e:  # API callers skip the validator
            raise gr.Error(str(e)) from None
        if seed is None:
            raise gr.Error(SEED_RULE)
        stages = self.assistant_stages()[-len(STAGES) :]
        if len(stages) < len(STAGES):
            return (
                "The names assistant and the models it was made from (weights/names-assistant*) are not on offer here."
            )
        jobs, prefixes = [], []
        for name in stages:
            served = self.ctx.served(name)
            if served.lm.tokenizer.specials:
                prompt = chat_prompt(served.lm, [], str(asked))
                text, stop, prefix = prompt.text, prompt.stop, ""
            else:
                text, stop = base_prompt(asked), ["\n"]
                prefix = text.strip()
            params = SamplingParams(
                max_new_tokens=32, temperature=0.8, top_k=40, top_p=0.95, stop=tuple(stop), seed=seed
            )
            jobs += submit(served, text, params)
            prefixes.append(prefix)
        answers = [p + a.strip() for p, a in zip(prefixes, await asyncio.gather(*(text_of(job) for job in jobs)))]
        table = ["| stage | model | answer | meets the request | what the stage added |", "|---|---|---|---|---|"]
        for (stage, added), name, reply in zip(STAGES, stages, answers):
            failed = [k for k, ok in asked.checks(reply).items() if not ok]
            verdict = "yes" if asked.met(reply) else "no: " + (", ".join(failed) or "not one word of letters")
            table.append(f"| {stage} | {name} | {html.escape(reply) or '∅'} | {verdict} | {added} |")
        return "\n".join(table)

    def build(self) -> None:
        with gr.Tab("Ladder") as ladder_tab:
            with gr.Accordion("Rung 0: micrograd, gradients one number at a time", open=True):
                gr.Markdown(
                    "Every number is a `Value` that remembers how it was made; `backward()` walks that graph "
                    "from the output back and applies the chain rule at each node. Below, the lecture's neuron "
                    "`o = tanh(x1*w1 + x2*w2 + b)`: each grad is how much `o` moves per unit of that node."
                )
                with gr.Row():
                    graph_before = gr.Plot(
                        label="computed: data filled in, every grad 0",
                        elem_id="micrograd-before",
                        elem_classes="readable-chart",
                    )
                    graph_after = gr.Plot(
                        label="after o.backward(): each grad is do/d(node)",
                        elem_id="micrograd-after",
                        elem_classes="readable-chart",
                    )
                gr.Markdown(
                    "The lecture's network, `MLP(3, [4, 4, 1])`: 41 such Values as parameters, fitted to four "
                    "examples by gradient descent. Step it and watch the squared error fall."
                )
                with gr.Row():
                    mg_seed = gr.Textbox(value="0", label="seed (blank = random)", scale=1)
                    mg_steps = gr.Slider(1, 100, value=1, step=1, label="steps per click", scale=2)
                    mg_lr = gr.Slider(0.01, 1.0, value=0.1, step=0.01, label="learning rate", scale=2)
                    mg_train = gr.Button("Step", variant="primary", scale=0)
                    mg_reset = gr.Button("Reset", scale=0)
                mg_status = gr.Markdown()
                mg_curve = gr.Plot(label="squared error against step")
                mg_state = gr.State(None)
            gr.Markdown(
                "The makemore ladder on names: microgpt (the GPT block on the scalar engine), a bigram table, "
                "an MLP, a WaveNet and the GPT, on the same split. Pick any of them on the Model tab to chat."
            )
            with gr.Row():
                seed = gr.Textbox(value="0", label="seed (blank = random)", scale=1)
                resample = gr.Button("Sample again", scale=0)
            gr.Markdown(SWIPE_HINT, elem_classes="swipe-hint")
            table = gr.Markdown(elem_classes="ladder-table")
            chart = gr.Plot(label="validation loss against parameters", show_label=False, elem_id="ladder-chart")
            gr.Markdown(
                "Post-training, from a model of names to an assistant: the same request answered by the base "
                "(pre-trained on names), the model fine-tuned on requests and answers, and that one after "
                "reinforcement learning with a checker as its reward. Requests: `A name that C.`, `… C and D.` or "
                '`… C, D and E.`, with `starts with "S"`, `ends with "E"` (1-3 letters), `has N letters` (3-12) '
                'and `contains "CD"`, in that order.'
            )
            with gr.Row():
                request = gr.Textbox(value=EXAMPLE_REQUEST, label="request", scale=4)
                ask = gr.Button("Answer", scale=0)
            gr.Markdown(SWIPE_HINT, elem_classes="swipe-hint")
            stages_table = gr.Markdown(elem_classes="ladder-table")
        private = dict(api_visibility="private")
        ladder_tab.select(self.ladder, seed, [table, chart], validator=check_ladder, api_name="ladder_tab", **private)
        seed.submit(self.ladder, seed, [table, chart], validator=check_ladder, api_name="ladder")
        resample.click(self.resample, None, [seed, table, chart], **private)
        ladder_tab.select(
            lambda: (micrograd_graph(False), micrograd_graph(True)), None, [graph_before, graph_after], **private
        )
        ask.click(self.post_training, [request, seed], stages_table, validator=check_request, api_name="post_training")
        request.submit(self.post_training, [request, seed], stages_table, validator=check_request, **private)
        mg_outputs = [mg_state, mg_status, mg_curve]
        ladder_tab.select(micrograd_open, [mg_state, mg_seed], mg_outputs, **private)
        mg_reset.click(micrograd_reset, mg_seed, mg_outputs, api_name="micrograd_reset")
        mg_train.click(micrograd_train, [mg_state, mg_steps, mg_lr], mg_outputs, api_name="micrograd_train")
