"""CPU kernels for the Burgess network's convolution stacks, plugged into a model only where its layers match.

`plug_in` compares the encoder's and the decoder's convolution stacks with the exact pattern each kernel implements
(layer types, 4×4 kernels, stride 2, padding 1, ReLU between layers) and swaps in the kernel on a match, keeping
the same parameters and state_dict keys. On anything else it leaves the layers alone and says which switch it
turned off and why, so an edited network always trains as written.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

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
    the same function. oneDNN's CPU kernel for one output channel runs at a small fraction of its usual rate; the
    32-channel layers do not gain from this."""

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


def _stride_two(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, transposed: bool, relu: bool,
                fused: bool = True):
    """One 4×4, stride-2, padding-1 (transposed) convolution, ReLU after it if `relu`: oneDNN's fused kernel in
    float32 on CPU when `fused`."""
    stride, padding, dilation = _GEOMETRY
    if fused and relu and FUSED_CONVOLUTIONS and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32:
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

    Why it is faster on CPU (docs/speed.md): the forward runs oneDNN's
    fused convolution + ReLU; the backward owns every gradient buffer it makes, so each ReLU's mask is applied in
    place instead of into a fresh 8 MiB activation; the transposed layers' gradients go through forward
    convolutions (the data gradient of a transposed convolution is the convolution with the same weight, its weight
    gradient that convolution's weight gradient with input and output exchanged), which oneDNN runs faster than its
    transposed-convolution backward; and a 1-channel last layer runs forward as one_channel_transposed_conv.
    `parameters`: weight, bias of each layer in order."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, transposed: bool, linear_last: bool, *parameters: torch.Tensor) -> torch.Tensor:
        weights, biases = parameters[0::2], parameters[1::2]
        # oneDNN's fused ReLU maps NaN to 0 where torch's ReLU keeps it, so a NaN weight or input (a blown-up step)
        # would vanish in the next layer and the loss stay finite: then the layers run unfused, the loss turns NaN
        # and the NaN guard stops the run, as without the switch. The encoder's input, images checked finite when
        # read, is not checked again (the decoder's, from its linear layers, is).
        checked = (x, *parameters) if transposed else parameters
        fused = FUSED_CONVOLUTIONS and x.device.type == "cpu" and x.dtype == torch.float32 \
            and all(bool(torch.isfinite(tensor).all()) for tensor in checked)
        activations = [x]
        for index, (weight, bias) in enumerate(zip(weights, biases)):
            last = index == len(weights) - 1
            if last and linear_last and transposed and weight.shape[1] == 1:
                activations.append(one_channel_transposed_conv(activations[-1], weight, bias))
            else:
                activations.append(_stride_two(activations[-1], weight, bias, transposed, not (last and linear_last),
                                               fused))
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


class Float32Output(nn.Sequential):
    """A decoder stack whose last layer runs in float32 under bf16 autocast (amp): with bf16 logits a 2,000-step
    CPU run ended 2.4% from plain fp32, with float32 logits 0.9% (`bench.py --check-numerics`)."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if not autocast_enabled(h.device.type):
            return super().forward(h)
        *body, output = self                              # unpacked, not sliced: a slice builds a new module per step
        for layer in body:
            h = layer(h)
        with torch.autocast(h.device.type, enabled=False):
            return self.output_layer(output, h.float())

    @staticmethod
    def output_layer(output: nn.Module, h: torch.Tensor) -> torch.Tensor:
        return output(h)


class FusedConvs(nn.Sequential):
    """The encoder's convolutions + ReLUs as one ConvStack op in float32; under amp the layers run as usual."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if autocast_enabled(x.device.type):
            return super().forward(x)
        return ConvStack.apply(x, False, False, *stack_parameters(self))


class FusedDeconvs(Float32Output):
    """The decoder's transposed convolutions + ReLUs and its output layer as one ConvStack op in float32 (a
    1-channel output layer as one_channel_transposed_conv); under amp the layers run as usual and the output layer
    in float32, 1-channel as OneChannelTransposedConv."""

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        if autocast_enabled(h.device.type):
            return super().forward(h)
        return ConvStack.apply(h, True, True, *stack_parameters(self))

    @staticmethod
    def output_layer(output: nn.Module, h: torch.Tensor) -> torch.Tensor:
        if output.out_channels == 1:
            return OneChannelTransposedConv.apply(h, output.weight, output.bias)
        return output(h)


def _stack_mismatch(layers: object, convolution: type, linear_last: bool) -> str | None:
    """Why `layers` is not the stack a ConvStack computes, or None when it is: an nn.Sequential of `convolution`
    layers (4×4, stride 2, padding 1, no dilation, groups or output padding, with bias), each followed by an
    nn.ReLU, except the last one when `linear_last`."""
    if type(layers) not in (nn.Sequential, Float32Output):
        return f"it is a {type(layers).__name__}, not an nn.Sequential"
    modules = list(layers)
    if len(modules) < 2:
        return "it has fewer than two layers"
    for index, module in enumerate(modules):
        expect_convolution = index % 2 == 0
        if expect_convolution and type(module) is not convolution:
            return f"layer {index} is {type(module).__name__}, not {convolution.__name__}"
        if not expect_convolution and type(module) is not nn.ReLU:
            return f"layer {index} is {type(module).__name__}, not ReLU"
        if expect_convolution:
            geometry = (module.kernel_size, module.stride, module.padding, module.dilation, module.groups,
                        getattr(module, "output_padding", (0, 0)), module.padding_mode, module.bias is not None)
            if geometry != ((4, 4), (2, 2), (1, 1), (1, 1), 1, (0, 0), "zeros", True):
                return (f"layer {index} has kernel {module.kernel_size}, stride {module.stride}, padding "
                        f"{module.padding}, not the 4×4 / 2 / 1 the kernel implements")
    if linear_last != (type(modules[-1]) is convolution):
        return "its last layer " + ("is a ReLU" if linear_last else "has no ReLU after it")
    return None


def plug_in(model: nn.Module, settings: dict, say: Callable[[str], object] = print) -> dict:
    """Swap the kernels that settings["fused_conv"] / ["fused_deconv"] ask for into `model` where its layers match,
    and run the decoder's output layer in float32 under amp; returns `settings` with each switch that could not
    apply turned off (one line each through `say`). Parameters and state_dict keys stay those of `model`."""
    settings = dict(settings)
    encoder, decoder = getattr(model, "encoder", None), getattr(model, "decoder", None)
    if settings.get("fused_conv"):
        reason = (_stack_mismatch(getattr(encoder, "convs", None), nn.Conv2d, linear_last=False)
                  if FUSED_CONVOLUTIONS else "this torch build has no oneDNN fused convolutions")
        if reason is None:
            encoder.convs = FusedConvs(*encoder.convs)
        else:
            say(f"notice: fused_conv turned off: model.encoder.convs is not the Burgess stack it implements ({reason})")
            settings["fused_conv"] = False
    deconvs = getattr(decoder, "deconvs", None)
    if settings.get("fused_deconv"):
        reason = (_stack_mismatch(deconvs, nn.ConvTranspose2d, linear_last=True)
                  if FUSED_CONVOLUTIONS else "this torch build has no oneDNN fused convolutions")
        if reason is None:
            decoder.deconvs = FusedDeconvs(*deconvs)
            return settings
        say(f"notice: fused_deconv turned off: model.decoder.deconvs is not the Burgess stack it implements ({reason})")
        settings["fused_deconv"] = False
    if settings.get("amp") == "bf16":
        if isinstance(deconvs, nn.Sequential) and len(deconvs) and hasattr(deconvs[-1], "weight"):
            decoder.deconvs = Float32Output(*deconvs)
        else:
            say("notice: amp runs the whole decoder in bf16: model.decoder.deconvs is not an nn.Sequential ending "
                "in a layer with weights, which amp keeps in float32")
    return settings
