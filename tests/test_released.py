"""Released models of other projects open as our own (betavae/released.py): state dicts with the peers' exact key
names and shapes give the same μ, log σ² and reconstruction as the peers' networks written out layer by layer here;
other layouts are one sentence; traverse.py draws and scores them; downloads are checked, resumable and honest."""
import http.server
import json
import os
import threading

import pytest
import torch
import torch.nn.functional as F

import traverse
from betavae import download, released
from betavae.checkpoints import model_from_checkpoint
from betavae.errors import DataError, UserError

LATENT = 10


def random_layers(weights: dict, transposed: set) -> dict:
    """Random weights of the given shapes and their biases (a transposed convolution's bias is its output channels,
    the weight's second dimension), in the layers' order."""
    generator = torch.Generator().manual_seed(0)
    shapes = {**{f"{n}.weight": s for n, s in weights.items()},
              **{f"{n}.bias": (s[1] if n in transposed else s[0],) for n, s in weights.items()}}
    return {name: 0.1 * torch.randn(shape, generator=generator) for name, shape in shapes.items()}


def disvae_state_dict(channels: int = 1) -> dict:
    """disentangling-vae's EncoderBurgess / DecoderBurgess at 64 × 64, its key names and shapes."""
    shapes = {"encoder.conv1": (32, channels, 4, 4), "encoder.conv2": (32, 32, 4, 4), "encoder.conv3": (32, 32, 4, 4),
              "encoder.conv_64": (32, 32, 4, 4), "encoder.lin1": (256, 512), "encoder.lin2": (256, 256),
              "encoder.mu_logvar_gen": (2 * LATENT, 256), "decoder.lin1": (256, LATENT), "decoder.lin2": (256, 256),
              "decoder.lin3": (512, 256), "decoder.convT_64": (32, 32, 4, 4), "decoder.convT1": (32, 32, 4, 4),
              "decoder.convT2": (32, 32, 4, 4), "decoder.convT3": (32, channels, 4, 4)}
    return random_layers(shapes, {name for name in shapes if "convT" in name})


def disvae_forward(w: dict, x: torch.Tensor):
    """Their forward pass, written out: μ and log σ² interleaved in the last encoder layer; a sigmoid at the end."""
    h = x
    for name in ("conv1", "conv2", "conv3", "conv_64"):
        h = torch.relu(F.conv2d(h, w[f"encoder.{name}.weight"], w[f"encoder.{name}.bias"], stride=2, padding=1))
    h = h.reshape(len(x), -1)
    for name in ("lin1", "lin2"):
        h = torch.relu(F.linear(h, w[f"encoder.{name}.weight"], w[f"encoder.{name}.bias"]))
    mu, logvar = F.linear(h, w["encoder.mu_logvar_gen.weight"], w["encoder.mu_logvar_gen.bias"]).view(
        -1, LATENT, 2).unbind(-1)
    h = mu
    for name in ("lin1", "lin2", "lin3"):
        h = torch.relu(F.linear(h, w[f"decoder.{name}.weight"], w[f"decoder.{name}.bias"]))
    h = h.view(-1, 32, 4, 4)
    for name in ("convT_64", "convT1", "convT2", "convT3"):
        h = F.conv_transpose2d(h, w[f"decoder.{name}.weight"], w[f"decoder.{name}.bias"], stride=2, padding=1)
        h = torch.sigmoid(h) if name == "convT3" else torch.relu(h)
    return mu, logvar, h


def konny_state_dict(channels: int = 1) -> dict:
    """1Konny/Beta-VAE's BetaVAE_B: two nn.Sequential, a View at encoder.8 and decoder.6."""
    shapes = {"encoder.0": (32, channels, 4, 4), "encoder.2": (32, 32, 4, 4), "encoder.4": (32, 32, 4, 4),
              "encoder.6": (32, 32, 4, 4), "encoder.9": (256, 512), "encoder.11": (256, 256),
              "encoder.13": (2 * LATENT, 256), "decoder.0": (256, LATENT), "decoder.2": (256, 256),
              "decoder.4": (512, 256), "decoder.7": (32, 32, 4, 4), "decoder.9": (32, 32, 4, 4),
              "decoder.11": (32, 32, 4, 4), "decoder.13": (32, channels, 4, 4)}
    return random_layers(shapes, {"decoder.7", "decoder.9", "decoder.11", "decoder.13"})


