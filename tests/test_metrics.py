"""Disentanglement metrics: known answers, invariances, determinism, and the scores a run and a checkpoint get."""
import numpy as np
import pytest
import torch
import yaml

import main
from betavae.evaluation import metrics, protocol
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
HISTOGRAM_METRICS = {"mig": metrics.mig, "aam": metrics.aam_histogram, "mmig": metrics.mmig_histogram}


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
    assert metrics.aam_histogram(codes, factors) == pytest.approx(1.0)
    half = np.concatenate([factors, factors], axis=1).astype(float)  # two latents carry all of v: gap 0
    assert metrics.mig(half, factors) == pytest.approx(0.0) and metrics.aam_histogram(half, factors) == pytest.approx(0.0)


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
    for score, factors, codes in [(metrics.mig, FACTORS, CODES), (metrics.aam_histogram, FACTORS, CODES),
                                  (metrics.mmig_histogram, FACTORS, CODES), (metrics.sap, BINARY, BINARY_CODES)]:
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


class TinyRows:
    """A dataset without factors, as CelebA: rows of images."""

    def __len__(self) -> int:
        return 40

    def batch(self, rows: torch.Tensor):
        x = torch.zeros(len(rows), 1, 64, 64)
        x[torch.arange(len(rows)), 0, rows % 64, (rows * 7) % 64] = 1.0
        return x, None


def test_record_writes_every_score_by_step_and_gives_data_without_factors_the_unsupervised_scores(tmp_path):
    torch.manual_seed(0)
    model, lines = VAE(1, 4), []
    first = metrics.record(model, TinyFactorData(), str(tmp_path), 10, seed=0, say=lines.append,
                           metrics="default,aam_mmig")
    metrics.record(model, TinyFactorData(), str(tmp_path), 20, seed=0, include_dci=False, say=lines.append,
                   include_beta_vae=False)
    saved = yaml.safe_load((tmp_path / "metrics.yaml").read_text())
    assert list(saved) == [10, 20] and "disentanglement_lib" in saved[10]["protocol"]
    assert {"mig", "sap", "aam", "mmig", "aam_histogram", "mmig_histogram", "beta_vae", "factor_vae", "dci_disentanglement", "dci_completeness",
            "dci_informativeness"} <= set(saved[10])
    assert saved[10]["mig"] == first["mig"] and "dci_disentanglement" not in saved[20]
    assert "beta_vae" not in saved[20] and "beta_vae" not in saved[20]["seconds"] and saved[20]["mig"] == first["mig"]
    assert {"modularity_score", "explicitness_score_test", "gaussian_total_correlation", "mutual_info_score"} <= set(
        saved[10]) and "aam" not in saved[20]  # the default selection: the study's six and the unsupervised scores
    assert len(lines) == 2 and "metrics at step 10" in lines[0]
    (tmp_path / "celeba").mkdir()
    unlabelled = metrics.record(model, TinyRows(), str(tmp_path / "celeba"), 5, say=lines.append)
    assert {k for k, v in unlabelled.items() if isinstance(v, float)} == {
        "gaussian_total_correlation", "gaussian_wasserstein_correlation", "gaussian_wasserstein_correlation_norm",
        "mutual_info_score"}
    assert lines[-2] == ("metrics skipped: beta_vae, factor_vae, mig, dci, modularity_explicitness, sap: needs "
                         "ground-truth factors")
    assert "metrics at step 5" in lines[-1] and (tmp_path / "celeba" / "metrics.yaml").exists()


@pytest.mark.filterwarnings("ignore:The number of unique classes")  # DCI on a few dozen points
def test_a_run_and_traverse_write_metrics_yaml(tmp_path, monkeypatch):
    monkeypatch.setattr(protocol, "SAMPLES", {"mig": 40, "split": 45, "beta_vae_train": 10, "beta_vae_eval": 6,
                                             "factor_vae_variance": 30, "factor_vae_train": 10,
                                             "factor_vae_eval": 6, "group": 2, "aam_images": 120})
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


# ---------------------------------------------------------------- the poster's estimator from q(z|x)

A, S = 1.0, 0.5   # z_0 | v_0 ~ N(±A, S²): the closed-form case


def synthetic_posterior(factors: np.ndarray):
    """Gaussian posteriors of a 2-valued factor v_0 and a 3-valued v_1: z_0 = ±A (from v_0), z_1 = 0 (independent
    of both), z_2 = v_1 − 1; every σ = S."""
    factors = np.asarray(factors)
    mu = np.stack([np.where(factors[:, 0] == 1, A, -A), np.zeros(len(factors)), factors[:, 1] - 1.0], axis=1)
    return mu, np.full(mu.shape, np.log(S ** 2))


def mixture_information(means, s: float) -> float:
    """I[z; v] for uniform v and z | v ~ N(means[v], s²): H(mixture) − H(N(0, s²)), the first by the trapezoid rule."""
    grid = np.linspace(min(means) - 10 * s, max(means) + 10 * s, 200_001)
    density = np.mean([np.exp(-(grid - m) ** 2 / (2 * s * s)) / np.sqrt(2 * np.pi * s * s) for m in means], axis=0)
    mixture = -np.trapezoid(density * np.log(np.maximum(density, 1e-300)), grid)
    return mixture - 0.5 * np.log(2 * np.pi * np.e * s * s)


