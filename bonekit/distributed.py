"""Distributed helpers: batch norm synchronised across processes, on GPU and on CPU.

torch's ``SyncBatchNorm`` only runs on accelerators; the CPU path (used by the 2-process tests and by CPU clusters)
is :class:`GlobalBatchNorm`, which all-reduces per-channel sums with autograd so gradients match one process
holding the whole batch.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


class GlobalBatchNorm(nn.Module):
    """Drop-in for BatchNorm1d/2d whose training statistics cover the batch of every process."""

    def __init__(self, bn: nn.modules.batchnorm._BatchNorm):
        super().__init__()
        self.num_features, self.eps, self.momentum = bn.num_features, bn.eps, bn.momentum
        self.affine = bn.affine
        if bn.affine:
            self.weight, self.bias = bn.weight, bn.bias
        self.register_buffer("running_mean", bn.running_mean)
        self.register_buffer("running_var", bn.running_var)
        self.register_buffer("num_batches_tracked", bn.num_batches_tracked)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or world_size() == 1:
            return nn.functional.batch_norm(x, self.running_mean, self.running_var, getattr(self, "weight", None),
                                            getattr(self, "bias", None), self.training, self.momentum or 0.1, self.eps)
        dims = [0] + list(range(2, x.ndim))
        xf = x.float()
        n_local = torch.tensor([float(x.numel() // x.shape[1])], device=x.device)
        stats = torch.cat([xf.sum(dims), (xf * xf).sum(dims), n_local])
        stats = torch.distributed.nn.functional.all_reduce(stats)  # differentiable: gradients see every process
        c = self.num_features
        n = stats[-1]
        mean = stats[:c] / n
        var = stats[c : 2 * c] / n - mean * mean
        with torch.no_grad():
            m = self.momentum or 0.1
            self.running_mean.mul_(1 - m).add_(m * mean.detach())
            self.running_var.mul_(1 - m).add_(m * var.detach() * n / (n - 1))
            self.num_batches_tracked += 1
        shape = [1, c] + [1] * (x.ndim - 2)
        y = (xf - mean.view(shape)) * torch.rsqrt(var.view(shape) + self.eps)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y.to(x.dtype)


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Synchronise every batch norm when more than one process runs; a no-op for one process."""
    if world_size() == 1:
        return model
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _swap_bn(model)


def _swap_bn(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm):
        return GlobalBatchNorm(module)
    for name, child in module.named_children():
        setattr(module, name, _swap_bn(child))
    return module
