"""Training: the LightningModule and its step, the divergence guard, the schedule, checkpoints (by steps and by
time), what a DDP run does when it loses a rank (``ranks``), W&B tracking and ``run``, what ``train.py`` does."""
