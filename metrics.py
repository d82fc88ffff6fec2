"""Disentanglement metrics on ground-truth factors, each on the protocol of its reference implementation.

Scores on fixed arrays take `codes` [N, D] float (the encoder mean μ) and `factors` [N, K] integer classes.
The two sampling metrics take a representation function (factor classes [N, K] -> codes [N, D]) and the
factor sizes. Metrics that sample or fit a classifier take a seed and are deterministic given it; the
histogram metrics (MIG, aam_histogram, mmig_histogram) are deterministic functions of their arrays. AAM and
MMIG by default use the poster's estimator of I[z_j; v_k] from the Gaussian posteriors q(z|x)
(`posterior_information`). Protocols follow google-research's
disentanglement_lib (Locatello et al. 2019) unless a docstring says otherwise; sample counts are in SAMPLES.
"""
from __future__ import annotations

import concurrent.futures
import copy
import os
import tempfile
import time
import warnings
import zlib
from typing import Callable, Sequence

import numpy as np
import torch
import yaml
from tqdm import tqdm

# disentanglement_lib's defaults (gin configs of unsupervised_study_v1); tests shrink them.
SAMPLES = {
    "mig": 10_000,                      # points for MIG, AAM and MMIG
    "split": 15_000,                    # points for SAP and DCI: the first 2/3 train, the last 1/3 test
    "beta_vae_train": 10_000, "beta_vae_eval": 5_000,
    "factor_vae_variance": 10_000, "factor_vae_train": 10_000, "factor_vae_eval": 5_000,
    "group": 64,                        # pairs (BetaVAE) or samples (FactorVAE) behind one training point
    # The poster's q(z|x) estimator for AAM and MMIG (`posterior_information`), sized for CPU: images whose
    # posteriors form q(z_j), z draws scored against that mixture, and images per value of each factor.
    "poster_marginal": 10_000, "poster_entropy_draws": 2_000, "poster_per_value": 256,
}
POSTER_DEFAULTS = {"poster_marginal": 10_000, "poster_entropy_draws": 2_000, "poster_per_value": 256}
HISTOGRAM_BINS = 20                     # disentanglement_lib's discretizer for MIG
FACTOR_VAE_PRUNE_STD = 0.05             # Kim & Mnih: latents with a smaller global std are collapsed

Representation = Callable[[np.ndarray], np.ndarray]


def _rng(seed: int, name: str) -> np.random.Generator:
    """One stream per metric, so adding or reordering metrics never changes another metric's samples."""
    return np.random.default_rng([seed, zlib.crc32(name.encode())])


# ---------------------------------------------------------------- information from histograms

def histogram_discretize(codes: np.ndarray, bins: int = HISTOGRAM_BINS) -> np.ndarray:
    """disentanglement_lib's `_histogram_discretize`: each latent into `bins` equal-width bins: [N, D] -> int [N, D]."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        out[:, j] = np.digitize(codes[:, j], np.histogram(codes[:, j], bins)[1][:-1])
    return out


def _mutual_information(a: np.ndarray, b: np.ndarray) -> float:
    """Plug-in mutual information (nats) of two integer vectors, as sklearn's mutual_info_score."""
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1)).reshape(a.max() + 1, -1)
    joint = joint / len(a)
    outer = joint.sum(1, keepdims=True) * joint.sum(0, keepdims=True)
    nonzero = joint > 0
    return max(float(np.sum(joint[nonzero] * np.log(joint[nonzero] / outer[nonzero]))), 0.0)


