"""Training: the LightningModule and its step, the divergence guard, the schedule, checkpoints, W&B tracking and
``run``, what ``train.py`` does."""
