"""Where the PyTorch reference looked: the attention probabilities of every block, recorded from
an independent forward pass of the family's reference classifier (tests/reference/dinov2_torch.py,
or the DINOv3 one when that family's reference exists), and the two maps stopcal's explain passes
report:

  - the last block's attention from the CLS token (query 0) to every token, per head;
  - the attention rollout (Abnar & Zuidema 2020): per block the head mean A, Â = (A + I)/2 with
    rows renormalised, multiplied through the blocks Â_L ⋯ Â_1, of which the CLS row is kept.
    The product is taken in float64 from the fp32 matrices.

The probabilities are taken where the references compute them: their attention's torch.softmax
over the keys, the only softmax of the network, watched while the reference runs its ordinary
forward pass, so that any family's reference serves unchanged.
"""

import contextlib

import numpy as np
import torch

import dinov2_torch


def classifier(path, dtype=torch.float32):
    """The reference classifier of a model file, for its family."""
    try:
        import dinov3_torch
    except ImportError:
        dinov3_torch = None
    if dinov3_torch is not None and hasattr(dinov3_torch, "classifier_for"):
        return dinov3_torch.classifier_for(path, dtype)
    return dinov2_torch.Dinov2Classifier.from_file(path, dtype)


@contextlib.contextmanager
def recorded_softmax(out):
    """Within the block, every torch.softmax result is appended to out."""
    real = torch.softmax

    def spy(x, *args, **kwargs):
        y = real(x, *args, **kwargs)
        out.append(y.detach().clone())
        return y

    torch.softmax = spy
    try:
        yield out
    finally:
        torch.softmax = real


class AttentionRecorder:
    """A model file's reference classifier whose attention matrices are kept."""

    def __init__(self, model):
        self.model = model
        self.arch = model.arch
        self.input_size = model.input_size

    @classmethod
    def from_file(cls, path, dtype=torch.float32):
        return cls(classifier(path, dtype))

    def explain(self, pixels):
        """For pixels (B, C, S, S): (logits (B,), cls (B, H, T) of the last block, rollout (B, T))."""
        recorded = []
        with recorded_softmax(recorded):
            logits = self.model.logits(torch.as_tensor(pixels))
        depth, heads = self.arch["depth"], self.arch["num_heads"]
        assert len(recorded) == depth, "%d softmax calls for %d blocks" % (len(recorded), depth)
        for a in recorded:
            assert a.dim() == 4 and a.shape[1] == heads and a.shape[2] == a.shape[3], tuple(a.shape)
        last = recorded[-1][:, :, 0, :]
        joint = None
        for attn in recorded:
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
