"""The model a run trains: the convolutional VAE of Burgess et al. 2018 (appendix A.1), an encoder to the Gaussian
q(z|x) = N(μ, diag σ²) and a decoder to Bernoulli or Gaussian pixel logits.

The layers are written out in betavae/network.py, inside the package, so that an installed package (`pip install
-e .`, docs/api.md) loads checkpoints and runs the encoder and decoder from any folder without this file. Edit the
network there; scripts and tests import it from here or from there alike (it is the same class).
"""
from betavae.network import VAE, Decoder, Encoder  # noqa: F401
