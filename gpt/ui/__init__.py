"""The web UI: one module per tab (chat, playground, ladder, model), the MCP tools, and the page that holds them.

Only this sub-package imports Gradio: `import gpt` and the API server never load it. Each tab is a class whose methods
are the tab's event handlers and whose `build` lays out its components; they share a Context (the catalog of models,
the feedback log, the API key) instead of module globals, so tests can build a UI over any catalog.
"""

import os

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # before Gradio is first imported
