"""Pre-training and fine-tuning: the trainer's command, settings, data, loop, optimizers, checkpoints, evaluation."""
