"""Modularity and explicitness (Ridgeway & Mozer 2018), as disentanglement_lib's `modularity_explicitness.py`."""
from __future__ import annotations

import numpy as np

from betavae.evaluation.context import Context, Metric
from betavae.evaluation.discretise import histogram_discretize, mutual_information_matrix


def modularity(information: np.ndarray) -> float:
    """From I [D codes, K factors]: per code θ = I², δ = (Σθ − max θ) / (max θ · (K − 1)), score 1 − δ; a code with
    max θ = 0 scores 0; mean over codes. One factor (K = 1) leaves nothing to be modular against: every informative
    code scores 1."""
    squared = np.square(np.asarray(information, dtype=np.float64))
    top = squared.max(axis=1)
    spread = squared.shape[1] - 1.0
    delta = np.divide(squared.sum(axis=1) - top, top * spread, out=np.zeros_like(top), where=(top > 0) & (spread > 0))
    return float(np.mean(np.where(top > 0, 1.0 - delta, 0.0)))


def _one_hot(y: np.ndarray, classes: np.ndarray) -> np.ndarray:
    return (np.asarray(y)[:, None] == classes[None, :]).astype(np.int64)


def _roc_auc(y: np.ndarray, probabilities: np.ndarray, classes: np.ndarray) -> float:
    """Macro ROC-AUC of the one-hot labels against predict_proba, as MultiLabelBinarizer + roc_auc_score; classes
    with no positive or no negative point in `y` (where ROC-AUC is undefined) are left out."""
    from sklearn.metrics import roc_auc_score

    labels = _one_hot(y, classes)
    defined = (labels.sum(0) > 0) & (labels.sum(0) < len(labels))
    if not defined.any():
        return 1.0
    return float(roc_auc_score(labels[:, defined], probabilities[:, defined]))


def explicitness_per_factor(x_train, y_train, x_test, y_test, seed: int = 0) -> tuple[float, float]:
    """ROC-AUC of a `LogisticRegression()` from all (z-scored) codes to one factor, on train and on test points."""
    from sklearn.linear_model import LogisticRegression

    classes = np.unique(y_train)
    if len(classes) < 2:
        return 1.0, 1.0  # a constant factor is predicted exactly
    model = LogisticRegression(random_state=seed).fit(x_train, y_train)  # its iteration-cap warning: Context.map
    return (_roc_auc(y_train, model.predict_proba(x_train), model.classes_),
            _roc_auc(y_test, model.predict_proba(x_test), model.classes_))


def modularity_explicitness(x_train, y_train, x_test, y_test, seed: int = 0, map_=map) -> dict[str, float]:
    """The three scores from 10,000 training and 5,000 test points (codes [N, D], factor classes [N, K])."""
    information = mutual_information_matrix(histogram_discretize(x_train), np.asarray(y_train))
    mean, std = x_train.mean(axis=0), x_train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant code stays 0 rather than dividing by zero
    train, test = (x_train - mean) / std, (x_test - mean) / std
    scores = list(map_(lambda k: explicitness_per_factor(train, y_train[:, k], test, y_test[:, k], seed),
                       range(y_train.shape[1])))
    return {"modularity_score": modularity(information),
            "explicitness_score_train": float(np.mean([s[0] for s in scores])),
            "explicitness_score_test": float(np.mean([s[1] for s in scores]))}


def compute(context: Context) -> dict:
    return modularity_explicitness(*context.split(), seed=context.seed, map_=context.map)


METRIC = Metric("modularity_explicitness", compute,
                headline=("modularity_score", "explicitness_score_test"), needs=frozenset({"factors"}), default=True,
                reference="Ridgeway & Mozer 2018; disentanglement_lib modularity_explicitness.py")
