"""The fast inference form that ``load_checkpoint`` returns: the same function as the training form, fewer
operators.

At batch 1 these small networks spend their time in per-operator overhead, not in multiply-adds, so the
form removes operators without changing what is computed:

- BatchNorm folded into the convolution before it (``models.layers.batchnorm_fold``: PyTorch's
  ``fuse_conv_bn_weights`` in float64): plain ``Conv2d``+``BatchNorm2d`` pairs (a ``Sequential`` of the two, or
  attributes ``convX`` / ``bnX``), layers that know how to take a BatchNorm in (``protocol.FoldsBatchNorm``:
  CondConv's experts, DGConv's exported grouped convs) and modules that fold their own
  (``protocol.FoldsOwnBatchNorms``: DS-Net's slimmable convs per width);
- modules that have a cheaper inference computation provide ``prepare_fast_form()`` (``protocol.PreparesFastForm``:
  SkipNet's recurrent gate as one affine map and one sigmoid per step);
- no autograd bookkeeping (``requires_grad_(False)``); callers may run it under ``no_grad`` or
  ``torch.inference_mode``, which decide and count the same;
- the weights in the memory format measured faster for the model on its device (``models.memory_format``:
  channels-last or contiguous), the dense counterpart chosen the same way.

The form counts exactly the multiply-adds of the training form (BatchNorm is not a multiply-add that
``FlopCounterMode`` counts; a folded bias is an addition), so traces, golden files and MAC ratios do not
change. It is for inference only: ``save_checkpoint`` refuses it, and training uses the training form
(``load_checkpoint(..., form="train")``).
"""

from __future__ import annotations

import torch
import torch.nn as nn

from .layers.batchnorm_fold import fold_weights
from .memory_format import choose_memory_format
from .protocol import FoldsBatchNorm, FoldsOwnBatchNorms, PreparesFastForm, RouteScopeModel

FORMS = ("fast", "train")


def fold_conv(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """A new ``Conv2d`` computing ``bn(conv(x))`` (eval mode), keeping the buffers the conv records of itself."""
    weight, bias = fold_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
    fused = nn.Conv2d(
        conv.in_channels,
        conv.out_channels,
        conv.kernel_size,
        conv.stride,
        conv.padding,
        conv.dilation,
        conv.groups,
        bias=True,
        padding_mode=conv.padding_mode,
    ).to(conv.weight.device, conv.weight.dtype)
    fused.weight.copy_(weight)
    fused.bias.copy_(bias)
    for name, buffer in conv.named_buffers(recurse=False):  # what the conv records of itself (RePr's dropped filters)
        fused.register_buffer(name, buffer.clone(), persistent=name not in conv._non_persistent_buffers_set)
    return fused


def _fold_pair(conv: nn.Module, bn: nn.Module) -> nn.Module | None:
    """The conv with ``bn`` folded in, or None when the pair is not foldable."""
    if not isinstance(bn, nn.BatchNorm2d):
        return None
    if type(conv) is nn.Conv2d:
        return fold_conv(conv, bn)
    return conv.fold_batchnorm(bn) if isinstance(conv, FoldsBatchNorm) else None


@torch.no_grad()
def fold_batchnorms(module: nn.Module) -> int:
    """Fold every BatchNorm that follows a conv into it, in place; returns how many were folded."""
    folded = 0
    if isinstance(module, FoldsOwnBatchNorms):  # a module that folds its own (e.g. DS-Net's per-width statistics)
        return module.fold_batchnorms()
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            fused = _fold_pair(module[i], module[i + 1])
            if fused is not None:
                module[i], module[i + 1] = fused, nn.Identity()
                folded += 1
    for name, child in list(module.named_children()):
        if name.startswith("conv") and hasattr(module, "bn" + name[4:]):
            fused = _fold_pair(child, getattr(module, "bn" + name[4:]))
            if fused is not None:
                setattr(module, name, fused)
                setattr(module, "bn" + name[4:], nn.Identity())
                folded += 1
    for child in module.children():
        folded += fold_batchnorms(child)
    return folded


@torch.no_grad()
def fast_form(model: RouteScopeModel, input_size: tuple[int, int, int] | None = None) -> RouteScopeModel:
    """``model`` (in eval mode) turned into its fast inference form, in place: a model made for inference only.
    ``input_size`` (default: ``model.meta["input_size"]``, where there is one) is what the memory format is
    measured with."""
    model.eval()
    if input_size is None:
        input_size = getattr(model, "meta", {}).get("input_size")
    counterpart = model.dense_counterpart()
    if counterpart is not None:  # built from the training-form weights, before they are folded; in the same form
        model.keep_dense_counterpart(fast_form(counterpart.eval(), input_size))
    fold_batchnorms(model)
    for m in model.modules():
        if isinstance(m, PreparesFastForm):
            m.prepare_fast_form()
    model.requires_grad_(False).eval()  # the folded convs are new modules: in eval mode like the rest
    model.is_fast_form = True
    choose_memory_format(model, input_size)
    return model
