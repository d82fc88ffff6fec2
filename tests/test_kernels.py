"""The CPU kernels of betavae/speed/kernels.py: each computes what the layers it replaces compute, and `plug_in` puts
it only into a network whose layers match, so an edited network trains exactly as written."""
import collections

import pytest
import torch
from torch import nn

from betavae.speed import kernels
from betavae.speed.kernels import ConvStack, OneChannelTransposedConv, stack_parameters
from models import VAE


def test_logits_stay_float32_under_bf16_autocast():
    """amp=bf16 runs the network in bf16 but its output layer in float32 (bf16 logits moved a 2,000-step
    run's loss by 2.4%): the logits come out float32 and match the float32 layer on the same features."""
    torch.manual_seed(0)
    model, z = VAE(1, 10), torch.randn(4, 10)
    kernels.plug_in(model, {"amp": "bf16"})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu, _ = model.encoder(torch.rand(4, 1, 64, 64))
        logits = model.decoder(z)
        features = torch.nn.Sequential(*list(model.decoder.deconvs)[:-1])(model.decoder.fc(z).view(-1, 32, 4, 4))
    assert mu.dtype == torch.bfloat16 and features.dtype == torch.bfloat16  # the rest does run in bf16
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, model.decoder.deconvs[-1](features.float()), atol=1e-5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("height, width", [(32, 32), (5, 3)])
def test_one_channel_transposed_conv_is_the_layer_it_replaces(memory_format, height, width):
    """OneChannelTransposedConv (the output_gemm switch) against ConvTranspose2d(C, 1, 4, 2, 1) in float64: the
    same output, input gradient, weight gradient and bias gradient to rounding, for either layout and non-square
    inputs; its hand-written backward also passes autograd's numerical gradcheck."""
    torch.manual_seed(0)
    layer = torch.nn.ConvTranspose2d(6, 1, 4, 2, 1).double()
    x = torch.randn(3, 6, height, width, dtype=torch.float64).contiguous(memory_format=memory_format)
    x.requires_grad_()
    grad = torch.randn(3, 1, 2 * height, 2 * width, dtype=torch.float64)
    expected = layer(x)
    gradients = torch.autograd.grad(expected, (x, layer.weight, layer.bias), grad)
    ours = OneChannelTransposedConv.apply(x, layer.weight, layer.bias)
    assert ours.shape == expected.shape and torch.allclose(ours, expected, rtol=0, atol=1e-12)
    for got, want in zip(torch.autograd.grad(ours, (x, layer.weight, layer.bias), grad), gradients):
        assert got.shape == want.shape and torch.allclose(got, want, rtol=0, atol=1e-11)
    small = torch.randn(2, 3, 3, 4, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 1, 4, 4, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(1, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(OneChannelTransposedConv.apply, (small, weight, bias))


def test_the_one_channel_output_layer_runs_as_a_matmul_under_amp_in_fused_deconv():
    """Under bf16 autocast, fused_deconv runs a 1-channel output layer as OneChannelTransposedConv in float32 (the
    plain layer's logits, float32 rounding apart) with unchanged state_dict keys; a 3-channel decoder keeps the
    convolution."""
    torch.manual_seed(0)
    model, z = VAE(1, 10), torch.randn(4, 10)
    plain = model.decoder(z)
    kernels.plug_in(model, {"fused_deconv": True, "amp": "bf16"})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.decoder(z)
    assert type(logits.grad_fn).__name__ == "OneChannelTransposedConvBackward"  # the switch did take the new path
    assert logits.dtype == torch.float32 and torch.allclose(logits, plain, rtol=0, atol=0.1)
    assert set(model.state_dict()) == set(VAE(1, 10).state_dict())
    rgb = VAE(3, 10)
    kernels.plug_in(rgb, {"fused_deconv": True, "amp": "bf16"})
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rgb_logits = rgb.decoder(z)
    assert rgb_logits.shape == (4, 3, 64, 64) and "OneChannel" not in type(rgb_logits.grad_fn).__name__


def plain_stack(layers: list, x: torch.Tensor, linear_last: bool) -> torch.Tensor:
    """The layers one by one, as torch runs them: each (transposed) convolution, then its ReLU."""
    for index, layer in enumerate(layers):
        x = layer(x)
        if not (linear_last and index == len(layers) - 1):
            x = torch.relu(x)
    return x


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("transposed, linear_last, channels", [
    (False, False, (1, 4, 5)),  # the encoder: the first layer takes the data (no input gradient), ReLU after each
    (True, True, (5, 4, 1)),    # the decoder: a 1-channel linear last layer (one_channel_transposed_conv forward)
    (True, True, (5, 4, 3)),    # the decoder of RGB images: oneDNN's transposed convolution last
    (True, False, (5, 4, 6)),   # a decoder's body, ReLU after each
])
def test_conv_stack_is_the_layers_it_replaces(memory_format, transposed, linear_last, channels):
    """ConvStack (the fused_conv and fused_deconv switches) against the same layers one by one: in float64 (the
    unfused forward) the same output and gradients to 1e-12, and autograd's gradcheck of the hand-written backward;
    in float32 (oneDNN's fused forward where this build has it) the same to float32 rounding. The gradient passed
    in is left as it was (the ReLU masks go in place only into buffers the backward made itself)."""
    torch.manual_seed(0)
    kind = torch.nn.ConvTranspose2d if transposed else torch.nn.Conv2d
    layers = [kind(c_in, c_out, 4, 2, 1).double() for c_in, c_out in zip(channels, channels[1:])]
    size = (3, 5) if transposed else (12, 20)
    for dtype, tolerance in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        layers = [layer.to(dtype) for layer in layers]
        parameters = stack_parameters(torch.nn.Sequential(*layers))
        x = torch.randn(3, channels[0], *size, dtype=dtype).contiguous(memory_format=memory_format)
        x.requires_grad_(transposed)  # the encoder's input is the data
        inputs = [x, *parameters] if transposed else parameters
        expected = plain_stack(layers, x, linear_last)
        grad = torch.randn_like(expected)
        passed_in = grad.clone()
        gradients = torch.autograd.grad(expected, inputs, grad)
        ours = ConvStack.apply(x, transposed, linear_last, *parameters)
        if not linear_last:
            assert (ours == 0).any() and (ours > 0).any()  # the last ReLU is active on part of the output
        assert ours.shape == expected.shape and torch.allclose(ours, expected, rtol=0, atol=tolerance)
        for got, want in zip(torch.autograd.grad(ours, inputs, grad), gradients):
            assert got.shape == want.shape and torch.allclose(got, want, rtol=tolerance, atol=tolerance * 10)
        assert torch.equal(grad, passed_in)
    small = torch.randn(2, channels[0], *((3, 4) if transposed else (8, 12)), dtype=torch.float64,
                        requires_grad=transposed)
    small_parameters = [torch.randn_like(p, dtype=torch.float64).requires_grad_() for p in parameters]
    assert torch.autograd.gradcheck(lambda a, *p: ConvStack.apply(a, transposed, linear_last, *p),
                                    (small, *small_parameters))


def test_fused_deconv_changes_only_how_the_decoder_computes():
    """With the switch on the decoder's transposed convolutions, ReLUs and output layer run as one ConvStack and give
    the plain logits and gradients (float32 rounding apart); under bf16 autocast (amp) the body runs as the plain
    layers and the 1-channel output layer as OneChannelTransposedConv in float32."""
    torch.manual_seed(0)
    model, z = VAE(1, 10), torch.randn(4, 10)
    plain = model.decoder(z)
    plain_grads = torch.autograd.grad(plain.sum(), list(model.decoder.parameters()))
    kernels.plug_in(model, {"fused_deconv": True})
    logits = model.decoder(z)
    nodes = backward_nodes(logits)
    assert nodes["ConvStackBackward"] == 1 and nodes["ConvolutionBackward0"] == 0
    assert nodes["ReluBackward0"] == 3                                                        # the FC layers'
    assert torch.allclose(logits, plain, rtol=0, atol=1e-5)
    for got, want in zip(torch.autograd.grad(logits.sum(), list(model.decoder.parameters())), plain_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.decoder(z)
    nodes = backward_nodes(logits)
    assert nodes["ConvStackBackward"] == 0 and nodes["ConvolutionBackward0"] == 3
    assert logits.dtype == torch.float32 and torch.allclose(logits, plain, atol=0.1)


def test_fused_conv_changes_only_how_the_encoder_computes():
    """With the switch on the encoder's four convolutions and ReLUs run as one ConvStack and give the plain μ, log σ²
    and gradients (float32 rounding apart), with unchanged state_dict keys; under bf16 autocast the plain layers."""
    torch.manual_seed(0)
    model = VAE(1, 10).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    plain = torch.cat(model.encoder(x), 1)
    plain_grads = torch.autograd.grad((plain * torch.arange(20.0)).sum(), list(model.encoder.parameters()))
    kernels.plug_in(model, {"fused_conv": True})
    codes = torch.cat(model.encoder(x), 1)
    nodes = backward_nodes(codes)
    assert nodes["ConvStackBackward"] == 1 and nodes["ConvolutionBackward0"] == 0
    assert torch.allclose(codes, plain, rtol=0, atol=1e-5)
    for got, want in zip(torch.autograd.grad((codes * torch.arange(20.0)).sum(), list(model.encoder.parameters())),
                         plain_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    assert set(model.state_dict()) == set(VAE(1, 10).state_dict())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu, _ = model.encoder(x)
    assert backward_nodes(mu)["ConvStackBackward"] == 0 and mu.dtype == torch.bfloat16


def backward_nodes(tensor: torch.Tensor) -> collections.Counter:
    """How many nodes of each type the backward graph of `tensor` has."""
    counts, seen, stack = collections.Counter(), set(), [tensor.grad_fn]
    while stack:
        node = stack.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        counts[type(node).__name__] += 1
        stack.extend(next_node for next_node, _ in node.next_functions)
    return counts


def edited(model: VAE, edit: str) -> VAE:
    """A researcher's edit of models.py, applied to a built VAE: each leaves the parameters' shapes as they were."""
    if edit == "leaky_relu":
        for stack in (model.encoder.convs, model.decoder.deconvs):
            for index, layer in enumerate(stack):
                if isinstance(layer, torch.nn.ReLU):
                    stack[index] = torch.nn.LeakyReLU(0.5)
    elif edit == "batch_norm":
        layers = list(model.decoder.deconvs)
        model.decoder.deconvs = torch.nn.Sequential(*layers[:2], torch.nn.BatchNorm2d(32), *layers[2:])
    elif edit == "stride_one":  # the encoder's last convolution at stride 1 (padding 'same'), then a pooling
        layers = list(model.encoder.convs)
        last = layers[-2]
        layers[-2] = torch.nn.Conv2d(last.in_channels, last.out_channels, 3, 1, 1)
        model.encoder.convs = torch.nn.Sequential(*layers, torch.nn.MaxPool2d(2))
    return model


def losses_of(edit: str, fused: str, steps: int = 3) -> tuple[list[float], list[str]]:
    """Per-step losses of an (edited) network trained in float32 with the kernel switches `fused` (auto or false)."""
    from betavae.speed import switches
    from betavae.training import loop
    from losses import make_objective
    from params import Params

    params = Params(amp=False, fused_conv=fused if fused == "auto" else False,
                    fused_deconv=fused if fused == "auto" else False, batch_size=8, device="cpu")
    torch.manual_seed(0)
    model = edited(VAE(1, 10), edit)
    notices = []
    settings = switches.prepare(model, params, torch.device("cpu"), say=notices.append)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    objective, generator, out = make_objective(params, 100, "cpu"), torch.Generator().manual_seed(1), []
    for step in range(steps):
        x = (torch.rand(8, 1, 64, 64, generator=generator) > 0.7).float()
        torch.manual_seed(100 + step)  # the reparameterisation noise, the same for both runs
        out.append(loop.train_step(model, optimizer, objective, x, step, params)["loss"].item())
    assert settings["fused_conv"] in (True, False)
    return out, notices


@pytest.mark.parametrize("edit", ["leaky_relu", "batch_norm", "stride_one"])
def test_an_edited_network_trains_with_the_switches_on_auto_exactly_as_with_them_off(edit):
    auto, notices = losses_of(edit, "auto")
    off, _ = losses_of(edit, "false")
    assert auto == pytest.approx(off, rel=1e-6)
    expected = {"leaky_relu": {"fused_conv", "fused_deconv"}, "batch_norm": {"fused_deconv"},
                "stride_one": {"fused_conv"}}[edit]
    assert {line.split()[1] for line in notices if line.startswith("notice:")} == expected
    assert all("turned off" in line and "(" in line for line in notices)


def test_the_unedited_network_still_gets_the_kernels():
    from betavae.speed import switches
    from params import Params

    model, notices = VAE(1, 10), []
    settings = switches.prepare(model, Params(amp=False), torch.device("cpu"), say=notices.append)
    if not kernels.FUSED_CONVOLUTIONS:
        pytest.skip("this torch build has no oneDNN fused convolutions")
    assert notices == [] and settings["fused_conv"] and settings["fused_deconv"]
    assert type(model.encoder.convs) is kernels.FusedConvs and type(model.decoder.deconvs) is kernels.FusedDeconvs
    x_logits, mu, _, _ = model(torch.rand(2, 1, 64, 64).contiguous(memory_format=torch.channels_last))
    assert backward_nodes(x_logits)["ConvStackBackward"] == 2 and mu.shape == (2, 10)
    plain, fused = losses_of("none", "false")[0], losses_of("none", "auto")[0]
    assert fused == pytest.approx(plain, rel=1e-4)  # the same function (float32 rounding apart)


def test_an_edited_network_run_logs_the_edited_networks_loss(tmp_path, monkeypatch, capsys):
    """End to end, as the issue found it: every ReLU made LeakyReLU(0.5), float32, switches auto: step 1's loss is
    the edited network's (the run with the switches off), not the unedited one's."""
    import main
    from betavae import parts
    from test_main import read_rows, run_args

    class LeakyVAE(VAE):
        def __init__(self, channels, latent_dim):
            super().__init__(channels, latent_dim)
            edited(self, "leaky_relu")
    monkeypatch.setattr(parts, "VAE", LeakyVAE)  # the one place a run builds its network
    first = {}
    for name, switches in (("fused", "fused_conv=auto fused_deconv=auto"),
                           ("plain", "fused_conv=false fused_deconv=false")):
        assert main.main(run_args(tmp_path, name, 1, "--set", "amp=false", "log_every=1", *switches.split())) == 0
        first[name] = float(read_rows(tmp_path / name / "log.csv")[0]["loss"])
    assert first["fused"] == pytest.approx(first["plain"], rel=1e-6)
    assert "notice: fused_conv turned off" in capsys.readouterr().err


@pytest.mark.parametrize("transposed", [False, True])
def test_a_nan_weight_or_input_propagates_through_the_fused_stack_as_through_the_layers(transposed):
    """oneDNN's fused ReLU maps NaN to 0; the stack must not hide a blown-up step from the NaN guard."""
    from betavae.speed.kernels import ConvStack

    torch.manual_seed(0)
    layers = [nn.ConvTranspose2d(32, 32, 4, 2, 1) if transposed else nn.Conv2d(32, 32, 4, 2, 1) for _ in range(3)]
    x = torch.rand(2, 32, 8, 8) if transposed else torch.rand(2, 32, 32, 32)
    parameters = [t for layer in layers for t in (layer.weight, layer.bias)]
    with torch.no_grad():
        layers[0].weight[0, 0, 0, 0] = float("nan")
        assert not torch.isfinite(ConvStack.apply(x, transposed, False, *parameters)).all()
        layers[0].weight[0, 0, 0, 0] = 0.0
        assert torch.isfinite(ConvStack.apply(x, transposed, False, *parameters)).all()
        if transposed:                                    # the decoder's input comes from its linear layers
            x[0, 0, 0, 0] = float("nan")
            assert not torch.isfinite(ConvStack.apply(x, transposed, False, *parameters)).all()