def konny_forward(w: dict, x: torch.Tensor):
    h = x
    for i in (0, 2, 4, 6):
        h = torch.relu(F.conv2d(h, w[f"encoder.{i}.weight"], w[f"encoder.{i}.bias"], stride=2, padding=1))
    h = h.reshape(len(x), 32 * 4 * 4)
    for i in (9, 11):
        h = torch.relu(F.linear(h, w[f"encoder.{i}.weight"], w[f"encoder.{i}.bias"]))
    distributions = F.linear(h, w["encoder.13.weight"], w["encoder.13.bias"])
    mu, logvar = distributions[:, :LATENT], distributions[:, LATENT:]
    h = mu
    for i in (0, 2, 4):
        h = torch.relu(F.linear(h, w[f"decoder.{i}.weight"], w[f"decoder.{i}.bias"]))
    h = h.view(-1, 32, 4, 4)
    for i in (7, 9, 11, 13):
        h = F.conv_transpose2d(h, w[f"decoder.{i}.weight"], w[f"decoder.{i}.bias"], stride=2, padding=1)
        h = torch.relu(h) if i != 13 else h
    return mu, logvar, torch.sigmoid(h)


SPECS = {"dataset": "dsprites", "latent_dim": LATENT, "loss": "betaH", "rec_dist": "bernoulli", "lr": 5e-4,
         "batch_size": 64, "seed": 1234, "epochs": 30, "name": "betaH_dsprites", "betaH_B": 4, "img_size": [1, 64, 64]}


def disvae_folder(tmp_path, channels=1, specs=SPECS):
    folder = tmp_path / "betaH_dsprites"
    folder.mkdir()
    weights = disvae_state_dict(channels)
    torch.save(weights, folder / "model.pt")
    (folder / "specs.json").write_text(json.dumps(specs))
    return folder, weights


def ours(state: dict, x: torch.Tensor):
    model = model_from_checkpoint(state).eval()
    with torch.no_grad():
        mu, logvar = model.encoder(x)
        return mu, logvar, torch.sigmoid(model.decoder(mu))


@pytest.mark.parametrize("channels", [1, 3])
def test_a_disentangling_vae_folder_computes_what_its_own_network_computes(tmp_path, channels):
    folder, weights = disvae_folder(tmp_path, channels, {**SPECS, "dataset": "dsprites" if channels == 1 else "celeba"})
    state, path = released.open_checkpoint(str(folder))
    x = torch.rand(5, channels, 64, 64, generator=torch.Generator().manual_seed(1))
    for mine, theirs in zip(ours(state, x), disvae_forward(weights, x)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    epoch = 11_520 if channels == 1 else 3_166  # dSprites' 737,280 or CelebA's 202,599 images in batches of 64
    assert path.endswith("model.pt") and state["step"] == 30 * epoch and state["latent_dim"] == LATENT
    assert state["params"]["objective"] == "betaH" and "disentangling-vae" in state["source"]


def test_a_konny_checkpoint_computes_what_its_own_network_computes(tmp_path):
    weights = konny_state_dict()
    torch.save({"iter": 1_500_000, "win_states": {"recon": None}, "model_states": {"net": weights},
                "optim_states": {"optim": {"state": {}, "param_groups": []}}}, tmp_path / "last")
    state, _ = released.open_checkpoint(str(tmp_path / "last"))
    x = torch.rand(4, 1, 64, 64, generator=torch.Generator().manual_seed(2))
    for mine, theirs in zip(ours(state, x), konny_forward(weights, x)):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-6)
    assert state["step"] == 1_500_000 and state["params"]["dataset"] == "dsprites"


def test_other_layouts_are_one_sentence_naming_the_supported_ones(tmp_path):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    with pytest.raises(UserError, match="not a checkpoint of this repository.*supported layouts: a run folder"):
        released.open_checkpoint(str(tmp_path / "other.pt"))
    (tmp_path / "garbage.pt").write_bytes(b"not a torch file")
    with pytest.raises(UserError, match="not a readable checkpoint"):
        released.open_checkpoint(str(tmp_path / "garbage.pt"))
    weights = disvae_state_dict()
    torch.save(weights, tmp_path / "model.pt")
    with pytest.raises(UserError, match="pass its folder, with specs.json"):
        released.open_checkpoint(str(tmp_path / "model.pt"))
    del weights["encoder.conv_64.weight"]
    lone = tmp_path / "small"
    lone.mkdir()
    torch.save(weights, lone / "model.pt")
    (lone / "specs.json").write_text(json.dumps(SPECS))
    with pytest.raises(UserError, match="lacks some layers"):
        released.open_checkpoint(str(lone))
    with pytest.raises(UserError, match="'mnist'"):
        released.from_disvae(disvae_state_dict(), {**SPECS, "dataset": "mnist"})


def test_traverse_draws_scores_and_reports_a_released_model(tmp_path, capsys):
    folder, _ = disvae_folder(tmp_path)
    out = tmp_path / "out"
    code = traverse.main([str(folder), "--out", str(out), "--metrics", "--select", "mig", "--report"])
    assert code == 0, capsys.readouterr().err
    assert {"reconstructions_step345600.png", "traversal_highest_mean_step345600.png", "metrics.yaml",
            "report.html", "params.yaml"} <= set(os.listdir(out))
    assert "disentangling-vae betaH_dsprites" in (out / "report.html").read_text()
    capsys.readouterr()
    assert traverse.main([str(tmp_path / "nowhere")]) == 2
    assert "No checkpoint at" in capsys.readouterr().err


