"""The convolutional VAE of Burgess et al. 2018 and its checkpoints (atomic to write, safe to load)."""
from __future__ import annotations

import contextlib
import os
import shutil
import tempfile

import torch
from torch import nn

CHECKPOINT_FORMAT = "beta-vae-checkpoint/1"


class Encoder(nn.Module):
    """Burgess et al. 2018, appendix A.1: 4 × conv(32, 4×4, stride 2) → FC 256 → FC 256 → 2·latent_dim."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(channels, 32, 4, 2, 1), nn.ReLU(),  # 64 → 32
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),        # 32 → 16
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),        # 16 → 8
            nn.Conv2d(32, 32, 4, 2, 1), nn.ReLU(),        # 8 → 4
        )
        self.fc = nn.Sequential(
            nn.Linear(32 * 4 * 4, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 2 * latent_dim),
        )
        self.fused_conv = False  # the speed switch of this name (performance.prepare_performance sets it)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.fused_conv and not autocast_enabled(x.device.type):  # under amp the layers run as usual
            h = ConvStack.apply(x, False, False, *stack_parameters(self.convs))
        else:
            h = self.convs(x)
        mu, logvar = self.fc(h.flatten(1)).chunk(2, dim=1)  # [B, 512] → [B, D] each
        return mu, logvar


# Output row 2p + a of a 4×4, stride-2, padding-1 transposed convolution takes input rows p + d through kernel
# row k: a = 0 from (d = 0, k = 1) and (d = -1, k = 3); a = 1 from (d = +1, k = 0) and (d = 0, k = 2). Stored as
# (offset of row p + d in the input zero-padded by one, k); columns alike.
_PHASE_TAPS = (((1, 1), (0, 3)), ((2, 0), (1, 2)))


def one_channel_transposed_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """ConvTranspose2d(C, 1, 4, stride=2, padding=1)(x) as one matrix multiply (each input pixel's 16 contributions)
    and, per output phase, a sum of four shifted planes."""
    n, c, h, w = x.shape
    rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)                   # a view when x is channels-last
    taps = torch.mm(weight.reshape(c, 16).t(), rows.t())                 # [16, n·h·w]: tap (ky, kx) per pixel
    taps = nn.functional.pad(taps.view(4, 4, n, h, w), (1, 1, 1, 1))     # [4, 4, n, h + 2, w + 2]
    out = x.new_empty(n, h, 2, w, 2)                                     # [n, p, a, q, b] = pixel (2p+a, 2q+b)
    for a, ((r0, k0), (r1, k1)) in enumerate(_PHASE_TAPS):
        for b, ((c0, j0), (c1, j1)) in enumerate(_PHASE_TAPS):
            phase = out[:, :, a, :, b]
            torch.add(taps[k0, j0, :, r0:r0 + h, c0:c0 + w], taps[k0, j1, :, r0:r0 + h, c1:c1 + w], out=phase)
            phase += taps[k1, j0, :, r1:r1 + h, c0:c0 + w]
            phase += taps[k1, j1, :, r1:r1 + h, c1:c1 + w]
    return (out + bias).view(n, 1, 2 * h, 2 * w)


class OneChannelTransposedConv(torch.autograd.Function):
    """ConvTranspose2d(C, 1, 4, stride=2, padding=1) computed as one_channel_transposed_conv, with its own backward:
    the same function. oneDNN's CPU kernel for one output channel runs at a small fraction of its usual rate (7.2 ms
    forward at batch 64 on a 2-core AMD EPYC, against 1.8 ms here); the 32-channel layers do not gain from this."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        return one_channel_transposed_conv(x, weight, bias)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x, weight = ctx.saved_tensors
        n, c, h, w = x.shape
        rows = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
        padded = nn.functional.pad(grad.reshape(n, h, 2, w, 2), (0, 0, 1, 1, 0, 0, 1, 1))  # p and q padded by one
        taps = grad.new_empty(4, 4, n, h, w)               # d loss / d tap (ky, kx) of each input pixel
        for a, row_taps in enumerate(_PHASE_TAPS):
            for b, column_taps in enumerate(_PHASE_TAPS):
                for r, ky in row_taps:
                    for s, kx in column_taps:
                        taps[ky, kx] = padded[:, 2 - r:2 - r + h, a, 2 - s:2 - s + w, b]
        taps = taps.view(16, n * h * w)
        grad_x = torch.mm(taps.t(), weight.reshape(c, 16).t()).view(n, h, w, c).permute(0, 3, 1, 2)
        return grad_x, torch.mm(rows.t(), taps.t()).view_as(weight), grad.sum().view(1)


