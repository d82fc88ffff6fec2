"""What an objective is, and the registry of them. Torch-free, so that params, --list-params, sweeps and packing read
it without loading a network; the functions live in losses.py, named here (docs/objectives.md).

The contract. An objective's loss(x, x_logits, mu, logvar, z, step, params) returns a dict: "loss" (0-dim, nats per
image: what backward takes), "kl_per_dim" [D] (each latent's KL to the prior, batch mean) and each term and weight it
uses as a 0-dim tensor (every one is logged). `build(params, dataset_size, device)`, when named, makes the callable a
run uses instead. A `stateful` objective's callable has networks or optimisers of its own: after_step() → dict
(called after the VAE's optimiser step; its terms are logged), state_dict() and load_state_dict() (kept in the
checkpoint, restored on resume, in a pack per model). `packable`: it may share a pack's step (betavae/scale/packed.py);
a pack of one that is not trains its models one after another and says why in one line. `batch_estimate`: it
estimates q(z) across the batch, so batch_size must be at least 2.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Objective:
    loss: str                    # the name of its function in losses.py
    reference: str
    build: str = ""              # the name of its builder in losses.py, when it needs more than params
    stateful: bool = False
    packable: bool = True
    batch_estimate: bool = False
    why_not_packed: str = ""


# A new objective is a function in losses.py and one entry here: params accepts its name, the tests train it
# alone and in a pack of two (tests/test_objective_contract.py).
REGISTRY: dict[str, Objective] = {
    "betaH": Objective("beta_vae", "Higgins et al. 2017"),
    "vae": Objective("vae", "Kingma & Welling 2014"),
    "betaB": Objective("capacity_vae", "Burgess et al. 2018"),
    "factor": Objective("factor_vae", "Kim & Mnih 2018", build="build_factor", stateful=True, packable=False,
                        batch_estimate=True,
                        why_not_packed="its discriminator's permutations draw from the random stream a pack shares"),
    "btcvae": Objective("beta_tc_vae", "Chen et al. 2018", build="build_btcvae", batch_estimate=True),
    "dipI": Objective("dip_vae_i", "Kumar et al. 2018"),
    "dipII": Objective("dip_vae_ii", "Kumar et al. 2018"),
}
