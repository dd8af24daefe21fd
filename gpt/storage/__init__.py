"""The model folder (safetensors, config, tokenizer, card) and the Hugging Face Hub."""