def _has_fused_convolutions() -> bool:
    """Whether this torch build has oneDNN's (transposed) convolution with a fused ReLU (x86 builds with MKLDNN)."""
    try:
        return torch.backends.mkldnn.is_available() and all(
            hasattr(torch.ops.mkldnn, name) for name in ("_convolution_pointwise", "_convolution_transpose_pointwise"))
    except (AttributeError, RuntimeError):
        return False


FUSED_CONVOLUTIONS = _has_fused_convolutions()
_GEOMETRY = ([2, 2], [1, 1], [1, 1])  # stride, padding, dilation of every convolution in the Burgess network


def stack_parameters(layers: nn.Sequential) -> list[torch.Tensor]:
    """Weight and bias of each (transposed) convolution in `layers`, in order: ConvStack's parameters."""
    return [tensor for layer in layers if isinstance(layer, (nn.Conv2d, nn.ConvTranspose2d))
            for tensor in (layer.weight, layer.bias)]


def _stride_two(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, transposed: bool, relu: bool):
    """One 4×4, stride-2, padding-1 (transposed) convolution, ReLU after it if `relu`: oneDNN's fused kernel in
    float32 on CPU."""
    stride, padding, dilation = _GEOMETRY
    if relu and FUSED_CONVOLUTIONS and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32:
        if transposed:
            return torch.ops.mkldnn._convolution_transpose_pointwise(x, weight, bias, padding, [0, 0], stride,
                                                                    dilation, 1, "relu", [], "")
        return torch.ops.mkldnn._convolution_pointwise(x, weight, bias, padding, stride, dilation, 1, "relu", [], "")
    convolution = nn.functional.conv_transpose2d if transposed else nn.functional.conv2d
    out = convolution(x, weight, bias, stride, padding, dilation=dilation)
    return out.relu_() if relu else out