def mutual_information_matrix(discrete_codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) for every latent j and factor k: [D, K] in nats."""
    return np.array([[_mutual_information(discrete_codes[:, j], factors[:, k]) for k in range(factors.shape[1])]
                     for j in range(discrete_codes.shape[1])])


def _entropies(factors: np.ndarray) -> np.ndarray:
    return np.array([_mutual_information(factors[:, k], factors[:, k]) for k in range(factors.shape[1])])


def _sorted_information(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """I(z_j; v_k) sorted over latents, largest first: [D, K]."""
    return -np.sort(-mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)), axis=0)


# ---------------------------------------------------------------- metrics on fixed arrays

def mig(codes: np.ndarray, factors: np.ndarray) -> float:
    """Mutual information gap as disentanglement_lib computes it (`mig.py`, Locatello et al. 2019).

    20 equal-width bins per latent, plug-in mutual information with each factor, (largest − second) / H(v_k),
    mean over factors; 10,000 points by protocol. Not Chen et al. 2018's MIG, which estimates I from q(z|x)
    over the whole dataset: the two give different numbers.
    """
    information = _sorted_information(codes, factors)
    entropy = _entropies(np.asarray(factors))
    keep = entropy > 0  # a factor constant in the sample carries no information to gap
    return float(np.mean((information[0, keep] - information[1, keep]) / entropy[keep]))


def aam_from_information(information: np.ndarray) -> float:
    """Axis-alignment metric, Eq. (2) of Dubois et al.'s poster (seeds/002), from I[z_j; v_k] [D, K]: per factor,
    max(I_(1) − Σ_{others} I, 0) / I_(1), mean over factors (a factor no latent informs scores 0)."""
    information = -np.sort(-np.maximum(np.asarray(information, dtype=np.float64), 0.0), axis=0)
    top = information[0]
    numerator = np.maximum(top - information[1:].sum(axis=0), 0.0)
    return float(np.mean(np.divide(numerator, top, out=np.zeros_like(top), where=top > 0)))


def aam_histogram(codes: np.ndarray, factors: np.ndarray) -> float:
    """AAM (Eq. 2 of the poster) with I estimated as for MIG (20 histogram bins on μ), not with the poster's
    q(z|x) estimator (`aam`), so the poster's Table 1 values are not directly comparable."""
    return aam_from_information(mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)))


def mmig_from_information(information: np.ndarray, factors: np.ndarray) -> float:
    """Modified MIG, Eq. (3) of the poster (seeds/002), from I[z_j; v_k] [D, K]:
    (I_(1) − I_(2)) / (H(v_k) − max_{k'≠k} I(v_k; v_k')), mean over factors; the denominator discounts what
    other factors already tell about v_k (both from the factor classes `factors` [N, K])."""
    factors = np.asarray(factors)
    information = -np.sort(-np.asarray(information, dtype=np.float64), axis=0)
    between = mutual_information_matrix(factors, factors)
    np.fill_diagonal(between, 0.0)
    denominator = _entropies(factors) - (between.max(axis=0) if factors.shape[1] > 1 else 0.0)
    keep = denominator > 0
    return float(np.mean((information[0, keep] - information[1, keep]) / denominator[keep]))


def mmig_histogram(codes: np.ndarray, factors: np.ndarray) -> float:
    """MMIG (Eq. 3 of the poster) with I from 20 histogram bins on μ as in `mig`; the poster's own estimator
    is `mmig`."""
    return mmig_from_information(mutual_information_matrix(histogram_discretize(codes), np.asarray(factors)), factors)


# ---------------------------------------------------------------- the poster's estimator from q(z|x)

