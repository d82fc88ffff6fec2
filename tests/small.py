"""Metric sample counts for tests: a few hundred points (at the protocol's counts an evaluation takes minutes). The
conftest fixture sets them for every test, the commands tests/test_docs_run.py runs in-process included."""

SAMPLES = {"mig": 100, "split": 90, "beta_vae_train": 20, "beta_vae_eval": 10, "factor_vae_variance": 60,
           "factor_vae_train": 20, "factor_vae_eval": 10, "group": 4, "downstream_train": [10, 60],
           "fairness_per_class": 5, "udr_points": 60, "aam_images": 300}