class ConvStack(torch.autograd.Function):
    """A stack of 4×4, stride-2, padding-1 convolutions (the encoder) or transposed convolutions (the decoder), each
    followed by a ReLU but the last when `linear_last`, as one op with a hand-written backward: the same function
    and the same gradients as the layers one by one (float32 rounding apart).

    Why it is faster on CPU (fp32 step at batch 64 on a 2-core AMD EPYC: README "Speed"): the forward runs oneDNN's
    fused convolution + ReLU; the backward owns every gradient buffer it makes, so each ReLU's mask is applied in
    place instead of into a fresh 8 MiB activation; the transposed layers' gradients go through forward
    convolutions (the data gradient of a transposed convolution is the convolution with the same weight, its weight
    gradient that convolution's weight gradient with input and output exchanged), which oneDNN runs faster than its
    transposed-convolution backward; and a 1-channel last layer runs forward as one_channel_transposed_conv.
    `parameters`: weight, bias of each layer in order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, transposed: bool, linear_last: bool, *parameters: torch.Tensor) -> torch.Tensor:
        weights, biases = parameters[0::2], parameters[1::2]
        activations = [x]
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            last = index == len(weights) - 1
            if last and linear_last and transposed and weight.shape[1] == 1:
                activations.append(one_channel_transposed_conv(activations[-1], weight, bias))
            else:
                activations.append(_stride_two(activations[-1], weight, bias, transposed, not (last and linear_last)))
        output = activations.pop()
        ctx.save_for_backward(*activations, *([] if linear_last else [output]), *weights)
        ctx.transposed, ctx.linear_last, ctx.layers = transposed, linear_last, len(weights)
        return output

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved, layers, transposed = ctx.saved_tensors, ctx.layers, ctx.transposed
        activations, weights = saved[:len(saved) - layers], saved[len(saved) - layers:]  # inputs (+ the output)
        stride, padding, dilation = _GEOMETRY
        gradients = [None] * (2 * layers)
        owned = False  # whether `grad` is a buffer this backward made (then the ReLU's mask goes in place)
        for index in reversed(range(layers)):
            x, weight = activations[index], weights[index]
            if index < layers - 1 or not ctx.linear_last:           # through this layer's ReLU
                out = activations[index + 1]
                grad = grad.contiguous(memory_format=_memory_format(out))
                grad = (torch.ops.aten.threshold_backward.grad_input(grad, out, 0, grad_input=grad) if owned
                        else torch.ops.aten.threshold_backward(grad, out, 0))
            gradients[2 * index + 1] = grad.sum((0, 2, 3))
            need_input = index > 0 or ctx.needs_input_grad[0]
            if transposed:
                gradients[2 * index] = torch.ops.aten.convolution_backward(
                    x, grad, weight, None, stride, padding, dilation, False, [0, 0], 1, [False, True, False])[1]
                if need_input:
                    grad = nn.functional.conv2d(grad, weight, None, stride, padding, dilation)
            else:
                grad, gradients[2 * index], _ = torch.ops.aten.convolution_backward(
                    grad, x, weight, None, stride, padding, dilation, False, [0, 0], 1, [need_input, True, False])
            owned = True
        return (grad if ctx.needs_input_grad[0] else None, None, None, *gradients)


def _memory_format(tensor: torch.Tensor) -> torch.memory_format:
    """channels-last where `tensor` is laid out so (and not also plainly contiguous), else contiguous."""
    if not tensor.is_contiguous() and tensor.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format


def autocast_enabled(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4 takes no device type
        return torch.is_autocast_cpu_enabled() if device_type == "cpu" else torch.is_autocast_enabled()


class Decoder(nn.Module):
    """The encoder mirrored: FC 256 → FC 256 → FC 512 → 4 × transposed conv; returns logits / means before sigmoid."""

    def __init__(self, channels: int, latent_dim: int):
        super().__init__()
        self.fc = nn.Sequential(
            nn.Linear(latent_dim, 256), nn.ReLU(),
            nn.Linear(256, 256), nn.ReLU(),
            nn.Linear(256, 32 * 4 * 4), nn.ReLU(),
        )
        self.deconvs = nn.Sequential(
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # 4 → 8
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # 8 → 16
            nn.ConvTranspose2d(32, 32, 4, 2, 1), nn.ReLU(),  # 16 → 32
            nn.ConvTranspose2d(32, channels, 4, 2, 1),       # 32 → 64
        )
        self.output_gemm = False   # the speed switches of these names (performance.prepare_performance sets them)
        self.fused_deconv = False

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.fc(z).view(-1, 32, 4, 4)                 # [B, 32, 4, 4]
        if self.fused_deconv and not autocast_enabled(z.device.type):  # under amp the layers run as usual
            if self.output_gemm or self.deconvs[-1].out_channels != 1:
                return ConvStack.apply(h, True, True, *stack_parameters(self.deconvs))
            *body, output = self.deconvs                  # oneDNN's 1-channel output layer, as asked
            return output(ConvStack.apply(h, True, False, *stack_parameters(body)))
        *body, output = self.deconvs                      # unpacked, not sliced: a slice builds a new module per step
        for layer in body:
            h = layer(h)                                  # → [B, 32, 32, 32]
        # The output layer runs in float32 even under bf16 autocast (amp): with bf16 logits a 2,000-step CPU run
        # ended 2.4% from plain fp32, with float32 logits 0.9% (bench.py --check-numerics; rounding floor 1.2%).
        with torch.autocast(z.device.type, enabled=False):
            if self.output_gemm and output.out_channels == 1:
                return OneChannelTransposedConv.apply(h.float(), output.weight, output.bias)
            return output(h.float())                      # [B, C, 64, 64] logits


class VAE(nn.Module):
    """Gaussian encoder q(z|x) = N(μ, diag σ²), standard-normal prior, decoder p(x|z)."""

    def __init__(self, channels: int = 1, latent_dim: int = 10):
        super().__init__()
        self.channels, self.latent_dim = channels, latent_dim
        self.encoder = Encoder(channels, latent_dim)
        self.decoder = Decoder(channels, latent_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encoder(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)  # reparameterisation (Kingma & Welling 2014)
        return self.decoder(z), mu, logvar, z


class CheckpointWriteError(OSError):
    """The checkpoint could not be written (full disk, read-only folder, I/O error); the message is one clause."""


def honour_umask(path: str) -> None:
    """mkstemp makes files 0600; give them the mode a plain open() would, so a group can read a run's files."""
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


