"""Training: the step loop (fit), checkpoints, time budget, one optimizer step, pre-training."""
