"""Tests import the root modules and the betavae package directly; keep runs small."""
import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("MPLBACKEND", "Agg")
# amp=auto measures bf16 against float32 on a CPU with native bf16 (betavae/speed/switches.py amp_pays); tests fix the
# choice so that every test process, and the processes they start, compute the same. test_bench tests the measuring.
os.environ.setdefault("BETAVAE_AMP_AUTO", "false")


@pytest.fixture(autouse=True)
def small_metric_samples(monkeypatch):
    """Metrics in tests use a few hundred points; at the protocol's counts a run's evaluation takes many minutes."""
    from betavae.evaluation import protocol
    from small import SAMPLES

    monkeypatch.setattr(protocol, "SAMPLES", dict(SAMPLES))
