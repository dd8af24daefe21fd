"""The Playground tab: a streamed completion coloured by each token's probability, what the sampling settings did at
one position, continuing from there, and the attention of any layer and head over the text."""

import asyncio
import html
import math
from types import SimpleNamespace

import gradio as gr
import torch

from gpt.serving.generate import LM
from gpt.serving.sampling import SamplingParams
from gpt.ui.context import (
    MAX_NEW_TOKENS,
    VALID,
    Context,
    answer,
    check_settings,
    controls,
    logged,
    parse_seed,
    shown,
    streamed,
    submit,
    unknown_characters,
)
from gpt.ui.figures import attention_figure, distribution_figure

PROBABILITY_EVERY = 8  # tokens between updates of the coloured text, so a stopped run keeps what it showed


def alternatives_table(tokens) -> list[list]:
    """Per generated token: its position, its probability and the five the model found most likely, with theirs."""
    return [
        [i, shown(t.text), f"{math.exp(t.logprob):.3f}"] + [f"{shown(a)} {math.exp(lp):.3f}" for a, lp in t.top]
        for i, t in enumerate(tokens, 1)
    ]


def probability_html(tokens) -> str:
    """Each generated token on a background as strong as its probability; hover or tap shows the top alternatives."""
    spans = []
    for i, t in enumerate(tokens, 1):
        p = math.exp(t.logprob)
        alternatives = f"#{i}: " + "  ".join(f"{shown(a)} {math.exp(lp):.1%}" for a, lp in t.top)
        label = html.escape(t.text).replace("\n", "↵<br>") or "&nbsp;"
        spans.append(
            f'<span class="tok" tabindex="0" data-i="{i}" data-alt="{html.escape(alternatives)}" data-p="{p:.3f}" '
            f'style="background: hsl({120 * p:.0f}, 75%, 80%)">{label}</span>'
        )
    legend = (
        "<p><small>Green: the model was sure; red: it was not. Hover or tap a character for its top 5; click it to "
        "see below what the settings did to its choice, and to continue from there.</small></p>"
    )
    return f'<div class="probs">{"".join(spans)}</div>{legend}'


def picked(lm: LM, prompt: str, completion: str, position) -> tuple[str, int] | None:
    """The text before the completion's token at `position` (from 1) and that token, or None past its end."""
    ids = lm.tokenizer.encode(completion or "")
    i = int(position or 0)
    if not 1 <= i <= len(ids):
        return None
    return (prompt or "") + lm.tokenizer.decode(ids[: i - 1]), ids[i - 1]


def slider_tops(lm: LM) -> tuple[int, int]:
    """The layer and head sliders' maxima. A slider needs maximum > minimum, so a one-layer (or one-head) model gets
    0-1 and the validator refuses 1; a window model has no attention and its sliders are hidden."""
    cfg = lm.model.config
    return (1, 1) if lm.windowed else (max(cfg.n_layer - 1, 1), max(cfg.n_head - 1, 1))


