"""Disentanglement metrics: known answers, invariances, determinism, and the scores a run and a checkpoint get."""
import numpy as np
import pytest
import torch
import yaml

import main
import metrics
import traverse
from models import VAE

SIZES = (4, 4, 4, 4)                                    # small factors keep the classifiers fast
PERMUTATION, SCALE = [2, 0, 3, 1], np.array([0.5, -2.0, 3.0, 1.5])


def rotation(k: int = len(SIZES)) -> np.ndarray:
    """A random rotation that mixes every factor into every latent with equal weight: a 4×4 Hadamard
    matrix / 2 with randomly permuted, sign-flipped rows. (A generic random rotation can sit close to an
    axis-aligned one, which scores almost as well.)"""
    hadamard = np.array([[1, 1, 1, 1], [1, -1, 1, -1], [1, 1, -1, -1], [1, -1, -1, 1]]) / 2.0
    rng = np.random.default_rng(7)
    return (hadamard * rng.choice([-1.0, 1.0], size=(4, 1)))[rng.permutation(4)]


def code_variants(factors: np.ndarray, sizes=SIZES) -> dict[str, np.ndarray]:
    """The factors themselves, permuted and rescaled, mixed by a rotation, and codes independent of them."""
    values = factors.astype(np.float64)
    standard = (values - (np.array(sizes) - 1) / 2) / np.array(sizes)
    return {"identity": values, "permuted": values[:, PERMUTATION] * SCALE, "rotated": standard @ rotation(len(sizes)),
            "independent": np.random.default_rng(len(factors)).normal(size=factors.shape)}


FACTORS = metrics.sample_factors(np.random.default_rng(0), 900, SIZES)
CODES = code_variants(FACTORS)
# Binary factors for the classifier metrics: one tree per boosting stage instead of one per class.
BINARY = metrics.sample_factors(np.random.default_rng(1), 600, (2, 2, 2, 2))
BINARY_CODES = code_variants(BINARY, (2, 2, 2, 2))
HISTOGRAM_METRICS = {"mig": metrics.mig, "aam": metrics.aam, "mmig": metrics.mmig}


@pytest.mark.parametrize("name", HISTOGRAM_METRICS)
def test_histogram_metrics_reward_axis_alignment_only(name):
    score = {variant: HISTOGRAM_METRICS[name](codes, FACTORS) for variant, codes in CODES.items()}
    assert score["identity"] > 0.95 and score["permuted"] == pytest.approx(score["identity"])
    assert score["rotated"] < score["identity"] - 0.4
    assert abs(score["independent"]) < 0.05


def test_mig_matches_its_closed_form_on_a_two_latent_example():
    factors = np.array([[0], [0], [1], [1]] * 25)           # H = log 2
    codes = np.concatenate([factors, np.tile([[0.0], [1.0]], (50, 1))], axis=1)  # z0 = v, z1 independent
    assert metrics.mig(codes, factors) == pytest.approx(1.0)
    assert metrics.aam(codes, factors) == pytest.approx(1.0)
    half = np.concatenate([factors, factors], axis=1).astype(float)  # two latents carry all of v: gap 0
    assert metrics.mig(half, factors) == pytest.approx(0.0) and metrics.aam(half, factors) == pytest.approx(0.0)


def test_sap_with_two_class_factors():
    """One latent and a linear SVM can only split a factor's classes at thresholds, so SAP reaches its
    maximum for factors whose classes a single threshold separates: binary ones."""
    score = {variant: metrics.sap(codes, BINARY) for variant, codes in BINARY_CODES.items()}
    # Its own latent classifies a factor perfectly while every other latent sits at chance (1/2), so
    # the gap, SAP's maximum for binary classes, is 1 − 1/2.
    assert score["identity"] == pytest.approx(0.5, abs=0.05) and score["permuted"] == pytest.approx(score["identity"])
    assert score["rotated"] < score["identity"] - 0.3
    assert score["independent"] < 0.05


