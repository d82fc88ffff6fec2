"""Other projects' trained Burgess et al. networks, opened as this repository's checkpoints so that every picture
and score works on them: disentangling-vae's results folders (Dubois et al.'s code: `model.pt` + `specs.json`) and
1Konny/Beta-VAE's checkpoints of `BetaVAE_B`; and the download of disentangling-vae's released dSprites models.

Both peers write the same layers as betavae/network.py; only the names differ, and disentangling-vae's last encoder
layer interleaves μ and log σ² (μ_j in row 2j, log σ²_j in row 2j + 1) where ours puts μ first, then log σ².
"""
from __future__ import annotations

import json
import os

import torch

from betavae.checkpoints import CHECKPOINT_FORMAT, checked
from betavae.download import Remote, fetch
from betavae.errors import UserError

LAYOUTS = ("a run folder or checkpoint.pt written by main.py, a disentangling-vae results folder (model.pt and "
           "specs.json) or a 1Konny/Beta-VAE checkpoint of BetaVAE_B")

# disentangling-vae's names → ours (betavae/network.py), weight and bias alike.
DISVAE_NAMES = {
    "encoder.conv1": "encoder.convs.0", "encoder.conv2": "encoder.convs.2", "encoder.conv3": "encoder.convs.4",
    "encoder.conv_64": "encoder.convs.6", "encoder.lin1": "encoder.fc.0", "encoder.lin2": "encoder.fc.2",
    "encoder.mu_logvar_gen": "encoder.fc.4", "decoder.lin1": "decoder.fc.0", "decoder.lin2": "decoder.fc.2",
    "decoder.lin3": "decoder.fc.4", "decoder.convT_64": "decoder.deconvs.0", "decoder.convT1": "decoder.deconvs.2",
    "decoder.convT2": "decoder.deconvs.4", "decoder.convT3": "decoder.deconvs.6"}
# 1Konny's nn.Sequential indices (a View sits at encoder.8 and decoder.6) → ours.
KONNY_NAMES = {**{f"encoder.{i}": f"encoder.convs.{i}" for i in (0, 2, 4, 6)},
               "encoder.9": "encoder.fc.0", "encoder.11": "encoder.fc.2", "encoder.13": "encoder.fc.4",
               "decoder.0": "decoder.fc.0", "decoder.2": "decoder.fc.2", "decoder.4": "decoder.fc.4",
               **{f"decoder.{i}": f"decoder.deconvs.{j}" for i, j in ((7, 0), (9, 2), (11, 4), (13, 6))}}

# disentangling-vae's loss names → this repository's objectives; their weights → our params.
DISVAE_OBJECTIVES = {"VAE": "vae", "betaH": "betaH", "betaB": "betaB", "factor": "factor", "btcvae": "btcvae"}
DISVAE_DATASETS = {"dsprites": ("dsprites", 737_280), "celeba": ("celeba", 202_599)}

DISVAE_COMMIT = "f0452191bab6d94eba0b4e6a065f74dcfd54ac52"
DISVAE_LICENCE = "MIT licence, YannDubs/disentangling-vae"
_SHA = {  # (model.pt, specs.json) SHA-256 and specs.json length; every model.pt is 2,012,328 bytes
    "VAE_dsprites": ("d59cf8691ecf38e99784beabfd664c92543bec2232135da8dda07b7d8fb69154",
                     "4582396254835b49787d037f8ae39872c1c6281bf519636086fcadbba90aa2db", 737),
    "betaH_dsprites": ("44ba28f86d772e428b592c3131fc690d8ea28f415a842673dfd9b7637bef5203",
                       "c3419b4211c3db6985d767e093c0d842a9167b225b8c4e1202f2a4b9b1eed18b", 743),
    "betaB_dsprites": ("3e00b3aa10c2a8d3e2011a8d454b6447e95a97770f5c70949384b1018813b0ff",
                       "f82989ff0c27695a13bfcf9c975542b7c93ee1e0d77402f23c10a65840c31cb6", 742),
    "factor_dsprites": ("363af41ccc1ea4000b40659cc325db26c0839b789a9461977403298646cc9e5f",
                        "bc1907d34ccc9bb0eb66dfc9187d650542fe577cb28ee229383f26adbc981810", 751),
    "btcvae_dsprites": ("ea86d65dbbcfe0534d92a7b152187c8056f1841b0e5e57512937b53b5bb3ed72",
                        "8a3787d7c395550ec72ca125a4a0a14cac84b477619a4b9ed77a803ff1c3b136", 749),
}


def released_files(name: str) -> dict[str, Remote]:
    """The two files of disentangling-vae's released model `name` (e.g. betaH_dsprites), pinned to one commit."""
    if name not in _SHA:
        raise UserError(f"'{name}' is not a released disentangling-vae model here; choose one of: {', '.join(_SHA)}.")
    model, specs, specs_size = _SHA[name]
    base = f"https://raw.githubusercontent.com/YannDubs/disentangling-vae/{DISVAE_COMMIT}/results/{name}"
    return {"model.pt": Remote(f"{base}/model.pt", 2_012_328, model, DISVAE_LICENCE),
            "specs.json": Remote(f"{base}/specs.json", specs_size, specs, DISVAE_LICENCE)}


def download_released(name: str, folder: str = "released", say=print) -> str:
    """Download disentangling-vae's `name` into folder/disentangling-vae/name and return that folder."""
    target = os.path.join(folder, "disentangling-vae", name)
    for file, remote in released_files(name).items():
        fetch(remote, os.path.join(target, file), say)
    return target