def test_traverse_refuses_a_foreign_file_in_one_line(tmp_path, capsys):
    torch.save({"weights": torch.zeros(3)}, tmp_path / "other.pt")
    assert traverse.main([str(tmp_path / "other.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "1Konny/Beta-VAE" in err and "Traceback" not in err


class Ranges(http.server.SimpleHTTPRequestHandler):
    """A static server that honours `Range: bytes=N-` and, while `cut` is set, stops after `cut` bytes."""
    cut = None

    def log_message(self, *args):
        pass

    def do_GET(self):
        body = open(os.path.join(self.directory, self.path.lstrip("/")), "rb").read()
        start = int(self.headers["Range"].split("=")[1].rstrip("-")) if "Range" in self.headers else 0
        self.send_response(206 if start else 200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        part = body[start:]
        if Ranges.cut is not None:
            part, Ranges.cut = part[:Ranges.cut], None
            self.wfile.write(part)
            self.wfile.flush()
            self.connection.shutdown(2)
            return
        self.wfile.write(part)


@pytest.fixture
def server(tmp_path):
    served = tmp_path / "served"
    served.mkdir()
    handler = lambda *a, **k: Ranges(*a, directory=str(served), **k)  # noqa: E731
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield served, f"http://127.0.0.1:{httpd.server_port}"
    httpd.shutdown()


def remote_for(served, base, name: str, body: bytes, checksum: str | None = None) -> download.Remote:
    (served / name).write_bytes(body)
    import hashlib
    return download.Remote(f"{base}/{name}", len(body), checksum or hashlib.sha256(body).hexdigest(), "test licence")


def test_a_download_states_its_size_and_licence_and_verifies_its_checksum(server, tmp_path):
    served, base = server
    remote = remote_for(served, base, "model.pt", os.urandom(300_000))
    said = []
    path = download.fetch(remote, str(tmp_path / "got" / "model.pt"), said.append, progress=False)
    assert open(path, "rb").read() == (served / "model.pt").read_bytes()
    assert "0.3 MB (test licence)" in said[0] and remote.url in said[0]
    download.fetch(remote, path, said.append, progress=False)
    assert "already here and verified" in said[-1]


def test_a_bad_checksum_removes_the_file_and_says_to_run_again(server, tmp_path):
    served, base = server
    remote = remote_for(served, base, "model.pt", b"x" * 1000, checksum="0" * 64)
    target = tmp_path / "model.pt"
    with pytest.raises(DataError, match="fail the sha256 check.*run the same command again"):
        download.fetch(remote, str(target), lambda _: None, progress=False)
    assert not target.exists() and not (tmp_path / "model.pt.part").exists()


def test_an_interrupted_download_resumes_where_it_stopped_when_run_again(server, tmp_path):
    served, base = server
    body = os.urandom(200_000)
    remote = remote_for(served, base, "model.pt", body)
    target = str(tmp_path / "model.pt")
    Ranges.cut = 70_000
    with pytest.raises(DataError, match="run the same command again to resume"):
        download.fetch(remote, target, lambda _: None, progress=False)
    assert os.path.getsize(target + ".part") == 70_000
    said = []
    download.fetch(remote, target, said.append, progress=False)  # the advice, followed
    assert open(target, "rb").read() == body and "resuming at 0.1 MB" in said[0]


def test_the_download_command_fetches_a_released_model_by_name(server, tmp_path, monkeypatch, capsys):
    served, base = server
    files = {"model.pt": remote_for(served, base, "model.pt", os.urandom(5000)),
             "specs.json": remote_for(served, base, "specs.json", json.dumps(SPECS).encode())}
    monkeypatch.setattr(released, "released_files", lambda name: files)
    monkeypatch.chdir(tmp_path)
    assert traverse.main(["--download", "betaH_dsprites"]) == 0
    assert (tmp_path / "released" / "disentangling-vae" / "betaH_dsprites" / "specs.json").exists()
    assert "python traverse.py released/disentangling-vae/betaH_dsprites --metrics" in capsys.readouterr().out
    monkeypatch.undo()
    assert traverse.main(["--download", "betaH_mnist"]) == 2
    assert "choose one of: VAE_dsprites" in capsys.readouterr().err


def test_every_released_name_has_pinned_files_with_checksums():
    for name in ("VAE_dsprites", "betaH_dsprites", "betaB_dsprites", "factor_dsprites", "btcvae_dsprites"):
        files = released.released_files(name)
        assert set(files) == {"model.pt", "specs.json"}
        assert all(released.DISVAE_COMMIT in remote.url and len(remote.checksum) == 64 for remote in files.values())
