"""After supervised fine-tuning: reinforcement learning, a reward model, DPO, ranked replies and the app's feedback."""