def _gaussian_log_density(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    return -0.5 * (np.log(2 * np.pi) + logvar + (z - mu) ** 2 * torch.exp(-logvar))


def posterior_entropy(z: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, chunk: int = 256) -> torch.Tensor:
    """H[z_j] of the mixture q(z_j) = (1/N) Σ_n N(z_j; μ_j(x_n), σ_j²(x_n)) for every latent j, as Chen et al.
    2018's `estimate_entropies` (beta-tcvae, disentanglement_metrics.py): −mean over the draws z [S, D] (each from
    q(z|x) of one of the images) of log (1/N) Σ_n q(z_j|x_n), the sum by logsumexp. mu, logvar: [N, D]. Returns [D]."""
    total = torch.zeros(mu.shape[1], dtype=torch.float64)
    for part in z.split(chunk):  # [s, D] against [N, D] → [s, N, D], summed over N in log space
        log_q = _gaussian_log_density(part[:, None, :], mu[None], logvar[None])
        total -= (torch.logsumexp(log_q, dim=1) - np.log(len(mu))).double().sum(0)
    return total / len(z)


def posterior_information(posterior: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
                          factor_sizes: Sequence[int], seed: int = 0, marginal: int | None = None,
                          draws: int | None = None, per_value: int | None = None) -> np.ndarray:
    """I[z_j; v_k] = H[z_j] − H[z_j | v_k] for every latent j and factor k ([D, K], nats), the estimator of the
    poster (seeds/002: I = E_q(z_j,v_k)[log Σ_n q(z_j|x_n) p(x_n|v_k)] + H[z_j], "estimated using empirical
    distributions and stratified sampling over p(v_k) and p(x_n)"), computed as Chen et al. 2018's MIG code does.

    `posterior` maps factor classes [N, K] to the Gaussian posterior (μ, log σ²) [N, D] of their images.
    H[z_j]: q(z_j) is the mixture of the posteriors of `marginal` images with uniform factors (10,000 by default),
    scored at `draws` z drawn from q(z|x) of the first of them (2,000). H[z_j | v_k]: for each value v of factor k,
    `per_value` images (256) with v_k = v and the other factors uniform form q(z_j | v_k = v) and each gives one
    draw; the entropies are averaged over the values (p(v_k) uniform, as dSprites). Chen et al. use every dSprites
    image; these counts are sized for a CPU (see SAMPLES) and bias I a little upwards (a smaller stratum
    underestimates its entropy). Deterministic given `seed`.
    """
    marginal = marginal or SAMPLES.get("poster_marginal", POSTER_DEFAULTS["poster_marginal"])
    draws = min(draws or SAMPLES.get("poster_entropy_draws", POSTER_DEFAULTS["poster_entropy_draws"]), marginal)
    per_value = per_value or SAMPLES.get("poster_per_value", POSTER_DEFAULTS["poster_per_value"])
    rng = _rng(seed, "poster_information")
    generator = torch.Generator().manual_seed(int(rng.integers(2 ** 31)))

    def draw(factors: np.ndarray):
        mu, logvar = (torch.from_numpy(np.asarray(a, dtype=np.float32)) for a in posterior(factors))
        return mu, logvar, mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=generator)

    mu, logvar, z = draw(sample_factors(rng, marginal, factor_sizes))
    entropy = posterior_entropy(z[:draws], mu, logvar)  # [D]
    information = np.zeros((mu.shape[1], len(factor_sizes)))
    for k, size in enumerate(factor_sizes):
        factors = sample_factors(rng, size * per_value, factor_sizes)
        factors[:, k] = np.repeat(np.arange(size), per_value)
        mu, logvar, z = draw(factors)
        conditional = torch.stack([posterior_entropy(z_v, mu_v, lv_v) for z_v, mu_v, lv_v in
                                   zip(z.split(per_value), mu.split(per_value), logvar.split(per_value))]).mean(0)
        information[:, k] = (entropy - conditional).numpy()
    return information


def aam(posterior, factor_sizes: Sequence[int], seed: int = 0, **counts) -> float:
    """AAM (Eq. 2 of the poster) with the poster's estimator of I from q(z|x) (`posterior_information`)."""
    return aam_from_information(posterior_information(posterior, factor_sizes, seed, **counts))


def mmig(posterior, factor_sizes: Sequence[int], seed: int = 0, **counts) -> float:
    """MMIG (Eq. 3 of the poster) with the poster's estimator of I from q(z|x) (`posterior_information`);
    H(v_k) and I(v_k; v_k') of the uniform, independent factors are computed exactly (log |V_k| and 0)."""
    return mmig_uniform(posterior_information(posterior, factor_sizes, seed, **counts), factor_sizes)


def mmig_uniform(information: np.ndarray, factor_sizes: Sequence[int]) -> float:
    """Eq. 3 of the poster from I [D, K] for uniform, independent factors: H(v_k) = log |V_k|, I(v_k; v_k') = 0."""
    information = -np.sort(-np.asarray(information, dtype=np.float64), axis=0)
    denominator = np.log(np.asarray(factor_sizes, dtype=np.float64))
    keep = denominator > 0
    return float(np.mean((information[0, keep] - information[1, keep]) / denominator[keep]))


def _split(codes: np.ndarray, factors: np.ndarray):
    n_train = (2 * len(codes)) // 3
    return codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]


