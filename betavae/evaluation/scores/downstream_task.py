"""Downstream task accuracy (Locatello et al. 2019, disentanglement_lib's `downstream_task.py`): how well each factor
is predicted from the codes by cross-validated logistic regression or by gradient-boosted trees, trained on 10,
100, 1,000 and 10,000 points and tested on 5,000; per factor, and their mean and minimum."""
from __future__ import annotations

import numpy as np

from betavae.evaluation import protocol
from betavae.evaluation.context import Context, Metric
from betavae.evaluation.scores.dci import boosted_trees, predict


def logistic_regression_cv(seed: int):
    """disentanglement_lib's `logistic_regression_cv`: `LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5))`."""
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import KFold

    return LogisticRegressionCV(Cs=10, cv=KFold(n_splits=5), random_state=seed)


def gradient_boosting_classifier(seed: int):
    """disentanglement_lib's `gradient_boosting_classifier`: a default `GradientBoostingClassifier()`."""
    from sklearn.ensemble import GradientBoostingClassifier

    return GradientBoostingClassifier(random_state=seed)


def _fit(build, x: np.ndarray, y: np.ndarray):
    """A fitted predictor, or None where the protocol's model cannot be fitted: one class among the training points,
    or a cross-validation fold with a single class (possible at 10 points); None predicts the majority class."""
    if len(np.unique(y)) < 2:
        return None
    try:
        return build().fit(x, y)  # convergence and rare-class warnings at small sizes: silenced by Context.map
    except ValueError:
        return None


def accuracies(models: list, x_train, y_train, x_test, y_test, prefix: str) -> dict[str, float]:
    """disentanglement_lib's keys for one training size: `{n}:mean_train_accuracy`, ..., per factor `{n}:...factor_{k}`."""
    train = [float(np.mean(predict(m, x_train, y_train[:, k]) == y_train[:, k])) for k, m in enumerate(models)]
    test = [float(np.mean(predict(m, x_test, y_train[:, k]) == y_test[:, k])) for k, m in enumerate(models)]
    scores = {f"{prefix}:mean_train_accuracy": float(np.mean(train)), f"{prefix}:mean_test_accuracy": float(np.mean(test)),
              f"{prefix}:min_train_accuracy": float(np.min(train)), f"{prefix}:min_test_accuracy": float(np.min(test))}
    for k in range(len(models)):
        scores[f"{prefix}:train_accuracy_factor_{k}"] = train[k]
        scores[f"{prefix}:test_accuracy_factor_{k}"] = test[k]
    return scores


def sizes() -> list[int]:
    """The training sizes of the protocol that the shared training points hold."""
    return [n for n in protocol.count("downstream_train") if n <= protocol.train_count()]


def downstream(context: Context, name: str, build) -> dict[str, float]:
    x_train, y_train, x_test, y_test = context.split()
    scores = {}
    for n in sizes():
        if n == protocol.train_count() and name == BOOSTED_TREES.name:
            models = boosted_trees(context)  # the same classifier on the same points as DCI: fitted once
        else:
            order = sorted(range(y_train.shape[1]), key=lambda k: -len(np.unique(y_train[:n, k])))
            fitted = context.map(lambda k: _fit(lambda: build(context.seed), x_train[:n], y_train[:n, k]), order)
            models = [dict(zip(order, fitted))[k] for k in range(y_train.shape[1])]
        scores.update(accuracies(models, x_train[:n], y_train[:n], x_test, y_test, f"{name}:{n}"))
    return scores


def _headline(name: str):
    """The mean test accuracy at the second-smallest and the largest training size (100 and 10,000)."""
    return lambda: tuple(f"{name}:{n}:mean_test_accuracy" for n in sorted(set(sizes()[1:2] + sizes()[-1:])))


LOGISTIC_REGRESSION = Metric(
    "downstream_task_logistic_regression",
    lambda context: downstream(context, "downstream_task_logistic_regression", logistic_regression_cv),
    headline=_headline("downstream_task_logistic_regression"), needs=frozenset({"factors"}),
    reference="Locatello et al. 2019; disentanglement_lib downstream_task.py, logistic_regression_cv")
BOOSTED_TREES = Metric(
    "downstream_task_boosted_trees",
    lambda context: downstream(context, "downstream_task_boosted_trees", gradient_boosting_classifier),
    headline=_headline("downstream_task_boosted_trees"), needs=frozenset({"factors"}),
    reference="Locatello et al. 2019; disentanglement_lib downstream_task.py, gradient_boosting_classifier")
