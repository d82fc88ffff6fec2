"""Params: published defaults, the override order, and every bad-input path exiting 2 in one sentence."""
import pytest

import main
from params import PRESETS, Params, UserError, build_params


def test_defaults_are_the_published_beta_vae():
    p = Params()
    assert (p.dataset, p.objective, p.beta, p.batch_size, p.recon, p.latent_dim, p.device) == \
           ("dsprites", "betaH", 4.0, 64, "bernoulli", 10, "auto")


def test_overrides_apply_in_order_preset_then_yaml_then_set(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("steps: 123\nlr: 0.002\n")
    p = build_params("demo", str(config), ["lr=0.003", "beta_start=null", "beta=2"])
    assert p.steps == 123                      # YAML beat the preset
    assert p.lr == 0.003                       # --set beat YAML
    assert p.log_every == PRESETS["demo"]["log_every"]
    assert p.beta == 2.0 and isinstance(p.beta, float) and p.beta_start is None


def test_run_params_yaml_is_a_valid_config(tmp_path):
    config = tmp_path / "params.yaml"
    config.write_text("params:\n  beta: 8\n  steps: 7\ncommand: python main.py\n")
    assert build_params(None, str(config)).beta == 8.0


@pytest.mark.parametrize("argv, phrase", [
    (["--set", "betta=3"], "did you mean: beta"),
    (["--set", "batch_size=sixty"], "must be int"),
    (["--set", "steps=1.5"], "must be int"),
    (["--set", "lr=-1"], "must be positive"),
    (["--set", "objective=betaX"], "choose one of"),
    (["--set", "nonsense"], "key=value"),
    (["--preset", "dem"], "Unknown preset"),
    (["--config", "does/not/exist.yaml"], "does not exist"),
    (["--resume", "no/such/run"], "No checkpoint"),
])
def test_bad_input_exits_2_with_one_sentence(argv, phrase, capsys):
    assert main.main(argv) == 2
    err = capsys.readouterr().err
    assert phrase in err and "Traceback" not in err and err.count("\n") == 1


def test_unknown_key_in_yaml_names_the_file(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("latent_dims: 4\n")
    with pytest.raises(UserError, match="latent_dim"):
        build_params(None, str(config))


def test_invalid_yaml_is_a_user_error(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("steps: [1, 2\n")
    with pytest.raises(UserError, match="not valid YAML"):
        build_params(None, str(config))
