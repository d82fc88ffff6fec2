"""The supporting modules of this β-VAE repository, one folder per concern: sources (datasets' files), evaluation
(scores), pictures (figures and reports), speed (CPU/GPU switches and kernels), scale (packing, torchrun, sweeps)
and training (the run's loop and its lifecycle). The root holds what a user runs or edits first."""
