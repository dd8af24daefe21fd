"""The models: the GPT, the makemore ladder's rungs (bigram, MLP, WaveNet), micrograd and microgpt, the tokenizers."""