def _renamed(weights: dict, names: dict[str, str], where: str) -> dict:
    """weights with each peer layer's name replaced by ours; a UserError when a layer is missing or left over."""
    mapped = {}
    for key, value in weights.items():
        layer, _, kind = key.rpartition(".")
        if layer not in names or kind not in ("weight", "bias"):
            raise UserError(f"'{where}' holds a layer '{key}' that the Burgess network has not; the supported "
                            f"layouts are {LAYOUTS}.")
        mapped[f"{names[layer]}.{kind}"] = value
    if len(mapped) != 2 * len(names):
        raise UserError(f"'{where}' lacks some layers of the Burgess network (64 × 64 images); the supported "
                        f"layouts are {LAYOUTS}.")
    return mapped


def _state(weights: dict, params: dict, step: int, source: str) -> dict:
    """A checkpoint dict as main.py writes it (betavae/checkpoints.py), from peer weights already renamed."""
    weights = {key: value.float() for key, value in weights.items()}
    return {"format": CHECKPOINT_FORMAT, "model": weights, "params": params, "step": step, "source": source,
            "latent_dim": int(weights["decoder.fc.0.weight"].shape[1]),
            "channels": int(weights["encoder.convs.0.weight"].shape[1])}


def from_disvae(weights: dict, specs: dict, where: str = "model.pt") -> dict:
    """disentangling-vae's state dict and specs.json → a checkpoint dict of this repository's VAE."""
    weights = _renamed(weights, DISVAE_NAMES, where)
    for kind in ("weight", "bias"):  # rows [μ_0, lv_0, μ_1, lv_1, …] → [μ_0, μ_1, …, lv_0, lv_1, …]
        interleaved = weights[f"encoder.fc.4.{kind}"]
        weights[f"encoder.fc.4.{kind}"] = torch.cat([interleaved[0::2], interleaved[1::2]])
    dataset, images = DISVAE_DATASETS.get(specs.get("dataset"), (None, 0))
    if dataset is None:
        raise UserError(f"'{where}' was trained on {specs.get('dataset')!r}, which is not a dataset of this "
                        f"repository yet; the released dSprites and CelebA models open.")
    params = {"dataset": dataset, "latent_dim": int(specs.get("latent_dim", 10)),
              "objective": DISVAE_OBJECTIVES.get(specs.get("loss"), "betaH"), "recon": specs.get("rec_dist", "bernoulli"),
              "lr": float(specs.get("lr", 5e-4)), "batch_size": int(specs.get("batch_size", 64)),
              "seed": int(specs.get("seed", 0)), "run_name": str(specs.get("name", "released"))}
    step = int(specs.get("epochs", 0)) * -(-images // params["batch_size"])
    return _state(weights, params, step, f"disentangling-vae {specs.get('name', where)} ({DISVAE_COMMIT[:7]})")


def from_konny(checkpoint: dict, where: str) -> dict:
    """1Konny/Beta-VAE's checkpoint ({'model_states': {'net': …}, 'iter': …}) → a checkpoint dict of ours. It records
    no dataset: a one-channel network is read as a dSprites model, a three-channel one as a CelebA model."""
    weights = _renamed(checkpoint["model_states"]["net"], KONNY_NAMES, where)
    channels = int(weights["encoder.convs.0.weight"].shape[1])
    params = {"dataset": "dsprites" if channels == 1 else "celeba",
              "latent_dim": int(weights["decoder.fc.0.weight"].shape[1]), "run_name": "released"}
    return _state(weights, params, int(checkpoint.get("iter", 0)), f"1Konny/Beta-VAE {os.path.basename(where)}")


def _torch_file(path: str):
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for truncated, pickled-code or non-torch files
        raise UserError(f"'{path}' is not a readable checkpoint (truncated, corrupt or not a PyTorch file); the "
                        f"supported layouts are {LAYOUTS}.") from None


def open_checkpoint(path: str) -> tuple[dict, str]:
    """(checkpoint dict, the file it came from) for any supported layout; one UserError sentence otherwise."""
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "checkpoint.pt")):
            path = os.path.join(path, "checkpoint.pt")
        elif os.path.isfile(os.path.join(path, "model.pt")) and os.path.isfile(os.path.join(path, "specs.json")):
            model = os.path.join(path, "model.pt")
            try:
                with open(os.path.join(path, "specs.json"), encoding="utf-8") as file:
                    specs = json.load(file)
            except (OSError, ValueError):
                raise UserError(f"'{os.path.join(path, 'specs.json')}' is not readable JSON; download the model "
                                f"again.") from None
            return from_disvae(_torch_file(model), specs, model), model
        else:
            raise UserError(f"'{path}' holds neither checkpoint.pt nor model.pt with specs.json; pass {LAYOUTS}.")
    if not os.path.isfile(path):
        raise UserError(f"No checkpoint at '{path}'; pass {LAYOUTS}.")
    raw = _torch_file(path)
    if isinstance(raw, dict) and raw.get("format") == CHECKPOINT_FORMAT:
        return checked(raw, path), path
    if isinstance(raw, dict) and isinstance(raw.get("model_states"), dict) and "net" in raw["model_states"]:
        return from_konny(raw, path), path
    if isinstance(raw, dict) and "encoder.mu_logvar_gen.weight" in raw:
        raise UserError(f"'{path}' is a disentangling-vae model.pt; pass its folder, with specs.json beside it.")
    raise UserError(f"'{path}' is a PyTorch file but not a checkpoint of this repository or of a supported layout; "
                    f"the supported layouts: {LAYOUTS}.")
