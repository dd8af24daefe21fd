"""The web app and the model server: a Gradio UI (streaming chat, a completion playground with token probabilities
and attention, the learning ladder, a model picker) and an OpenAI-compatible API (gpt/serving/server.py), in one
process on one port.

python app.py serves both at http://127.0.0.1:7860 (GRADIO_SERVER_NAME / GRADIO_SERVER_PORT to change);
python app.py --api-only serves the API alone, without loading Gradio. MODEL_ID picks the default model (a folder or a
Hub repo id, owner/name[@revision]). Which models visitors may pick is the operator's choice: --models / GPT_MODELS
(default: the shipped folders under weights/), or any folder and repo id with --allow-any-model. GPT_API_KEY (or
--api-key) asks for the key on the API (Bearer) and in the UI (a login). The UI is gpt/ui/, the rest of the work gpt/.
"""

import argparse
import os
import sys
import threading
from pathlib import Path

from gpt.posttraining.feedback import FeedbackLog
from gpt.serving.catalog import Catalog, ModelUnavailable, NotOffered

SHIPPED = str(Path(__file__).resolve().parent / "weights" / "*")


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description="Serve the gpt web app and its OpenAI-compatible API.")
    a = p.add_argument
    a("--api-only", action="store_true", help="serve the HTTP API without the UI")
    a(
        "--api-key",
        default=os.environ.get("GPT_API_KEY"),
        help="require this key: Bearer on /v1/*, and a login (any name, the key as password) for the UI",
    )
    a(
        "--models",
        default=os.environ.get("GPT_MODELS"),
        help="models visitors may pick: comma-separated folders, folder globs and Hub repo ids "
        "(default: the shipped weights/*; MODEL_ID is always included)",
    )
    a(
        "--allow-any-model",
        action="store_true",
        default=os.environ.get("GPT_ALLOW_ANY_MODEL") == "1",
        help="let visitors load any folder on this machine or any Hub repo (for local use only)",
    )
    a("--max-batch", type=int, default=16, help="requests decoded together in one batched step")
    a("--max-waiting", type=int, default=64, help="requests allowed to wait; beyond that, 429")
    a(
        "--feedback",
        default=os.environ.get("GPT_FEEDBACK"),
        help="keep the chat's thumbs up/down and retried replies in this folder as preference data (JSONL in TRL's "
        "formats, for --dpo and --reward-model); off unless given",
    )
    a(
        "--no-compile",
        action="store_true",
        help="never compile decoding (as GPT_COMPILE=0); by default it is compiled in the background after start",
    )
    return p.parse_args()


def main() -> None:
    args = parse_args()
    import uvicorn

    from gpt.serving.server import Server, create_app

    catalog = Catalog.from_settings(
        args.models,
        os.environ.get("MODEL_ID"),
        SHIPPED,
        allow_any=args.allow_any_model,
        compile=not args.no_compile and os.environ.get("GPT_COMPILE", "1") != "0",
        max_batch=args.max_batch,
        max_waiting=args.max_waiting,
    )
    if not catalog.default:
        sys.exit("error: no model to serve: set MODEL_ID or --models (the shipped weights/ folder is empty)")
    server = Server(catalog, api_key=args.api_key)
    app = create_app(server)
    host = os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1")
    port = int(os.environ.get("GRADIO_SERVER_PORT", "7860"))
    uv = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=3))
    print(f"* loading {catalog.default}", flush=True)
    if args.api_only:

        def load_in_background() -> None:  # /health answers 503 until the model is in
            try:
                catalog.get(catalog.default)
            except (NotOffered, ModelUnavailable) as e:
                server.load_error = f"{e}."
                uv.should_exit = True

        threading.Thread(target=load_in_background, daemon=True).start()
        ui = "off"
    else:
        import gradio as gr

        from gpt.ui.context import Context
        from gpt.ui.demo import mount

        feedback = FeedbackLog(args.feedback) if args.feedback else None
        try:
            uv.config.app = mount(app, Context(catalog, args.api_key, feedback))
        except gr.Error as e:
            sys.exit(f"error: {e.message}")
        ui = "/, MCP: " + ("off (an API key is set)" if args.api_key else "/gradio_api/mcp/")
    print(f"* serving {catalog.default} at http://{host}:{port} (UI: {ui}, API: /v1)")
    uv.run()
    if server.load_error:
        sys.exit(f"error: {server.load_error}")


if __name__ == "__main__":
    main()