def sap(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> float:
    """Separated Attribute Predictability (Kumar et al. 2018) as disentanglement_lib's `sap_score.py` with
    discrete factors: for every (latent, factor) a `LinearSVC(C=0.01, class_weight="balanced")` on that one
    latent, test accuracy; mean over factors of the gap between the two most predictive latents.
    The first two thirds of the points train, the last third tests (10,000 / 5,000 by protocol).
    """
    from sklearn.svm import LinearSVC

    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    x_train, y_train, x_test, y_test = _split(codes, factors)
    accuracy = np.zeros((codes.shape[1], factors.shape[1]))
    for j in range(codes.shape[1]):
        for k in range(factors.shape[1]):
            if len(np.unique(y_train[:, k])) < 2:
                continue  # nothing to separate; the factor scores 0 for every latent
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():  # convergence warnings at C = 0.01 are the protocol's, not ours
                warnings.simplefilter("ignore")
                classifier.fit(x_train[:, j:j + 1], y_train[:, k])
            accuracy[j, k] = np.mean(classifier.predict(x_test[:, j:j + 1]) == y_test[:, k])
    ranked = np.sort(accuracy, axis=0)
    return float(np.mean(ranked[-1] - ranked[-2]))


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """scipy.stats.entropy of each row after normalising it, in the given base (as DCI uses it)."""
    p = p / p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix [D latents, K factors] (Eastwood & Williams
    2018, disentanglement_lib `dci.py`): 1 − entropy per latent (base K) weighted by the latent's share of
    importance, and 1 − entropy per factor (base D) weighted by the factor's share."""
    importance = np.abs(importance)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    padded = importance + 1e-11  # disentanglement_lib's guard against log 0
    disentanglement = np.sum((1 - _entropy_rows(padded, importance.shape[1])) * weights.sum(1) / weights.sum())
    completeness = np.sum((1 - _entropy_rows(padded.T, importance.shape[0])) * weights.sum(0) / weights.sum())
    return float(disentanglement), float(completeness)


def _worker_count(tasks: int) -> int:
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, min(tasks, cores))


