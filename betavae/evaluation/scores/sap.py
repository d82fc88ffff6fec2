"""SAP, Separated Attribute Predictability (Kumar et al. 2018), as disentanglement_lib's `sap_score.py`."""
from __future__ import annotations

import warnings

import numpy as np

from betavae.evaluation.context import Context, Metric


def sap_from_split(x_train, y_train, x_test, y_test, seed: int = 0) -> float:
    """For every (latent, factor) a `LinearSVC(C=0.01, class_weight="balanced")` on that one latent, test accuracy;
    mean over factors of the gap between the two most predictive latents (discrete factors)."""
    from sklearn.svm import LinearSVC

    accuracy = np.zeros((x_train.shape[1], y_train.shape[1]))
    for j in range(x_train.shape[1]):
        for k in range(y_train.shape[1]):
            if len(np.unique(y_train[:, k])) < 2:
                continue  # nothing to separate; the factor scores 0 for every latent
            classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=seed)
            with warnings.catch_warnings():  # convergence warnings at C = 0.01 are the protocol's, not ours
                warnings.simplefilter("ignore")
                classifier.fit(x_train[:, j:j + 1], y_train[:, k])
            accuracy[j, k] = np.mean(classifier.predict(x_test[:, j:j + 1]) == y_test[:, k])
    ranked = np.sort(accuracy, axis=0)
    return float(np.mean(ranked[-1] - ranked[-2]))


def sap(codes: np.ndarray, factors: np.ndarray, seed: int = 0) -> float:
    """SAP of fixed arrays: the first two thirds of the points train, the last third tests (10,000 / 5,000)."""
    codes, factors = np.asarray(codes, dtype=np.float64), np.asarray(factors)
    n_train = (2 * len(codes)) // 3
    return sap_from_split(codes[:n_train], factors[:n_train], codes[n_train:], factors[n_train:], seed)


def compute(context: Context) -> dict:
    return {"sap": sap_from_split(*context.split(), context.seed)}


METRIC = Metric("sap", compute, headline=("sap",), needs=frozenset({"factors"}), default=True,
                reference="Kumar et al. 2018; disentanglement_lib sap_score.py")