def test_poster_information_matches_the_closed_form_and_is_zero_for_an_independent_latent():
    information = metrics.posterior_information(synthetic_posterior, (2, 3), seed=0, marginal=4000, draws=2000,
                                                per_value=1000)
    assert information.shape == (3, 2)
    assert information[0, 0] == pytest.approx(mixture_information([-A, A], S), abs=0.04)
    assert information[2, 1] == pytest.approx(mixture_information([-1.0, 0.0, 1.0], S), abs=0.04)
    for j, k in [(0, 1), (1, 0), (1, 1), (2, 0)]:   # a latent independent of the factor
        assert abs(information[j, k]) < 0.04
    again = metrics.posterior_information(synthetic_posterior, (2, 3), seed=0, marginal=4000, draws=2000,
                                          per_value=1000)
    np.testing.assert_array_equal(information, again)   # deterministic given the seed


def test_poster_aam_and_mmig_score_an_axis_aligned_posterior_high():
    counts = {"marginal": 3000, "draws": 1000, "per_value": 500}
    # one latent per factor and one unused latent: AAM near 1; MMIG = I_(1) / log|V_k| (the second latent ≈ 0)
    assert metrics.aam(synthetic_posterior, (2, 3), **counts) > 0.9
    expected = np.mean([mixture_information([-A, A], S) / np.log(2),
                        mixture_information([-1.0, 0.0, 1.0], S) / np.log(3)])
    assert metrics.mmig(synthetic_posterior, (2, 3), **counts) == pytest.approx(expected, abs=0.05)

    def mixed(factors):   # both factors in one latent, the same latent twice: no gap, no axis alignment
        mu, logvar = synthetic_posterior(factors)
        both = mu[:, :1] + mu[:, 2:]
        return np.concatenate([both, both], axis=1), logvar[:, :2]
    assert metrics.mmig(mixed, (2, 3), **counts) == pytest.approx(0.0, abs=0.05)
    assert metrics.aam(mixed, (2, 3), **counts) < 0.1


def test_dataset_codes_posterior_returns_the_encoder_mean_and_logvar():
    torch.manual_seed(0)
    model, data = VAE(1, 4).eval(), TinyFactorData()
    representation = metrics.DatasetCodes(model, data, batch_size=7, progress=False)
    factors = metrics.sample_factors(np.random.default_rng(0), 20, SIZES)
    mu, logvar = representation.posterior(factors)
    assert isinstance(representation._fast, torch.jit.ScriptModule)  # on a CPU: the frozen encoder, not the fallback
    with torch.no_grad():
        expected = model.encoder(data.images(torch.cat([torch.zeros(20, 1, dtype=torch.long),
                                                        torch.from_numpy(factors)], 1)))
    np.testing.assert_allclose(mu, expected[0].numpy(), atol=1e-5)
    np.testing.assert_allclose(logvar, expected[1].numpy(), atol=1e-5)


def test_the_sampled_representation_is_scored_under_its_own_keys():
    torch.manual_seed(0)
    model = VAE(1, 4)
    both = metrics.evaluate(model, TinyFactorData(), seed=0, progress=False, metrics="mig,unsupervised",
                            representation="both")
    mean = metrics.evaluate(model, TinyFactorData(), seed=0, progress=False, metrics="mig,unsupervised")
    sampled = metrics.evaluate(model, TinyFactorData(), seed=0, progress=False, metrics="mig,unsupervised",
                               representation="sampled")
    assert both["mig"] == mean["mig"] and both["sampled_mig"] == sampled["sampled_mig"]
    assert "mig" not in sampled and both["representation"] == "both"
    # an untrained encoder's σ ≈ 1 swamps its μ: the sampled codes are nearly independent of each other
    assert both["sampled_gaussian_total_correlation"] != both["gaussian_total_correlation"]
    assert {"sampled_encode_fixed_points", "sampled_mig"} <= set(both["seconds"])



def test_a_model_with_the_training_kernels_plugged_in_is_encoded_through_the_frozen_plain_layers():
    from betavae.speed import switches
    from params import Params

    torch.manual_seed(0)
    model, data = VAE(1, 4), TinyFactorData()
    switches.prepare(model, Params(amp=False, fused_conv=True), "cpu", say=lambda _: None)
    model.eval()
    representation = metrics.DatasetCodes(model, data, batch_size=16, progress=False)
    factors = metrics.sample_factors(np.random.default_rng(1), 30, SIZES)
    codes = representation(factors)
    assert isinstance(representation._fast, torch.jit.ScriptModule) and type(model.encoder.convs).__name__ == "FusedConvs"
    with torch.no_grad():
        expected = model.encoder(data.images(torch.cat([torch.zeros(30, 1, dtype=torch.long),
                                                        torch.from_numpy(factors)], 1)))[0]
    np.testing.assert_allclose(codes, expected.numpy(), atol=1e-5)
