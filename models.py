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

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)                      # [B, 512]
        mu, logvar = self.fc(h).chunk(2, dim=1)           # [B, D] each
        return mu, logvar


# Output row 2p + a of a 4×4, stride-2, padding-1 transposed convolution takes input rows p + d through kernel
# row k: a = 0 from (d = 0, k = 1) and (d = -1, k = 3); a = 1 from (d = +1, k = 0) and (d = 0, k = 2). Stored as
# (offset of row p + d in the input zero-padded by one, k); columns alike.
_PHASE_TAPS = (((1, 1), (0, 3)), ((2, 0), (1, 2)))


class OneChannelTransposedConv(torch.autograd.Function):
    """ConvTranspose2d(C, 1, 4, stride=2, padding=1) computed as one matrix multiply (each input pixel's 16
    contributions) and, per output phase, a sum of four shifted planes: the same function, with its own backward.
    oneDNN's CPU kernel for one output channel runs at a small fraction of its usual rate (7.2 ms forward at batch
    64 on a 2-core AMD EPYC, against 1.8 ms here); the 32-channel layers do not gain from this, so they stay."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
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
        ctx.save_for_backward(rows, weight)
        ctx.input_shape = (n, c, h, w)
        return (out + bias).view(n, 1, 2 * h, 2 * w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rows, weight = ctx.saved_tensors
        n, c, h, w = ctx.input_shape
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


def _has_fused_transposed_conv() -> bool:
    """Whether this torch build has oneDNN's transposed convolution with a fused ReLU (x86 builds with MKLDNN)."""
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_convolution_transpose_pointwise")
    except (AttributeError, RuntimeError):
        return False


FUSED_TRANSPOSED_CONV = _has_fused_transposed_conv()


class TransposedConvReLU(torch.autograd.Function):
    """relu(ConvTranspose2d(x)) as one op (groups 1, no output padding): oneDNN's fused forward on CPU in float32,
    and a backward through forward convolutions. The data gradient of a transposed convolution is the convolution
    with the same weight, and its weight gradient is that convolution's weight gradient with input and output
    exchanged: the same numbers torch's own backward computes (bit for bit in float32 on a 2-core AMD EPYC), but
    oneDNN's kernels for the convolution run faster than its transposed-convolution backward (11.3 → 8.4 ms for
    the 16 → 32 layer at batch 64), and the fused forward skips one pass over the activations."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, stride: tuple, padding: tuple,
                dilation: tuple) -> torch.Tensor:
        if FUSED_TRANSPOSED_CONV and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32:
            out = torch.ops.mkldnn._convolution_transpose_pointwise(x, weight, bias, padding, [0, 0], stride,
                                                                    dilation, 1, "relu", [], "")
        else:
            out = nn.functional.conv_transpose2d(x, weight, bias, stride, padding, 0, 1, dilation).relu_()
        ctx.save_for_backward(x, weight, out)
        ctx.geometry, ctx.has_bias = (stride, padding, dilation), bias is not None
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        x, weight, out = ctx.saved_tensors
        stride, padding, dilation = ctx.geometry
        grad = torch.ops.aten.threshold_backward(grad, out, 0)           # through the ReLU, as ReluBackward does
        grad_x = nn.functional.conv2d(grad, weight, None, stride, padding, dilation) if ctx.needs_input_grad[0] else None
        grad_weight = torch.ops.aten.convolution_backward(x, grad, weight, None, stride, padding, dilation, False,
                                                          [0, 0], 1, [False, True, False])[1]
        grad_bias = grad.sum((0, 2, 3)) if ctx.has_bias else None
        return grad_x, grad_weight, grad_bias, None, None, None


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
        *body, output = self.deconvs                      # unpacked, not sliced: a slice builds a new module per step
        h = self.fc(z).view(-1, 32, 4, 4)                 # [B, 32, 4, 4]
        if self.fused_deconv and not autocast_enabled(z.device.type):  # under amp the layers run as usual
            for deconv in body[::2]:                      # (transposed conv, ReLU) pairs
                h = TransposedConvReLU.apply(h, deconv.weight, deconv.bias, deconv.stride, deconv.padding,
                                             deconv.dilation)
        else:
            for layer in body:
                h = layer(h)                              # → [B, 32, 32, 32]
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
