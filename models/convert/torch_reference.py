"""The reference pipeline's model in PyTorch, built from a backbone and a checkpoint's tensors.

It mirrors the modules the reference builds — torch-hub DINOv2 (`DinoVisionTransformer`: blocks
with LayerScale, bicubic positional-embedding resizing, registers after positions), astroNNomy's
`DINOV2FeatureExtractor` wrapping every block's `attn.qkv` in a `LoRA` module that adds
`(alpha/r)·B(A(x))` to the q and v slices at run time, and `ImagenetTransferLearning`'s
`classifier = Sequential(Flatten, Dropout1d, Linear, ReLU, Linear)` on the final-norm CLS token —
and loads the state dicts under the reference's own key names with `load_state_dict`. Nothing
here reads stopcal model files or shares code with the converter's mapping, so comparing the
engine on a converted file with this model tests the conversion itself.

Used by `stopcal-convert --verify` and tests/convert. Needs torch.
"""

import math

import torch
import torch.nn as nn
import torch.nn.functional as F


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.proj = nn.Conv2d(3, dim, kernel_size=patch, stride=patch)

    def forward(self, x):
        return self.proj(x).flatten(2).transpose(1, 2)  # (B, g*g, D), row-major grid


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.scale = (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.heads, C // self.heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = (q @ k.transpose(-2, -1)).softmax(dim=-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(B, N, C))


class LayerScale(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        return x * self.gamma


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class SwiGLUFFNFused(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.w12, self.w3 = nn.Linear(dim, 2 * hidden), nn.Linear(hidden, dim)

    def forward(self, x):
        x1, x2 = self.w12(x).chunk(2, dim=-1)
        return self.w3(F.silu(x1) * x2)


class Block(nn.Module):
    def __init__(self, dim, heads, ffn, hidden):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, hidden) if ffn == "mlp" else SwiGLUFFNFused(dim, hidden)
        self.ls2 = LayerScale(dim)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoVisionTransformer(nn.Module):
    """torch-hub DINOv2, sized from a release state dict's shapes."""

    def __init__(self, sd):
        super().__init__()
        dim = sd["cls_token"].shape[-1]
        patch = sd["patch_embed.proj.weight"].shape[-1]
        depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
        ffn = "mlp" if "blocks.0.mlp.fc1.weight" in sd else "swiglu"
        hidden = (sd["blocks.0.mlp.fc1.weight"].shape[0] if ffn == "mlp"
                  else sd["blocks.0.mlp.w12.weight"].shape[0] // 2)
        self.patch_size = patch
        self.num_register_tokens = sd["register_tokens"].shape[1] if "register_tokens" in sd else 0
        # torch-hub: register models resize positions to a size with antialias, the others by
        # scale factor (g + 0.1)/G without.
        self.interpolate_antialias = self.num_register_tokens > 0
        self.interpolate_offset = 0.0 if self.num_register_tokens > 0 else 0.1
        self.patch_embed = PatchEmbed(patch, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(sd["pos_embed"].shape))
        if self.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, self.num_register_tokens, dim))
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.blocks = nn.ModuleList(Block(dim, dim // 64, ffn, hidden) for _ in range(depth))
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.head = nn.Identity()

    def interpolate_pos_encoding(self, x, w, h):
        npatch, N = x.shape[1] - 1, self.pos_embed.shape[1] - 1
        if npatch == N and w == h:
            return self.pos_embed
        pos = self.pos_embed.float()
        dim = x.shape[-1]
        w0, h0 = w // self.patch_size, h // self.patch_size
        M = int(math.sqrt(N))
        if self.interpolate_offset:
            kw = {"scale_factor": ((w0 + self.interpolate_offset) / M,
                                   (h0 + self.interpolate_offset) / M)}
        else:
            kw = {"size": (w0, h0)}
        patch = F.interpolate(pos[:, 1:].reshape(1, M, M, dim).permute(0, 3, 1, 2),
                              mode="bicubic", antialias=self.interpolate_antialias, **kw)
        assert patch.shape[-2:] == (w0, h0)
        patch = patch.permute(0, 2, 3, 1).reshape(1, -1, dim)
        return torch.cat((pos[:, :1], patch), dim=1).to(x.dtype)

    def forward(self, x):
        B, _, w, h = x.shape
        x = self.patch_embed(x)
        x = torch.cat((self.cls_token.expand(B, -1, -1), x), dim=1)
        x = x + self.interpolate_pos_encoding(x, w, h)
        if self.num_register_tokens:
            x = torch.cat((x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]), dim=1)
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.norm(x)[:, 0])  # x_norm_clstoken


class LoRA(nn.Module):
    """astroNNomy's adapter: qkv(x) with (alpha/r)·B(A(x)) added to the q and v slices."""

    def __init__(self, qkv, r, alpha):
        super().__init__()
        dim = qkv.in_features
        self.qkv, self.dim, self.alpha = qkv, dim, alpha
        self.linear_a_q = nn.Linear(dim, r, bias=False)
        self.linear_b_q = nn.Linear(r, dim, bias=False)
        self.linear_a_v = nn.Linear(dim, r, bias=False)
        self.linear_b_v = nn.Linear(r, dim, bias=False)
        for a in (self.linear_a_q, self.linear_a_v):
            nn.init.kaiming_uniform_(a.weight, a=math.sqrt(5))
        for b in (self.linear_b_q, self.linear_b_v):
            nn.init.zeros_(b.weight)

    def forward(self, x):
        qkv = self.qkv(x)
        new_q = (self.alpha / self.linear_a_q.out_features) * self.linear_b_q(self.linear_a_q(x))
        new_v = (self.alpha / self.linear_a_v.out_features) * self.linear_b_v(self.linear_a_v(x))
        qkv[:, :, :self.dim].add_(new_q)
        qkv[:, :, -self.dim:].add_(new_v)
        return qkv


class FeatureExtractor(nn.Module):
    def __init__(self, encoder, use_lora, r, alpha):
        super().__init__()
        self.encoder, self.decoder = encoder, nn.Identity()
        if use_lora:
            for blk in encoder.blocks:
                blk.attn.qkv = LoRA(blk.attn.qkv, r, alpha)

    def forward(self, x):
        return self.decoder(self.encoder(x))


class ReferenceClassifier(nn.Module):
    """ImagenetTransferLearning with a DINOv2 feature extractor and lift="stack"."""

    def __init__(self, feature_extractor, dim, hidden):
        super().__init__()
        self.feature_extractor = feature_extractor
        self.classifier = nn.Sequential(nn.Flatten(), nn.Dropout1d(p=0.1), nn.Linear(dim, hidden),
                                        nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, x):
        if x.shape[1] == 1:
            x = torch.repeat_interleave(x, repeats=3, dim=1)
        return self.classifier(self.feature_extractor(x))


def is_lora_key(key):
    return ".attn.qkv.linear_" in key and key.startswith("feature_extractor.encoder.blocks")


def dotted(key):
    """The key the reference meant: feature_extractor.encoder.blocks{i}. → blocks.{i}."""
    head = "feature_extractor.encoder.blocks"
    rest = key[len(head):]
    return head + ("" if rest.startswith(".") else ".") + rest


def build(release_sd, checkpoint_sd, model_kwargs, lora):
    """The reference's classifier, in eval mode, from a DINOv2 release state dict (torch-hub
    names) and a fine-tuned model_state_dict (reference names), both name → torch.Tensor.

    lora "merge": the adapters are loaded (under the key names training meant) and applied at
    run time, as in training; "drop": they are left out, as the deployed strict=False loader
    leaves out the mis-named keys; None: the checkpoint has none."""
    release_sd = {k: v.float() for k, v in release_sd.items()}
    release_sd.setdefault("mask_token", torch.zeros(1, release_sd["cls_token"].shape[-1]))
    encoder = DinoVisionTransformer(release_sd)
    encoder.load_state_dict(release_sd, strict=True)
    adapters = {k: v for k, v in checkpoint_sd.items() if is_lora_key(k)}
    r = next((v.shape[0] for k, v in adapters.items() if "linear_a_q" in k), 1)
    use_lora = bool(model_kwargs.get("use_lora", False)) or bool(adapters)
    alpha = float(model_kwargs.get("lora_alpha", 16.0))
    fe = FeatureExtractor(encoder, use_lora, r, alpha)
    dim = release_sd["cls_token"].shape[-1]
    hidden = checkpoint_sd["classifier.2.weight"].shape[0]
    model = ReferenceClassifier(fe, dim, hidden)
    if "zeros" in str(model_kwargs.get("pos_embed", "pre-trained")):
        with torch.no_grad():
            encoder.pos_embed[:, 1:, :] = 0.0
    sd = {k: v.float() for k, v in checkpoint_sd.items() if not is_lora_key(k)}
    if lora == "merge":
        sd.update({dotted(k): v.float() for k, v in adapters.items()})
    missing, unexpected = model.load_state_dict(sd, strict=False)
    if unexpected:
        raise ValueError(f"checkpoint keys the reference model does not have: {unexpected[:5]}")
    loaded = set(sd)
    if lora == "merge" and not all(dotted(k) in loaded for k in adapters):
        raise AssertionError("adapters not loaded")
    model.eval()
    return model


@torch.no_grad()
def logits(model, pixels):
    """Logits (B,) for pixels (B, 3 or 1, S, S) in fp32."""
    return model(torch.as_tensor(pixels, dtype=torch.float32))[:, 0]