def save_checkpoint(path: str, state: dict) -> None:
    """Write atomically: a crash mid-write leaves the previous checkpoint intact. Failure: CheckpointWriteError."""
    folder = os.path.dirname(os.path.abspath(path))
    temporary = None
    try:
        handle, temporary = tempfile.mkstemp(dir=folder, suffix=".tmp")
        os.close(handle)
        honour_umask(temporary)
        torch.save({"format": CHECKPOINT_FORMAT, **state}, temporary)
        os.replace(temporary, path)
    except (OSError, RuntimeError) as error:  # torch reports a failed write as RuntimeError (inline_container.cc)
        reason = getattr(error, "strerror", None) or (  # torch's own message names only its C++ source line
            f"the write failed with {shutil.disk_usage(folder).free / 1e6:.0f} MB free on that disk"
            if os.path.isdir(folder) else str(error).strip().splitlines()[0][:120])
        raise CheckpointWriteError(f"the checkpoint could not be written to {path} ({reason})") from None
    finally:
        if temporary is not None and os.path.exists(temporary):
            with contextlib.suppress(OSError):
                os.remove(temporary)


def load_checkpoint(path: str) -> dict:
    """Load with weights_only=True; every way a file can be wrong raises one actionable UserError."""
    from params import UserError

    if not os.path.isfile(path):
        raise UserError(f"No checkpoint at '{path}'; pass a checkpoint.pt written by main.py "
                        f"(e.g. predictions/<run>/checkpoint.pt).")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # torch raises many types for truncated, pickled-code or non-torch files
        raise UserError(f"'{path}' is not a readable checkpoint (truncated, corrupt or not written by main.py); "
                        f"use another checkpoint or retrain.") from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT or "model" not in state:
        raise UserError(f"'{path}' is a PyTorch file but not a checkpoint of this repository's VAE; "
                        f"pass a checkpoint.pt written by main.py.")
    expected = {"model": dict, "params": dict, "latent_dim": int, "channels": int, "step": int}
    for key, kind in expected.items():
        value = state.get(key)
        if not isinstance(value, kind) or isinstance(value, bool):
            problem = "lacks" if key not in state else f"has a {type(value).__name__} as"
            raise UserError(f"'{path}' {problem} '{key}' (a {kind.__name__} in a checkpoint written by main.py); "
                            f"use another checkpoint or retrain.")
    return state


def model_from_checkpoint(state: dict) -> VAE:
    """Rebuild the network from the checkpoint alone (its shape is stored beside the weights)."""
    from params import UserError

    model = VAE(state["channels"], state["latent_dim"])
    try:
        model.load_state_dict(state["model"])
    except RuntimeError:
        raise UserError("The checkpoint's weights do not fit the VAE it describes (written by another version "
                        "of models.py?); retrain or use a matching checkpoint.") from None
    return model