def dci(codes: np.ndarray, factors: np.ndarray, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """DCI (Eastwood & Williams 2018) as disentanglement_lib's `dci.py`: a default `GradientBoostingClassifier`
    per factor on all latents, |feature importances| → disentanglement and completeness; informativeness is
    the mean test accuracy. Split as `sap`. Factors train in parallel threads (tree fitting releases the GIL)
    and a bar counts boosting stages; `random_state=seed` only fixes sklearn's tie-breaking for determinism.
    """
    from sklearn.ensemble import GradientBoostingClassifier

    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    x_train, y_train, x_test, y_test = _split(codes, factors)
    stages = GradientBoostingClassifier().n_estimators
    bar = tqdm(total=stages * factors.shape[1], desc="DCI boosted trees", leave=False, disable=not progress)

    def tick(*_) -> bool:
        bar.update(1)
        return False  # GradientBoostingClassifier stops early when its monitor returns True

    def fit(k: int) -> tuple[np.ndarray, float, float]:
        if len(np.unique(y_train[:, k])) < 2:
            bar.update(stages)
            return np.zeros(codes.shape[1]), 1.0, float(np.mean(y_test[:, k] == y_train[0, k]))
        model = GradientBoostingClassifier(random_state=seed)
        model.fit(x_train, y_train[:, k], monitor=tick)
        return (np.abs(model.feature_importances_), float(np.mean(model.predict(x_train) == y_train[:, k])),
                float(np.mean(model.predict(x_test) == y_test[:, k])))

    with concurrent.futures.ThreadPoolExecutor(_worker_count(factors.shape[1])) as pool:
        results = list(pool.map(fit, range(factors.shape[1])))
    bar.close()
    importance = np.stack([r[0] for r in results], axis=1)  # [D, K]
    disentanglement, completeness = dci_from_importance(importance)
    return {"disentanglement": disentanglement, "completeness": completeness,
            "informativeness": float(np.mean([r[2] for r in results])),
            "informativeness_train": float(np.mean([r[1] for r in results]))}


# ---------------------------------------------------------------- metrics that sample factors

def sample_factors(rng: np.random.Generator, count: int, factor_sizes: Sequence[int]) -> np.ndarray:
    """Uniform factor classes: int64 [count, K]."""
    return np.stack([rng.integers(size, size=count) for size in factor_sizes], axis=1)


def _beta_vae_points(representation: Representation, factor_sizes, count: int, group: int, rng):
    """Higgins et al. 2017 training points, all at once: for each point a random factor k is shared by
    `group` pairs; feature = mean over pairs of |z1 − z2|, label = k."""
    labels = rng.integers(len(factor_sizes), size=count)
    first = sample_factors(rng, count * group, factor_sizes).reshape(count, group, -1)
    second = sample_factors(rng, count * group, factor_sizes).reshape(count, group, -1)
    rows = np.arange(count)
    second[rows, :, labels] = first[rows, :, labels]
    z1 = representation(first.reshape(count * group, -1)).reshape(count, group, -1)
    z2 = representation(second.reshape(count * group, -1)).reshape(count, group, -1)
    return np.abs(z1 - z2).mean(axis=1), labels


def beta_vae_score(representation: Representation, factor_sizes: Sequence[int], seed: int = 0,
                   train: int | None = None, test: int | None = None, group: int | None = None) -> float:
    """The Higgins et al. 2017 metric as disentanglement_lib's `beta_vae.py`: 64 pairs per point,
    `LogisticRegression()` on 10,000 training points, accuracy on 5,000 evaluation points."""
    from sklearn.linear_model import LogisticRegression

    rng, group = _rng(seed, "beta_vae"), group or SAMPLES["group"]
    x_train, y_train = _beta_vae_points(representation, factor_sizes, train or SAMPLES["beta_vae_train"], group, rng)
    x_test, y_test = _beta_vae_points(representation, factor_sizes, test or SAMPLES["beta_vae_eval"], group, rng)
    if len(np.unique(y_train)) < 2:
        return float(np.mean(y_test == y_train[0]))
    classifier = LogisticRegression(random_state=seed)
    with warnings.catch_warnings():  # sklearn's default iteration cap is part of the protocol
        warnings.simplefilter("ignore")
        classifier.fit(x_train, y_train)
    return float(classifier.score(x_test, y_test))


def _factor_vae_votes(representation, factor_sizes, count, group, rng, scale, active) -> np.ndarray:
    """Kim & Mnih 2018 votes, all at once: fix one factor over `group` samples, vote for the active latent
    of least variance normalised by its global variance. Returns counts [K, D]."""
    labels = rng.integers(len(factor_sizes), size=count)
    factors = sample_factors(rng, count * group, factor_sizes).reshape(count, group, -1)
    rows = np.arange(count)
    factors[rows, :, labels] = factors[rows, 0, labels][:, None]
    codes = representation(factors.reshape(count * group, -1)).reshape(count, group, -1)
    local = codes.var(axis=1, ddof=1)[:, active] / scale[active]  # [count, active]
    winners = np.flatnonzero(active)[np.argmin(local, axis=1)]
    votes = np.zeros((len(factor_sizes), len(scale)), dtype=np.int64)
    np.add.at(votes, (labels, winners), 1)
    return votes


def factor_vae_score(representation: Representation, factor_sizes: Sequence[int], seed: int = 0,
                     train: int | None = None, test: int | None = None, group: int | None = None,
                     variance_points: int | None = None) -> float:
    """The Kim & Mnih 2018 metric as disentanglement_lib's `factor_vae.py`: global variances from 10,000
    samples, latents with std < 0.05 pruned, 64 samples per vote, a majority-vote classifier from 10,000
    votes, its accuracy on 5,000 more. Returns 0 when every latent is pruned, as the reference does."""
    rng, group = _rng(seed, "factor_vae"), group or SAMPLES["group"]
    codes = representation(sample_factors(rng, variance_points or SAMPLES["factor_vae_variance"], factor_sizes))
    variance = np.var(codes, axis=0, ddof=1)
    active = np.sqrt(variance) >= FACTOR_VAE_PRUNE_STD
    if not active.any():
        return 0.0
    train_votes = _factor_vae_votes(representation, factor_sizes, train or SAMPLES["factor_vae_train"], group,
                                    rng, variance, active)
    test_votes = _factor_vae_votes(representation, factor_sizes, test or SAMPLES["factor_vae_eval"], group,
                                   rng, variance, active)
    classifier = np.argmax(train_votes, axis=0)  # the factor each latent votes for most often
    return float(test_votes[classifier, np.arange(len(classifier))].sum() / test_votes.sum())


# ---------------------------------------------------------------- a trained model on dSprites

class DatasetCodes:
    """Representation function of a model on a dataset with factors: factor classes [N, K] → μ [N, D].

    Codes are cached per dataset row: the protocols draw ~2.9 million factor combinations from dSprites'
    737,280 images, so each image is rendered and encoded at most once, in batches.
    """

    def __init__(self, model, dataset, batch_size: int | None = None, progress: bool = True):
        self.model, self.dataset, self.progress = model, dataset, progress
        on_cpu = next(model.parameters()).device.type == "cpu"
        self.batch_size = batch_size or (128 if on_cpu else 4096)  # see _encode for the CPU figure
        sizes = np.array(dataset.factor_sizes, dtype=np.int64)
        self.strides = np.array([int(np.prod(sizes[k + 1:])) for k in range(len(sizes))], dtype=np.int64)
        self.codes = np.zeros((int(np.prod(sizes)), model.latent_dim), dtype=np.float32)
        self.logvars = np.zeros_like(self.codes)  # log σ² of q(z|x), for the poster's estimator (`posterior`)
        self.known = np.zeros(len(self.codes), dtype=bool)

    def __call__(self, factors: np.ndarray) -> np.ndarray:
        rows = np.asarray(factors, dtype=np.int64) @ self.strides
        missing = np.unique(rows[~self.known[rows]])
        if missing.size:
            self._encode(missing)
        return self.codes[rows]

    def posterior(self, factors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Gaussian posterior of each row's image: (μ, log σ²), each [N, D]; same cache as `__call__`."""
        rows = np.asarray(factors, dtype=np.int64) @ self.strides
        self(factors)
        return self.codes[rows], self.logvars[rows]

    def _encode(self, rows: np.ndarray) -> None:
        device = next(self.model.parameters()).device
        factors = torch.from_numpy((rows[:, None] // self.strides) % np.array(self.dataset.factor_sizes))
        classes = torch.cat([torch.zeros(len(rows), 1, dtype=torch.int64), factors], dim=1)  # colour 0 first
        chunks = classes.split(self.batch_size)
        # Measured on 2 CPU cores: a channels-last copy of the encoder runs ~1.5x faster, and batches of up to
        # ~160 images ~2x faster than 256 or more (16,000 vs 7,500 images/s). The model itself is left as it is.
        encoder = copy.deepcopy(self.model.encoder).eval().to(memory_format=torch.channels_last)
        bar = tqdm(chunks, desc="encoding images", leave=False, disable=not self.progress or len(chunks) < 100)
        with torch.inference_mode():
            for start, chunk in zip(range(0, len(rows), self.batch_size), bar):
                x = self.dataset.images(chunk).to(device).contiguous(memory_format=torch.channels_last)
                mu, logvar = encoder(x)  # [B, D] each
                self.codes[rows[start:start + len(chunk)]] = mu.float().cpu().numpy()
                self.logvars[rows[start:start + len(chunk)]] = logvar.float().cpu().numpy()
        self.known[rows] = True


PROTOCOL = ("disentanglement_lib (Locatello et al. 2019) defaults; AAM/MMIG: Dubois et al. poster Eq. 2-3 with I "
            "estimated from q(z|x) by stratified sampling (Chen et al. 2018's MIG code); aam_histogram/mmig_histogram: "
            "the same equations on MIG's histogram estimate")


def evaluate(model, dataset, seed: int = 0, include_dci: bool = True, progress: bool = True,
             include_beta_vae: bool = True) -> dict[str, float]:
    """Every score of a model on a dataset with ground-truth factors, with the seconds each took (DCI and BetaVAE,
    the slow ones by protocol, can be left out)."""
    representation = DatasetCodes(model, dataset, progress=progress)
    started = time.perf_counter()
    factors = sample_factors(_rng(seed, "fixed_points"), max(SAMPLES["mig"], SAMPLES["split"]), dataset.factor_sizes)
    codes = representation(factors)  # the first 10,000 serve MIG/AAM/MMIG, all 15,000 serve SAP and DCI
    scores, seconds, poster = {}, {"encode_fixed_points": time.perf_counter() - started}, {}
    array_metrics = {"mig": lambda: mig(codes[:SAMPLES["mig"]], factors[:SAMPLES["mig"]]),
                     "aam_histogram": lambda: aam_histogram(codes[:SAMPLES["mig"]], factors[:SAMPLES["mig"]]),
                     "mmig_histogram": lambda: mmig_histogram(codes[:SAMPLES["mig"]], factors[:SAMPLES["mig"]]),
                     "poster_information": lambda: poster.update(
                         information=posterior_information(representation.posterior, dataset.factor_sizes, seed)),
                     "aam": lambda: aam_from_information(poster["information"]),
                     "mmig": lambda: mmig_uniform(poster["information"], dataset.factor_sizes),
                     "sap": lambda: sap(codes[:SAMPLES["split"]], factors[:SAMPLES["split"]], seed),
                     "beta_vae": lambda: beta_vae_score(representation, dataset.factor_sizes, seed),
                     "factor_vae": lambda: factor_vae_score(representation, dataset.factor_sizes, seed)}
    if not include_beta_vae:
        del array_metrics["beta_vae"]
    if include_dci:
        array_metrics["dci"] = lambda: dci(codes[:SAMPLES["split"]], factors[:SAMPLES["split"]], seed, progress)
    for name, compute in array_metrics.items():
        started = time.perf_counter()
        value = compute()
        seconds[name] = time.perf_counter() - started
        if value is None:  # poster_information only fills `poster` for aam and mmig
            continue
        scores.update({f"dci_{k}": v for k, v in value.items()} if isinstance(value, dict) else {name: value})
    return {**{k: round(v, 4) for k, v in scores.items()}, "seconds": {k: round(v, 1) for k, v in seconds.items()}}


def has_factors(dataset) -> bool:
    """Datasets with ground truth (dSprites) expose factor_sizes; CelebA does not."""
    return hasattr(dataset, "factor_sizes")


def write_scores(path: str, step: int, scores: dict) -> None:
    """Add the scores of `step` to the YAML file at `path` (keyed by step, protocol named); written atomically."""
    record = {}
    if os.path.exists(path):
        with open(path) as f:
            record = yaml.safe_load(f) or {}
    record[int(step)] = {"protocol": PROTOCOL, "samples": dict(SAMPLES), **scores}
    handle, temporary = tempfile.mkstemp(dir=os.path.dirname(os.path.abspath(path)), suffix=".tmp")
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(temporary, 0o666 & ~umask)  # mkstemp's 0600 would hide the scores from a group
    with os.fdopen(handle, "w") as f:
        yaml.safe_dump(dict(sorted(record.items())), f, sort_keys=False)
    os.replace(temporary, path)


def record_run(model, dataset, folder: str, step: int, params, say: Callable[[str], object] = print) -> dict | None:
    """`record` with a run's own choices: its seed, metrics_dci and metrics_beta_vae."""
    return record(model, dataset, folder, step, params.seed, params.metrics_dci, say,
                  include_beta_vae=params.metrics_beta_vae)


def record(model, dataset, folder: str, step: int, seed: int = 0, include_dci: bool = True,
           say: Callable[[str], object] = print, include_beta_vae: bool = True) -> dict | None:
    """Compute the scores for `step`, add them to folder/metrics.yaml and say one line; a dataset without
    ground-truth factors gets a one-line notice instead."""
    if not has_factors(dataset):
        say(f"metrics skipped: {type(dataset).__name__} has no ground-truth factors")
        return None
    scores = evaluate(model, dataset, seed, include_dci, include_beta_vae=include_beta_vae)
    write_scores(os.path.join(folder, "metrics.yaml"), step, scores)
    values = " ".join(f"{k} {v:.3f}" for k, v in scores.items() if k != "seconds")
    say(f"metrics at step {step}: {values} ({sum(scores['seconds'].values()):.0f} s); in {folder}/metrics.yaml")
    return scores
