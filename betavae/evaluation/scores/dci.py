"""DCI disentanglement, completeness and informativeness (Eastwood & Williams 2018), as disentanglement_lib's
`dci.py`. Its boosted trees are the ones the boosted-trees downstream task and fairness fit on the same points, so
one evaluation fits them once (`boosted_trees`)."""
from __future__ import annotations

import numpy as np
from tqdm import tqdm

from betavae.evaluation.context import Context, Metric


def _entropy_rows(p: np.ndarray, base: int) -> np.ndarray:
    """scipy.stats.entropy of each row after normalising it, in the given base (as DCI uses it)."""
    p = p / p.sum(axis=1, keepdims=True)
    return -np.sum(p * np.log(p), axis=1) / np.log(base)


def dci_from_importance(importance: np.ndarray) -> tuple[float, float]:
    """Disentanglement and completeness of an importance matrix [D latents, K factors]: 1 − entropy per latent
    (base K) weighted by the latent's share of importance, and 1 − entropy per factor (base D) weighted by the
    factor's share."""
    importance = np.abs(importance)
    weights = importance if importance.sum() > 0 else np.ones_like(importance)
    padded = importance + 1e-11  # disentanglement_lib's guard against log 0
    disentanglement = np.sum((1 - _entropy_rows(padded, importance.shape[1])) * weights.sum(1) / weights.sum())
    completeness = np.sum((1 - _entropy_rows(padded.T, importance.shape[0])) * weights.sum(0) / weights.sum())
    return float(disentanglement), float(completeness)


def fit_boosted_trees(x_train, y_train, seed: int, progress: bool, map_=None) -> list:
    """One default `GradientBoostingClassifier` per factor (None for a factor with one value in the sample), the
    factors in parallel threads, the slowest (most classes) first; a bar counts boosting stages.
    `random_state=seed` only fixes scikit-learn's tie-breaking, for determinism."""
    from sklearn.ensemble import GradientBoostingClassifier

    stages = GradientBoostingClassifier().n_estimators
    bar = tqdm(total=stages * y_train.shape[1], desc="boosted trees", leave=False, disable=not progress)

    def tick(*_) -> bool:
        bar.update(1)
        return False  # GradientBoostingClassifier stops early when its monitor returns True

    def fit(k: int):
        if len(np.unique(y_train[:, k])) < 2:
            bar.update(stages)
            return None
        return GradientBoostingClassifier(random_state=seed).fit(x_train, y_train[:, k], monitor=tick)

    order = sorted(range(y_train.shape[1]), key=lambda k: -len(np.unique(y_train[:, k])))
    fitted = dict(zip(order, (map_ or (lambda f, items: [f(i) for i in items]))(fit, order)))
    bar.close()
    return [fitted[k] for k in range(y_train.shape[1])]


def predict(model, x: np.ndarray, y_train_k: np.ndarray) -> np.ndarray:
    """A fitted model's predictions; where none could be fitted (a factor constant in training, too few points), the
    training points' majority class (for a constant factor, its one value)."""
    if model is not None:
        return model.predict(x)
    values, counts = np.unique(y_train_k, return_counts=True)
    return np.full(len(x), values[np.argmax(counts)])


def boosted_trees(context: Context) -> list:
    """The per-factor boosted trees on the shared 10,000 training points, fitted once per evaluation."""
    x_train, y_train, _, _ = context.split()
    return context.shared("boosted_trees", lambda: fit_boosted_trees(x_train, y_train, context.seed,
                                                                     context.progress, context.map))


def dci_from_models(models: list, x_train, y_train, x_test, y_test) -> dict[str, float]:
    importance = np.stack([m.feature_importances_ if m is not None else np.zeros(x_train.shape[1])
                           for m in models], axis=1)  # [D, K]
    disentanglement, completeness = dci_from_importance(importance)
    train = [np.mean(predict(m, x_train, y_train[:, k]) == y_train[:, k]) for k, m in enumerate(models)]
    test = [np.mean(predict(m, x_test, y_train[:, k]) == y_test[:, k]) for k, m in enumerate(models)]
    return {"dci_disentanglement": disentanglement, "dci_completeness": completeness,
            "dci_informativeness": float(np.mean(test)), "dci_informativeness_train": float(np.mean(train))}


def dci(codes: np.ndarray, factors: np.ndarray, seed: int = 0, progress: bool = True) -> dict[str, float]:
    """DCI of fixed arrays, split as SAP (first two thirds train): disentanglement, completeness,
    informativeness (mean test accuracy) and informativeness_train."""
    from betavae.evaluation.context import Context as _Context

    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    n_train = (2 * len(codes)) // 3
    x_train, y_train, x_test, y_test = codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:]
    models = fit_boosted_trees(x_train, y_train, seed, progress, _Context(None, None).map)
    return {k.removeprefix("dci_"): v for k, v in dci_from_models(models, x_train, y_train, x_test, y_test).items()}


def compute(context: Context) -> dict:
    return dci_from_models(boosted_trees(context), *context.split())


METRIC = Metric("dci", compute, headline=("dci_disentanglement", "dci_completeness", "dci_informativeness"),
                needs=frozenset({"factors"}), default=True,
                reference="Eastwood & Williams 2018; disentanglement_lib dci.py")
