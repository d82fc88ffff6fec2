"""The Burgess et al. 2018 network's shapes, and checkpoints that round-trip and refuse foreign files."""
import pytest
import torch

from betavae.checkpoints import load_checkpoint, model_from_checkpoint, save_checkpoint
from models import VAE
from params import UserError


@pytest.mark.parametrize("channels", [1, 3])
def test_shapes_for_one_and_three_channels(channels):
    model = VAE(channels, latent_dim=7)
    x_logits, mu, logvar, z = model(torch.rand(5, channels, 64, 64))
    assert x_logits.shape == (5, channels, 64, 64)
    assert mu.shape == logvar.shape == z.shape == (5, 7)


def test_architecture_is_burgess_2018():
    model = VAE(1, 10)
    convs = [m for m in model.encoder.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.out_channels, c.kernel_size, c.stride) for c in convs] == [(32, (4, 4), (2, 2))] * 4
    linears = [m.out_features for m in model.encoder.modules() if isinstance(m, torch.nn.Linear)]
    assert linears == [256, 256, 20]


def test_checkpoint_round_trip(tmp_path):
    model = VAE(1, 4)
    path = str(tmp_path / "checkpoint.pt")
    save_checkpoint(path, {"model": model.state_dict(), "params": {}, "channels": 1, "latent_dim": 4, "step": 3})
    rebuilt = model_from_checkpoint(load_checkpoint(path))
    for a, b in zip(model.state_dict().values(), rebuilt.state_dict().values()):
        assert torch.equal(a, b)
    assert list(tmp_path.iterdir()) == [tmp_path / "checkpoint.pt"]  # no temporary file left behind


def test_bad_checkpoints_raise_user_errors(tmp_path):
    with pytest.raises(UserError, match="No checkpoint"):
        load_checkpoint(str(tmp_path / "missing.pt"))
    good = tmp_path / "good.pt"
    save_checkpoint(str(good), {"model": VAE(1, 4).state_dict(), "params": {}, "channels": 1, "latent_dim": 4,
                                 "step": 0})
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(str(truncated))
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(UserError, match="not a checkpoint of this repository"):
        load_checkpoint(str(foreign))
    mismatched = load_checkpoint(str(good))
    mismatched["latent_dim"] = 6
    with pytest.raises(UserError, match="do not fit"):
        model_from_checkpoint(mismatched)
