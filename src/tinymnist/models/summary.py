"""`tinymnist summary`: per layer, the output shape, parameters, multiply-accumulates and the
receptive field; totals; the verdict against a parameter budget.

The per-layer pass is torchinfo's (it runs the model once on a (1, 1, 28, 28) batch and
records every leaf layer in execution order). Multiply-accumulates are counted here for
convolutions and linear layers only, weights without biases (torchinfo also counts biases and
BatchNorm), and the receptive field with the standard recurrence: for a layer of kernel k,
stride s and dilation d, rf += (d * (k - 1)) * jump and then jump *= s. It follows the layers
in execution order, which is exact for a chain of layers and an approximation for branches.
"""

from __future__ import annotations

import torch
from torch import nn

from .blocks import MaxBlurPool

INPUT = (1, 1, 28, 28)
# (kernel, stride, dilation) steps of layers that are not convolutions or pools but still move
# the receptive field: MaxBlurPool is a 2x2 max at stride 1, then a 3x3 blur at stride 2
COMPOUND_STEPS = {MaxBlurPool: ((2, 1, 1), (3, 2, 1))}


def macs_of(module: nn.Module, output: torch.Tensor) -> int:
    """Multiply-accumulates of one image through a conv or linear layer (weights only)."""
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return output[0].numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return output[0].numel() * module.in_features
    return 0


def rf_steps(module: nn.Module) -> tuple[tuple[int, int, int], ...]:
    """The (kernel, stride, dilation) steps a layer adds to the receptive field; none for
    pointwise layers (activations, BatchNorm, dropout) and for global pooling, flatten and linear."""
    def pair(v):
        return v[0] if isinstance(v, tuple) else v

    if isinstance(module, nn.Conv2d):
        return ((pair(module.kernel_size), pair(module.stride), pair(module.dilation)),)
    if isinstance(module, (nn.MaxPool2d, nn.AvgPool2d)):
        stride = module.stride if module.stride is not None else module.kernel_size
        dilation = getattr(module, "dilation", 1)
        return ((pair(module.kernel_size), pair(stride), pair(dilation)),)
    return COMPOUND_STEPS.get(type(module), ())


def summarize(model: nn.Module, max_params: int | None = None) -> dict:
    """The summary as a dict: ``layers`` (name, type, output, params, macs, rf, jump), totals,
    ``receptive_field`` (of the last layer that has one) and, with ``max_params``, the verdict."""
    from torchinfo import summary as torchinfo_summary  # a dependency; imported where it is used

    model = model.cpu().eval()
    outputs: dict[int, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda m, i, o: outputs.setdefault(id(m), o)) for m in model.modules()]
    try:
        stats = torchinfo_summary(model, input_size=INPUT, verbose=0, depth=64, device="cpu",
                                  col_names=("output_size", "num_params"))
    finally:
        for h in hooks:
            h.remove()
    rows, rf, jump = [], 1, 1
    for info in stats.summary_list:
        if not info.is_leaf_layer:
            continue
        for kernel, stride, dilation in rf_steps(info.module):
            rf += dilation * (kernel - 1) * jump
            jump *= stride
        out = outputs.get(id(info.module))
        rows.append({"name": layer_name(info), "type": info.class_name, "output": list(info.output_size[1:]),
                     "params": sum(p.numel() for p in info.module.parameters(recurse=False)),
                     "macs": macs_of(info.module, out) if isinstance(out, torch.Tensor) else 0,
                     "receptive_field": rf, "jump": jump})
    params = sum(p.numel() for p in model.parameters())
    report = {"params": params, "trainable_params": sum(p.numel() for p in model.parameters() if p.requires_grad),
              "macs": sum(r["macs"] for r in rows), "receptive_field": rf, "layers": rows}
    if max_params:
        report.update(max_params=max_params, within_budget=params <= max_params)
    return report


def layer_name(info) -> str:
    """The layer's dotted path in the model (``0.1`` for the second layer of the first block)."""
    parts, node = [], info
    while node is not None and node.depth > 0:
        parts.append(node.var_name)
        node = node.parent_info
    return ".".join(reversed(parts)) or info.var_name
