"""Lightning callbacks of lvebm-lightning: the negative pool, evaluation metrics and sample galleries."""
