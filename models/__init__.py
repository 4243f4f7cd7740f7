"""Teachers, the student and the models on disk: what the loop learns from and serves."""
