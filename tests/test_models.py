"""The Burgess et al. 2018 network's shapes, and checkpoints that round-trip and refuse foreign files."""
import collections

import pytest
import torch

from models import VAE, load_checkpoint, model_from_checkpoint, save_checkpoint
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


def test_logits_stay_float32_under_bf16_autocast():
    """amp=bf16 runs the network in bf16 but its output layer in float32 (bf16 logits moved a 2,000-step
    run's loss by 2.4%): the logits come out float32 and match the float32 layer on the same features."""
    torch.manual_seed(0)
    model, z = VAE(1, 10), torch.randn(4, 10)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mu, _ = model.encoder(torch.rand(4, 1, 64, 64))
        logits = model.decoder(z)
        features = model.decoder.deconvs[:-1](model.decoder.fc(z).view(-1, 32, 4, 4))
    assert mu.dtype == torch.bfloat16 and features.dtype == torch.bfloat16  # the rest does run in bf16
    assert logits.dtype == torch.float32
    assert torch.allclose(logits, model.decoder.deconvs[-1](features.float()), atol=1e-5)


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last])
@pytest.mark.parametrize("height, width", [(32, 32), (5, 3)])
def test_one_channel_transposed_conv_is_the_layer_it_replaces(memory_format, height, width):
    """OneChannelTransposedConv (the output_gemm switch) against ConvTranspose2d(C, 1, 4, 2, 1) in float64: the
    same output, input gradient, weight gradient and bias gradient to rounding, for either layout and non-square
    inputs; its hand-written backward also passes autograd's numerical gradcheck."""
    from models import OneChannelTransposedConv

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


def test_output_gemm_changes_only_how_the_decoder_computes():
    """With the switch on, a 1-channel decoder gives the logits of the plain layer (float32 rounding apart) and
    its state_dict keys are unchanged; a 3-channel decoder keeps the convolution."""
    torch.manual_seed(0)
    model, z = VAE(1, 10), torch.randn(4, 10)
    plain = model.decoder(z)
    model.decoder.output_gemm = True
    logits = model.decoder(z)
    assert type(logits.grad_fn).__name__ == "OneChannelTransposedConvBackward"  # the switch did take the new path
    assert torch.allclose(logits, plain, rtol=0, atol=1e-5)
    assert set(model.state_dict()) == set(VAE(1, 10).state_dict())
    rgb = VAE(3, 10)
    rgb.decoder.output_gemm = True
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
    from models import ConvStack, stack_parameters

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


@pytest.mark.parametrize("output_gemm", [False, True])
def test_fused_deconv_changes_only_how_the_decoder_computes(output_gemm):
    """With the switch on the decoder's transposed convolutions and ReLUs run as one ConvStack (the output layer in
    it too when output_gemm is on) and give the plain logits and gradients (float32 rounding apart); under bf16
    autocast (amp) they run as the plain layers."""
    torch.manual_seed(0)
    model, z = VAE(1, 10), torch.randn(4, 10)
    plain = model.decoder(z)
    plain_grads = torch.autograd.grad(plain.sum(), list(model.decoder.parameters()))
    model.decoder.fused_deconv, model.decoder.output_gemm = True, output_gemm
    logits = model.decoder(z)
    nodes = backward_nodes(logits)
    assert nodes["ConvStackBackward"] == 1 and nodes["ConvolutionBackward0"] == (0 if output_gemm else 1)
    assert nodes["ReluBackward0"] == 3                                                        # the FC layers'
    assert torch.allclose(logits, plain, rtol=0, atol=1e-5)
    for got, want in zip(torch.autograd.grad(logits.sum(), list(model.decoder.parameters())), plain_grads):
        assert torch.allclose(got, want, rtol=1e-4, atol=1e-4)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits = model.decoder(z)
    nodes = backward_nodes(logits)
    assert nodes["ConvStackBackward"] == 0 and nodes["ConvolutionBackward0"] == (3 if output_gemm else 4)
    assert logits.dtype == torch.float32 and torch.allclose(logits, plain, atol=0.1)


def test_fused_conv_changes_only_how_the_encoder_computes():
    """With the switch on the encoder's four convolutions and ReLUs run as one ConvStack and give the plain μ, log σ²
    and gradients (float32 rounding apart), with unchanged state_dict keys; under bf16 autocast the plain layers."""
    torch.manual_seed(0)
    model = VAE(1, 10).to(memory_format=torch.channels_last)
    x = torch.rand(4, 1, 64, 64).contiguous(memory_format=torch.channels_last)
    plain = torch.cat(model.encoder(x), 1)
    plain_grads = torch.autograd.grad((plain * torch.arange(20.0)).sum(), list(model.encoder.parameters()))
    model.encoder.fused_conv = True
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
