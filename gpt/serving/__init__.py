"""Decoding and serving: the KV-cached batch, the engine, sampling, the chat layout, the model catalog and the API."""