def test_dci_from_importance_closed_forms():
    assert metrics.dci_from_importance(np.eye(4)) == pytest.approx((1.0, 1.0), abs=1e-6)
    assert metrics.dci_from_importance(np.ones((4, 4))) == pytest.approx((0.0, 0.0), abs=1e-6)
    one_latent_for_all = np.zeros((4, 2))
    one_latent_for_all[0] = 1.0                           # z0 informs both factors: complete, not disentangled
    assert metrics.dci_from_importance(one_latent_for_all) == pytest.approx((0.0, 1.0), abs=1e-6)


def test_dci_known_answers_and_latent_permutation():
    factors, codes = BINARY[:300], {k: v[:300] for k, v in BINARY_CODES.items()}
    identity = metrics.dci(codes["identity"], factors, progress=False)
    assert identity["disentanglement"] > 0.95 and identity["completeness"] > 0.95
    assert identity["informativeness"] > 0.95
    rotated = metrics.dci(codes["rotated"], factors, progress=False)
    assert rotated["disentanglement"] < identity["disentanglement"] - 0.4
    independent = metrics.dci(codes["independent"], factors, progress=False)
    assert independent["disentanglement"] < 0.1 and independent["informativeness"] < 0.6
    permuted = metrics.dci(codes["rotated"][:, PERMUTATION], factors, progress=False)
    assert permuted["disentanglement"] == pytest.approx(rotated["disentanglement"], abs=0.05)


def identity_representation(factors):
    return factors.astype(np.float64)


def permuted_representation(factors):
    return factors[:, PERMUTATION].astype(np.float64) * SCALE


def rotated_representation(factors):
    return ((factors - (np.array(SIZES) - 1) / 2) / np.array(SIZES)) @ rotation()


def independent_representation(factors):
    return np.random.default_rng(int(factors.sum())).normal(size=factors.shape)


SAMPLING_METRICS = {"beta_vae": metrics.beta_vae_score, "factor_vae": metrics.factor_vae_score}
SMALL = {"train": 300, "test": 200, "group": 16}


@pytest.mark.parametrize("name", SAMPLING_METRICS)
def test_sampling_metrics_known_answers(name):
    score = {variant: SAMPLING_METRICS[name](representation, SIZES, seed=3, **SMALL)
             for variant, representation in [("identity", identity_representation),
                                             ("permuted", permuted_representation),
                                             ("rotated", rotated_representation),
                                             ("independent", independent_representation)]}
    assert score["identity"] > 0.95 and score["permuted"] > 0.95
    assert score["rotated"] < score["identity"] - 0.05
    assert score["independent"] < 1 / len(SIZES) + 0.15  # accuracies: chance level is their floor


@pytest.mark.parametrize("name", SAMPLING_METRICS)
def test_sampling_metrics_are_deterministic_and_invariant_to_permuting_latents(name):
    score = SAMPLING_METRICS[name]
    first = score(rotated_representation, SIZES, seed=5, **SMALL)
    assert score(rotated_representation, SIZES, seed=5, **SMALL) == first
    assert score(lambda f: rotated_representation(f)[:, PERMUTATION], SIZES, seed=5, **SMALL) == \
        pytest.approx(first, abs=0.01)
    assert any(score(rotated_representation, SIZES, seed=s, **SMALL) != first for s in (6, 7))


def test_array_metrics_are_deterministic_and_invariant_to_permuting_latents():
    for score, factors, codes in [(metrics.mig, FACTORS, CODES), (metrics.aam, FACTORS, CODES),
                                  (metrics.mmig, FACTORS, CODES), (metrics.sap, BINARY, BINARY_CODES)]:
        rotated = codes["rotated"]
        assert score(rotated, factors) == score(rotated, factors)
        assert score(rotated[:, PERMUTATION], factors) == pytest.approx(score(rotated, factors))
    codes, factors = BINARY_CODES["rotated"][:150], BINARY[:150]
    assert metrics.dci(codes, factors, seed=1, progress=False) == metrics.dci(codes, factors, seed=1, progress=False)


def test_factor_vae_scores_zero_when_every_latent_collapses():
    assert metrics.factor_vae_score(lambda f: 1e-3 * f, SIZES, **SMALL) == 0.0


