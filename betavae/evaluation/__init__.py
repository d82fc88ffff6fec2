"""Scores of a trained model: disentanglement metrics and the held-out loss."""