class Playground:
    def __init__(self, ctx: Context):
        self.ctx = ctx

    def prompt_problems(self, prompt, model_name) -> tuple[str | None, str | None]:
        """What is wrong with the model, and with the prompt for it."""
        bad_model = self.ctx.model_problem(model_name)
        return bad_model, None if bad_model else unknown_characters(self.ctx.lm(model_name), prompt or "")

    @logged
    def check_complete(self, running, prompt, show_probabilities, model_name, *settings):
        bad_model, problem = self.prompt_problems(prompt, model_name)
        return [VALID, answer(problem), VALID, answer(bad_model), *check_settings(settings[-1])]

    async def complete(
        self,
        running,
        prompt,
        show_probabilities,
        model_name,
        temperature,
        top_k,
        top_p,
        max_new_tokens,
        repetition_penalty,
        seed,
    ):
        """A streamed completion: yields (text, coloured text, alternatives table, note). Stop ends it through
        `running` (the visitor's state), so the event ends as finished, not cancelled mid-update."""
        running["stop"] = False
        served = await asyncio.to_thread(self.ctx.served, model_name)
        seed = parse_seed(seed)
        settings = controls(temperature, top_k, top_p, max_new_tokens, repetition_penalty, seed)
        tokens, text, note = [], "", f"seed {seed}"
        (job,) = submit(served, prompt or "", SamplingParams(**settings), top_logprobs=5 if show_probabilities else 0)
        running["job"] = job
        if running["stop"]:  # pressed while the model was loading
            job.cancelled.set()
        async for token in streamed(job):
            tokens.append(token)
            text += token.text
            if show_probabilities and len(tokens) % PROBABILITY_EVERY == 0:
                yield text, probability_html(tokens), alternatives_table(tokens), note
            elif not show_probabilities:
                yield text, "", [], note
        if show_probabilities:
            yield text, probability_html(tokens), alternatives_table(tokens), note
        else:
            yield text, "", [], note

    def stop_completion(self, running):
        """Stop: the engine frees the row within a step and the stream ends with what it has."""
        running["stop"] = True
        if running.get("job"):
            running["job"].cancelled.set()

    @logged
    def check_distribution(self, prompt, completion, position, model_name, *settings):
        bad_model, problem = self.prompt_problems(prompt, model_name)
        return [answer(problem), VALID, VALID, answer(bad_model), *check_settings(settings[-1])]

    async def distribution(
        self,
        prompt,
        completion,
        position,
        model_name,
        temperature,
        top_k,
        top_p,
        max_new_tokens,
        repetition_penalty,
        seed,
    ):
        """The chart of the next-token distribution at a position of the completion: the model's own and the one
        these settings sample from (nothing to draw before a completion)."""
        served = await asyncio.to_thread(self.ctx.served, model_name)
        lm = served.lm
        at = picked(lm, prompt, completion, position)
        if at is None:
            return None
        before, chosen = at
        settings = controls(temperature, top_k, top_p, 1, repetition_penalty, None)
        model, drawn = await served.engine.run(lambda: lm.next_token(before, **settings))
        return distribution_figure(lm, model, drawn, chosen, int(position), before)

    def continued_prompt(self, prompt, completion, position, model_name) -> str:
        """The prompt and the completion up to and including the token at `position`: where "Continue" writes on."""
        lm = self.ctx.lm(model_name)
        at = picked(lm, prompt, completion, position)
        if at is None:
            raise gr.Error("Complete a prompt first, then click a character of the completion to continue from it.")
        before, chosen = at
        return before + lm.tokenizer.decode([chosen])

    def position_range(self, completion, model_name):
        """In the browser the position slider spans the completion's tokens (a slider needs a maximum above its
        minimum); its static bound, which API calls are checked against, is the longest completion."""
        n = len(self.ctx.lm(model_name).tokenizer.encode(completion or ""))
        return gr.update(maximum=max(n, 2), value=1)

    @logged
    def check_attention(self, prompt, layer, head, model_name, completion="", all_heads=False):
        bad_model = self.ctx.model_problem(model_name)
        if bad_model:
            return [VALID, VALID, VALID, answer(bad_model), VALID, VALID]
        lm = self.ctx.lm(model_name)
        cfg = lm.model.config
        if lm.windowed:
            window = f"{cfg.block_size} character{'s' * (cfg.block_size > 1)}"
            why = f"{model_name.strip()} has no attention: a {cfg.arch} reads a fixed window of {window}"
            return [VALID, VALID, VALID, answer(why + ". Pick a GPT model to see attention."), VALID, VALID]
        problem = "Type a short prompt to see its attention." if not prompt else unknown_characters(lm, prompt)
        return [
            answer(problem),
            gr.validate(0 <= int(layer) < cfg.n_layer, f"This model has layers 0-{cfg.n_layer - 1}."),
            gr.validate(0 <= int(head) < cfg.n_head, f"This model has heads 0-{cfg.n_head - 1}."),
            VALID,
            VALID,
            VALID,
        ]

    async def attention(self, prompt, layer, head, model_name, completion="", all_heads=False):
        """The attention of one head (or every head of a layer) over the prompt and its completion, up to the
        context."""
        served = await asyncio.to_thread(self.ctx.served, model_name)
        lm = served.lm
        ids = lm.encode_prompt(prompt + (completion or ""))
        if len(ids) > lm.block_size:
            gr.Warning(f"Attention is shown for the last {lm.block_size} tokens: the model's context.")
            ids = ids[-lm.block_size :]
        x = torch.tensor([ids], device=lm.device)
        maps = await served.engine.run(lambda: lm.model.attention_maps(x)[int(layer)].float().cpu())
        labels = [shown(lm.tokenizer.decode([i])) for i in ids]
        heads = list(range(maps.size(0))) if all_heads else [int(head)]
        return attention_figure(maps, labels, int(layer), heads)

    def build(self, texts: dict, lm: LM, model_name, settings: list) -> SimpleNamespace:
        """The tab's components and events; returns the parts a newly loaded model changes."""
        temperature, top_k, top_p, _, repetition_penalty, _ = settings
        with gr.Tab("Playground"):
            prompt = gr.Textbox(label=texts["prompt_label"], value=texts["prompt"], lines=4)
            show_probabilities = gr.Checkbox(label="show probabilities", value=True)
            with gr.Row():
                run = gr.Button("Complete", variant="primary")
                stop = gr.Button("Stop")
            output = gr.Textbox(value="", label="completion", lines=8, visible=False)
            probabilities = gr.HTML()
            note = gr.Markdown()
            alternatives = gr.Dataframe(
                headers=["#", "tok", "p", "1st", "2nd", "3rd", "4th", "5th"],
                label="top-5 alternatives, by position in the completion",
                elem_classes="alternatives",
            )
            gr.Markdown(
                "**What the settings do.** For one position of the completion (click a character above, or move "
                "the slider): grey is what the model itself gave each token, orange what the settings left to "
                "sample from. Lower the temperature, top-k or top-p and watch the orange bars gather on fewer "
                "tokens; ▶ marks the one that was written."
            )
            with gr.Row():
                position = gr.Slider(1, MAX_NEW_TOKENS, value=1, step=1, label="position", elem_id="position", scale=3)
                continue_here = gr.Button("Continue from here", scale=1)
            chart = gr.Plot(
                label="next-token distribution at that position",
                show_label=False,
                elem_id="distribution",
                elem_classes="readable-chart",
            )
            with gr.Row():
                layers, heads = slider_tops(lm)
                layer = gr.Slider(0, layers, value=0, step=1, label="layer", visible=not lm.windowed)
                head = gr.Slider(0, heads, value=0, step=1, label="head", visible=not lm.windowed)
                all_heads = gr.Checkbox(label="every head of the layer", value=False, visible=not lm.windowed)
                show_attention = gr.Button("Show attention", visible=not lm.windowed)
            gr.Markdown(
                "Each row is one token of the prompt and its completion; its colours say how much that token, "
                "when the model read it, looked at each earlier token (columns). The upper right is empty: the "
                "model never sees ahead."
            )
            heatmap = gr.Plot(label="attention", elem_id="attention-map", elem_classes="readable-chart")
            running = gr.State({})  # in the tab: a component beside the Tab objects would break the tab bar
        prompt.input(lambda: "", None, output, api_visibility="private")  # a new prompt, no old completion
        inputs = [running, prompt, show_probabilities, model_name, *settings]
        shown_parts = [output, probabilities, alternatives, note]
        completed = run.click(self.complete, inputs, shown_parts, validator=self.check_complete, api_name="complete")
        completed.then(self.position_range, [output, model_name], position, api_visibility="private")
        gr.on(
            [position.change, temperature.release, top_k.release, top_p.release, repetition_penalty.release],
            self.distribution,
            [prompt, output, position, model_name, *settings],
            chart,
            validator=self.check_distribution,
            api_name="distribution",
        )
        continue_here.click(
            self.continued_prompt, [prompt, output, position, model_name], prompt, api_name="continue_from"
        ).then(self.complete, inputs, shown_parts, api_visibility="private").then(
            self.position_range, [output, model_name], position, api_visibility="private"
        )
        stop.click(self.stop_completion, running, None, api_visibility="private")
        show_probabilities.change(
            lambda on: gr.update(visible=not on), show_probabilities, output, api_visibility="private"
        )
        gr.on(
            # input: a drag (its last value), or a number typed in a slider's box and Enter
            [show_attention.click, layer.input, head.input, all_heads.input],
            self.attention,
            [prompt, layer, head, model_name, output, all_heads],
            heatmap,
            validator=self.check_attention,
            api_name="attention",
            trigger_mode="always_last",
        )
        return SimpleNamespace(
            prompt=prompt, layer=layer, head=head, all_heads=all_heads, show_attention=show_attention
        )
