"""Where the PyTorch reference looked: the attention probabilities of every block, recorded from
an independent forward pass (dinov2_torch.Dinov2Classifier, whose attention is re-done here with
the matrix kept), and the two maps stopcal's explain passes report:

  - the last block's attention from the CLS token (query 0) to every token, per head;
  - the attention rollout (Abnar & Zuidema 2020): per block the head mean A, Â = (A + I)/2 with
    rows renormalised, multiplied through the blocks Â_L ⋯ Â_1, of which the CLS row is kept.
    The product is taken in float64 from the fp32 matrices.
"""

import math

import numpy as np
import torch

import dinov2_torch


class AttentionRecorder(dinov2_torch.Dinov2Classifier):
    """The reference classifier, keeping each block's softmax(q·kᵀ/√d) (B, heads, T, T)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.recorded = []

    def _attention(self, x, b):
        B, N, D = x.shape
        heads = self.arch["num_heads"]
        hd = D // heads
        qkv = self._linear(x, b + "attn.qkv").reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(hd), dim=-1)
        self.recorded.append(attn.detach().clone())
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self._linear(out, b + "attn.proj")

    def explain(self, pixels):
        """For pixels (B, C, S, S): (logits (B,), cls (B, H, T) of the last block, rollout (B, T))."""
        self.recorded = []
        logits = self.logits(torch.as_tensor(pixels))
        last = self.recorded[-1][:, :, 0, :]
        joint = None
        for attn in self.recorded:
            a = attn.mean(dim=1).double()
            eye = torch.eye(a.shape[-1], dtype=a.dtype).expand_as(a)
            a = (a + eye) / 2
            a = a / a.sum(dim=-1, keepdim=True)
            joint = a if joint is None else a @ joint
        return logits.numpy(), last.numpy(), joint[:, 0, :].numpy()


def patch_grid(row, registers, g):
    """A token-order row (T,) → the patch grid in the image's orientation (g, g): [y][x], the
    tensor being the transpose of the image."""
    return np.asarray(row[1 + registers:]).reshape(g, g).T
