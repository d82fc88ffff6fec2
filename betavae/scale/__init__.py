"""Training many models: packs of K models in one step, torchrun ranks, and sweeps over params."""
