"""Fairness (betavae/evaluation/scores/fairness.py): closed forms and constructed codes."""
import numpy as np
import pytest

from betavae.evaluation.scores.fairness import compute, inter_group_fairness, scores_dict
from metric_cases import context


def test_total_variation_of_known_counts():
    assert inter_group_fairness(np.array([[10, 10], [10, 10]])) == pytest.approx((0.0, 0.0))
    assert inter_group_fairness(np.array([[10, 0], [0, 10]])) == pytest.approx((0.5, 0.5))
    assert inter_group_fairness(np.array([[10, 0], [0, 30]])) == pytest.approx((0.375, 0.75))


def test_the_scores_dict_has_disentanglement_lib_s_keys():
    result = scores_dict(np.array([[0, 1, 2], [3, 0, 5], [6, 7, 0]], dtype=float), "mean_fairness")
    assert result["mean_fairness:pred0:sens2"] == 2 and result["mean_fairness:pred1:mean_sens"] == 4
    assert result["mean_fairness:mean_pred:mean_sens"] == pytest.approx(4.0)
    assert result["mean_fairness:max_pred:max_sens"] == 7 and len(result) == 6 + 4 * 3 + 8


@pytest.mark.filterwarnings("ignore::UserWarning")
def test_independent_codes_are_fair_mixed_codes_are_not():
    fair, mixed = compute(context("identity")), compute(context("rotated"))
    assert fair["mean_fairness:mean_pred:mean_sens"] < 0.1
    assert mixed["mean_fairness:mean_pred:mean_sens"] > fair["mean_fairness:mean_pred:mean_sens"] + 0.1


def test_the_counts_match_disentanglement_lib_s_per_value_loop():
    """fairness() predicts all of a pair's intervened rows in one call; the counts are those of one call per value."""
    from betavae.evaluation import protocol
    from betavae.evaluation.scores.dci import predict
    from betavae.evaluation.scores.fairness import fairness

    class Rows:  # a row-wise predictor, as a fitted classifier is
        def __init__(self, k, classes):
            self.k, self.classes = k, classes

        def predict(self, codes):
            return np.floor(np.abs(codes[:, self.k]) * 7).astype(np.int64) % self.classes

    case = context("rotated")
    _, y_train, _, _ = case.split()
    models = [Rows(k, int(y_train[:, k].max()) + 1) for k in range(len(case.factor_sizes))]
    rng, sizes = protocol.rng(case.seed, "fairness"), case.factor_sizes
    mean = np.zeros((len(sizes), len(sizes)))
    for i in range(len(sizes)):
        predicted = int(y_train[:, i].max()) + 1
        for j in [j for j in range(len(sizes)) if j != i]:
            original, counts = case.sampler.sample(rng, protocol.count("fairness_per_class")), []
            for value in range(sizes[j]):
                intervened = original.copy()
                intervened[:, j] = value
                labels = predict(models[i], case.representation(intervened), y_train[:, i]).astype(np.int64)
                counts.append(np.bincount(labels, minlength=predicted)[:predicted])
            mean[i, j] = inter_group_fairness(np.stack(counts, axis=1))[0]
    result = fairness(case.representation, case.sampler, models, y_train, sizes, case.seed)
    assert [result[f"mean_fairness:pred{i}:sens{j}"] for i in range(len(sizes)) for j in range(len(sizes)) if i != j] \
        == pytest.approx([mean[i, j] for i in range(len(sizes)) for j in range(len(sizes)) if i != j])