class TinyFactorData:
    """A dataset with four small factors drawn as dots, so a whole evaluation runs in seconds."""

    channels, factor_sizes, factor_names = 1, SIZES, ("a", "b", "c", "d")

    def images(self, classes: torch.Tensor) -> torch.Tensor:
        x = torch.zeros(len(classes), 1, 64, 64)
        for k in range(len(SIZES)):
            x[torch.arange(len(classes)), 0, 10 * k, classes[:, k + 1] * 10] = 1.0
        return x


def test_dataset_codes_encode_each_row_once_and_match_the_encoder():
    torch.manual_seed(0)
    model, data = VAE(1, 4).eval(), TinyFactorData()
    representation = metrics.DatasetCodes(model, data, batch_size=7, progress=False)
    factors = metrics.sample_factors(np.random.default_rng(0), 50, SIZES)
    calls = []
    original = data.images
    data.images = lambda classes: (calls.append(len(classes)), original(classes))[1]
    codes = representation(factors)
    again = representation(factors[::-1])
    assert sum(calls) == len(np.unique(factors, axis=0))      # each distinct image rendered once
    with torch.no_grad():
        expected = model.encoder(original(torch.cat([torch.zeros(50, 1, dtype=torch.long),
                                                     torch.from_numpy(factors)], 1)))[0].numpy()
    np.testing.assert_allclose(codes, expected, atol=1e-5)
    np.testing.assert_array_equal(again, codes[::-1])


def test_record_writes_every_score_by_step_and_skips_data_without_factors(tmp_path):
    torch.manual_seed(0)
    model, lines = VAE(1, 4), []
    first = metrics.record(model, TinyFactorData(), str(tmp_path), 10, seed=0, say=lines.append)
    metrics.record(model, TinyFactorData(), str(tmp_path), 20, seed=0, include_dci=False, say=lines.append)
    saved = yaml.safe_load((tmp_path / "metrics.yaml").read_text())
    assert list(saved) == [10, 20] and "disentanglement_lib" in saved[10]["protocol"]
    assert {"mig", "sap", "aam", "mmig", "beta_vae", "factor_vae", "dci_disentanglement", "dci_completeness",
            "dci_informativeness"} <= set(saved[10])
    assert saved[10]["mig"] == first["mig"] and "dci_disentanglement" not in saved[20]
    assert len(lines) == 2 and "metrics at step 10" in lines[0]
    assert metrics.record(model, object(), str(tmp_path / "celeba"), 5, say=lines.append) is None
    assert "no ground-truth factors" in lines[-1] and not (tmp_path / "celeba").exists()


@pytest.mark.filterwarnings("ignore:The number of unique classes")  # DCI on a few dozen points
def test_a_run_and_traverse_write_metrics_yaml(tmp_path, monkeypatch):
    monkeypatch.setattr(metrics, "SAMPLES", {"mig": 40, "split": 45, "beta_vae_train": 10, "beta_vae_eval": 6,
                                             "factor_vae_variance": 30, "factor_vae_train": 10,
                                             "factor_vae_eval": 6, "group": 2})
    args = ["--set", f"out_dir={tmp_path}", "--set", f"data_dir={tmp_path}", "--set", "run_name=m",
            "--set", "steps=2", "--set", "batch_size=8", "--set", "sample_every=100", "--set", "eval_every=1",
            "--set", "traverse_samples=10", "--set", "device=cpu", "--set", "metrics_dci=false"]
    assert main.main(args) == 0
    run = tmp_path / "m"
    saved = yaml.safe_load((run / "metrics.yaml").read_text())
    assert list(saved) == [1, 2] and 0 <= saved[2]["mig"] <= 1 and "beta_vae" in saved[2]
    assert "metrics at step 2" in (run / "run.log").read_text()
    assert traverse.main([str(run / "checkpoint.pt"), "--out", str(tmp_path / "again"), "--metrics"]) == 0
    again = yaml.safe_load((tmp_path / "again" / "metrics.yaml").read_text())[2]
    assert again["mig"] == saved[2]["mig"] and "dci_disentanglement" in again  # DCI whatever the run said
    assert traverse.main([str(run / "checkpoint.pt"), "--out", str(tmp_path / "lean"), "--metrics", "--no-dci"]) == 0
    assert "dci_disentanglement" not in yaml.safe_load((tmp_path / "lean" / "metrics.yaml").read_text())[2]
