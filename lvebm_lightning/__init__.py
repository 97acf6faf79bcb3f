"""lvebm-lightning: latent-variable energy-based models trained by particle dynamics, on PyTorch Lightning."""

__version__ = "0.1.0"
