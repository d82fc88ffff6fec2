"""Published figures that named sweeps reproduce, each with its source and the protocol behind each number.

A sweep report (betavae/pictures/sweep_report.py) shows them beside the measured mean ± std of the setting they
belong to. Full citations: docs/references.md.
"""
from __future__ import annotations

# The protocols of this repository's scores (betavae/evaluation/metrics.py PROTOCOL, docs/metrics.md); AAM and MMIG
# by the estimator a sweep's aam_estimator chose (`measured`).
ESTIMATORS = {"quadrature": "I[z_j; v_k] by quadrature of the posterior mixtures over every image (this "
                            "repository's estimator)",
              "published": "I[z_j; v_k] as the poster's code estimates it (aam_estimator=published)"}
MEASURED = {
    "aam": "Dubois et al. 2019 Eq. 2, {estimator}",
    "mmig": "Dubois et al. 2019 Eq. 3, {estimator}",
    "beta_vae": "disentanglement_lib's BetaVAE score: mean |z1 - z2| over 64 pairs, LogisticRegression(), "
                "10,000 train / 5,000 eval points",
}



def measured(quantity: str, estimator: str = "quadrature") -> str:
    """The protocol of a measured quantity, AAM and MMIG naming the estimator the sweep used."""
    return MEASURED.get(quantity, "docs/metrics.md").format(estimator=ESTIMATORS.get(estimator, estimator))


# Sweep preset → source, each figure's protocol, and the figures per setting (swept param → value, as in SWEEPS).
SWEEP_FIGURES: dict[str, dict] = {
    "poster_table1_dsprites": {
        "source": "Dubois, Kastanos, Lines & Melman 2019, poster \"Understanding disentangling in VAE\", Table 1, "
                  "dSprites",
        "protocol": {"aam": "the poster's Eq. 2, I as its code estimates it (docs/metrics.md: on the authors' "
                            "released models it differs from this repository's estimator)",
                     "mmig": "the poster's Eq. 3, I as for its AAM"},
        "settings": [
            ({"objective": "vae", "beta": 1.0, "gamma": 1.0}, {"aam": "0.20", "mmig": "7.0e-4"}),
            ({"objective": "betaH", "beta": 4.0, "gamma": 1.0}, {"aam": "0.65", "mmig": "3.3e-2"}),
            ({"objective": "betaH", "beta": 50.0, "gamma": 1.0}, {"aam": "0.08", "mmig": "4.0e-4"}),
            ({"objective": "betaB", "beta": 1.0, "gamma": 1000.0}, {"aam": "0.12", "mmig": "2.0e-4"}),
            ({"objective": "factor", "beta": 1.0, "gamma": 30.0}, {"aam": "0.87", "mmig": "3.3e-2"}),
        ],
        "note": "The poster does not state its training length, γ values or seeds: compare orders and ranks.",
    },
    "beta_tradeoff_dsprites": {
        "source": "Higgins et al. 2017, β-VAE (ICLR), dSprites",
        "protocol": {"beta_vae": "Higgins et al.'s own metric (their linear classifier and sample counts), read "
                                 "approximately"},
        "settings": [({"beta": 0.01, "latent_dim": 10}, {"beta_vae": "≈ 0.99 (β = 4)"})],
        "note": "β = 4 with 10 latents on 64 × 64 pixels is β_norm = 4·10/4096 ≈ 0.01; a VAE (β = 1, "
                "β_norm ≈ 0.0024, not on this grid) scores ≈ 0.62. Fig. 6's other points are a picture, not "
                "numbers: compare the curves' shapes in tradeoff.png. The score saturates easily.",
    },
    "original_celeba": {
        "source": "the original TensorFlow β-VAE project on CelebA (Yukun Chen)",
        "protocol": {},
        "settings": [],
        "note": "It published traversals, not scores: compare the pictures below with its descriptions (β = 10: "
                "background colour and gender; β = 100: background and shading; β ≥ 1000: collapsed).",
    },
}
