"""An independent PyTorch forward pass of the stopcal DINOv2 classifier: the parity reference.

Written from DINOv2's definition (facebookresearch/dinov2, vision_transformer.py and layers/)
with torch.nn.functional only — no timm, no copy of the engine's maths — and fed the weights of
a stopcal model file through models/stopcal_model.py, widened to fp32 exactly as the C reader
widens them. fp32 is the reference (ARCHITECTURE.md §3); fp64 is there to measure how far fp32 is from the
exact answer.

    python3 tests/reference/dinov2_torch.py --model M.safetensors --pixels a.f32 b.f32 [--fp64]

prints {"model": ..., "results": [{"name", "logit", "continue_score"}, ...]} as JSON.
"""

import argparse
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models"))
import stopcal_model as sm  # noqa: E402


class Dinov2Classifier:
    """The classifier of one model file: backbone + head, weights held as torch tensors."""

    def __init__(self, cfg, weights, dtype=torch.float32):
        self.cfg = cfg
        self.arch = cfg["architecture"]
        self.dtype = dtype
        self.w = {k: torch.from_numpy(np.ascontiguousarray(v)).to(dtype)
                  for k, v in weights.items()}
        self._pos_cache = {}

    @classmethod
    def from_file(cls, path, dtype=torch.float32):
        cfg, weights = sm.read_model(path)
        return cls(cfg, weights, dtype)

    @property
    def input_size(self):
        return self.cfg["input"]["size"]

    def pos_embed_for_grid(self, g):
        """The positional table (1, 1 + g², D) for a g×g patch grid, as DINOv2's
        interpolate_pos_encoding computes it."""
        if g in self._pos_cache:
            return self._pos_cache[g]
        pos = self.w["pos_embed"]
        G = self.arch["pos_embed_grid"]
        D = self.arch["embed_dim"]
        if g == G:
            out = pos  # DINOv2 returns the stored table without resampling
        else:
            # DINOv2 resamples in fp32 (pos_embed.float()); an fp64 reference stays in fp64.
            grid = pos[:, 1:].reshape(1, G, G, D).permute(0, 3, 1, 2)
            if self.arch["pos_embed_interpolation"] == "bicubic_antialias":
                patch = F.interpolate(grid, size=(g, g), mode="bicubic", antialias=True,
                                      align_corners=False)
            else:
                # The scale factor, not the size, drives the sampling positions: src = (dst +
                # 0.5)·G/(g + 0.1) − 0.5. The output size is floor(G·(g + 0.1)/G) = g.
                s = (g + 0.1) / G
                patch = F.interpolate(grid, scale_factor=(s, s), mode="bicubic",
                                      align_corners=False)
            assert patch.shape[-2:] == (g, g), patch.shape
            patch = patch.permute(0, 2, 3, 1).reshape(1, g * g, D)
            out = torch.cat([pos[:, :1], patch], dim=1)
        self._pos_cache[g] = out
        return out

    def _layer_norm(self, x, prefix):
        return F.layer_norm(x, (x.shape[-1],), self.w[prefix + ".weight"], self.w[prefix + ".bias"],
                            eps=self.arch["layernorm_eps"])

    def _linear(self, x, prefix):
        return F.linear(x, self.w[prefix + ".weight"], self.w[prefix + ".bias"])

    def _attention(self, x, b):
        B, N, D = x.shape
        heads = self.arch["num_heads"]
        hd = D // heads
        qkv = self._linear(x, b + "attn.qkv").reshape(B, N, 3, heads, hd).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # (B, heads, N, hd)
        attn = torch.softmax((q @ k.transpose(-2, -1)) / math.sqrt(hd), dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(B, N, D)
        return self._linear(out, b + "attn.proj")

    def _ffn(self, x, b):
        if self.arch["ffn"] == "mlp":
            h = F.gelu(self._linear(x, b + "mlp.fc1"))  # exact erf GELU
            return self._linear(h, b + "mlp.fc2")
        x1, x2 = self._linear(x, b + "mlp.w12").chunk(2, dim=-1)
        return self._linear(F.silu(x1) * x2, b + "mlp.w3")

    def tokens(self, pixels):
        """Patch embedding, CLS, positions and registers: (B, 1 + R + g², D)."""
        P = self.arch["patch_size"]
        B, _, S, _ = pixels.shape
        x = F.conv2d(pixels, self.w["patch_embed.proj.weight"], self.w["patch_embed.proj.bias"],
                     stride=P)
        x = x.flatten(2).transpose(1, 2)  # (B, g², D), row-major over the grid
        x = torch.cat([self.w["cls_token"].expand(B, -1, -1), x], dim=1)
        x = x + self.pos_embed_for_grid(S // P)
        if self.arch["num_registers"] > 0:
            # Registers go in after the positions are added, so they carry none.
            x = torch.cat([x[:, :1], self.w["register_tokens"].expand(B, -1, -1), x[:, 1:]], dim=1)
        return x

    @torch.no_grad()
    def logits(self, pixels):
        """Logits (B,) for pixels (B, 3, S, S) or (B, 1, S, S) (one channel is replicated)."""
        pixels = torch.as_tensor(pixels).to(self.dtype)
        if pixels.shape[1] == 1:
            pixels = pixels.expand(-1, 3, -1, -1)
        S = self.input_size
        if tuple(pixels.shape[1:]) != (3, S, S):
            raise ValueError(f"pixels of shape {tuple(pixels.shape)}, the model wants "
                             f"(B, 3, {S}, {S})")
        x = self.tokens(pixels)
        for i in range(self.arch["depth"]):
            b = f"blocks.{i}."
            x = x + self.w[b + "ls1.gamma"] * self._attention(self._layer_norm(x, b + "norm1"), b)
            x = x + self.w[b + "ls2.gamma"] * self._ffn(self._layer_norm(x, b + "norm2"), b)
        cls = self._layer_norm(x, "norm")[:, 0]
        h = F.relu(self._linear(cls, "head.fc1"))
        return self._linear(h, "head.fc2")[:, 0]


def continue_score(logit):
    """sigmoid(logit) in float64, as the result object reports it."""
    if logit >= 0:
        return 1.0 / (1.0 + math.exp(-logit))
    return math.exp(logit) / (1.0 + math.exp(logit))  # no overflow for very negative logits


def load_pixels(path, size):
    """Read a raw little-endian float32 file of (3, S, S) or (1, S, S); returns (C, S, S)."""
    a = np.fromfile(path, dtype="<f4")
    for c in (3, 1):
        if a.size == c * size * size:
            return a.reshape(c, size, size)
    raise ValueError(f"{path}: {a.size} floats is neither 3×{size}² nor 1×{size}²")


def run(model_path, pixel_paths, dtype=torch.float32):
    """Logits of each pixels file through the model file, as a list of floats."""
    model = Dinov2Classifier.from_file(model_path, dtype)
    imgs = [load_pixels(p, model.input_size) for p in pixel_paths]
    batch = torch.stack([torch.from_numpy(i).expand(3, -1, -1) for i in imgs])
    return [float(v) for v in model.logits(batch)], model.cfg


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--pixels", nargs="+", required=True)
    p.add_argument("--fp64", action="store_true", help="compute in float64")
    p.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch's default)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    logits, cfg = run(args.model, args.pixels, torch.float64 if args.fp64 else torch.float32)
    print(json.dumps({"model": {"name": cfg["name"]},
                      "results": [{"name": n, "logit": l, "continue_score": continue_score(l)}
                                  for n, l in zip(args.pixels, logits)]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
