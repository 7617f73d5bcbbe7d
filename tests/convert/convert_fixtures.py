"""Synthetic inputs for the converter tests, written with torch in the reference's exact layouts.

- A DINOv2 release file: `torch.save(model.state_dict())` of the torch-hub module — an
  OrderedDict in the hub's parameter order (cls_token, pos_embed, register_tokens, mask_token,
  patch_embed, blocks.N.*, norm), positional table for a 37×37 grid, tiny widths (D = 128).
- The same backbone as a Hugging Face Dinov2Model safetensors file (q, k, v separate,
  `layer_scale*.lambda1`, `embeddings.*`, `layernorm.*`).
- A fine-tuned checkpoint as astroNNomy's save_checkpoint writes it: {"model": the model class,
  "model_state_dict": finetuned_state_dict() — classifier.2/4, tuned tokens, LoRA adapters under
  `feature_extractor.encoder.blocks{key}` (the missing dot included) —, "optimizer": AdamW,
  "optimizer_state_dict", "step", "config": Namespace(model={...}, data_transforms={...,
  "mean": tensor([m]), "std": tensor([s])}, ...)}. The model class (and, on request, the config
  class) live in a throw-away module that exists only while the file is written.

Reference logits come from convert/torch_reference.py, fed the files' tensors via torch.load —
the checkpoint's own tensors under their own names, with LoRA applied at run time.
"""

import argparse
import collections
import importlib
import math
import os
import sys
import textwrap
import uuid

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "models"))

from convert import torch_reference  # noqa: E402

D_TINY = 128


def _gen(seed):
    g = torch.Generator().manual_seed(seed)
    return lambda *shape, std=1.0, mean=0.0: torch.randn(*shape, generator=g) * std + mean


def make_release(seed=0, dim=D_TINY, depth=2, registers=4, ffn="mlp", grid=37, patch=14):
    """A torch-hub DINOv2 state dict (OrderedDict, hub order), weights scaled so every part
    matters at a 1e-4 tolerance (LayerScale O(1), non-zero biases, smooth positions + noise)."""
    n = _gen(seed)
    g = torch.Generator().manual_seed(seed + 1)
    sd = collections.OrderedDict()
    sd["cls_token"] = n(1, 1, dim, std=0.5)
    ii, jj = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    fx, fy, ph = n(dim, std=1.0), n(dim, std=1.0), n(dim, std=3.0)
    table = 0.3 * torch.sin(2 * math.pi * (fx * ii[..., None] + fy * jj[..., None]) / grid + ph)
    table = table + 0.1 * n(grid, grid, dim)
    sd["pos_embed"] = torch.cat([n(1, dim, std=0.3), table.reshape(-1, dim)])[None]
    if registers:
        sd["register_tokens"] = n(1, registers, dim, std=0.5)
    sd["mask_token"] = torch.zeros(1, dim)
    sd["patch_embed.proj.weight"] = n(dim, 3, patch, patch, std=1 / math.sqrt(3 * patch * patch))
    sd["patch_embed.proj.bias"] = n(dim, std=0.1)
    hidden = 4 * dim if ffn == "mlp" else (int(4 * dim * 2 / 3) + 7) // 8 * 8
    for i in range(depth):
        b = f"blocks.{i}."
        sd[b + "norm1.weight"] = n(dim, std=0.1, mean=1.0)
        sd[b + "norm1.bias"] = n(dim, std=0.1)
        sd[b + "attn.qkv.weight"] = n(3 * dim, dim, std=1 / math.sqrt(dim))
        sd[b + "attn.qkv.bias"] = n(3 * dim, std=0.1)
        sd[b + "attn.proj.weight"] = n(dim, dim, std=1 / math.sqrt(dim))
        sd[b + "attn.proj.bias"] = n(dim, std=0.1)
        sd[b + "ls1.gamma"] = torch.rand(dim, generator=g) * 0.9 + 0.1
        sd[b + "norm2.weight"] = n(dim, std=0.1, mean=1.0)
        sd[b + "norm2.bias"] = n(dim, std=0.1)
        if ffn == "mlp":
            sd[b + "mlp.fc1.weight"] = n(hidden, dim, std=1 / math.sqrt(dim))
            sd[b + "mlp.fc1.bias"] = n(hidden, std=0.1)
            sd[b + "mlp.fc2.weight"] = n(dim, hidden, std=1 / math.sqrt(hidden))
            sd[b + "mlp.fc2.bias"] = n(dim, std=0.1)
        else:
            sd[b + "mlp.w12.weight"] = n(2 * hidden, dim, std=1 / math.sqrt(dim))
            sd[b + "mlp.w12.bias"] = n(2 * hidden, std=0.1)
            sd[b + "mlp.w3.weight"] = n(dim, hidden, std=1 / math.sqrt(hidden))
            sd[b + "mlp.w3.bias"] = n(dim, std=0.1)
        sd[b + "ls2.gamma"] = torch.rand(dim, generator=g) * 0.9 + 0.1
    sd["norm.weight"] = n(dim, std=0.1, mean=1.0)
    sd["norm.bias"] = n(dim, std=0.1)
    return sd


def hf_state_dict(release):
    """The same backbone under Hugging Face Dinov2Model names."""
    hf = collections.OrderedDict()
    D = release["cls_token"].shape[-1]
    hf["embeddings.cls_token"] = release["cls_token"]
    hf["embeddings.mask_token"] = release["mask_token"]
    if "register_tokens" in release:
        hf["embeddings.register_tokens"] = release["register_tokens"]
    hf["embeddings.position_embeddings"] = release["pos_embed"]
    hf["embeddings.patch_embeddings.projection.weight"] = release["patch_embed.proj.weight"]
    hf["embeddings.patch_embeddings.projection.bias"] = release["patch_embed.proj.bias"]
    depth = 1 + max(int(k.split(".")[1]) for k in release if k.startswith("blocks."))
    for i in range(depth):
        s, d = f"blocks.{i}.", f"encoder.layer.{i}."
        hf[d + "norm1.weight"] = release[s + "norm1.weight"]
        hf[d + "norm1.bias"] = release[s + "norm1.bias"]
        for j, part in enumerate(("query", "key", "value")):
            hf[d + f"attention.attention.{part}.weight"] = \
                release[s + "attn.qkv.weight"][j * D:(j + 1) * D].clone()
            hf[d + f"attention.attention.{part}.bias"] = \
                release[s + "attn.qkv.bias"][j * D:(j + 1) * D].clone()
        hf[d + "attention.output.dense.weight"] = release[s + "attn.proj.weight"]
        hf[d + "attention.output.dense.bias"] = release[s + "attn.proj.bias"]
        hf[d + "layer_scale1.lambda1"] = release[s + "ls1.gamma"]
        hf[d + "norm2.weight"] = release[s + "norm2.weight"]
        hf[d + "norm2.bias"] = release[s + "norm2.bias"]
        for src, dst in (("fc1", "fc1"), ("fc2", "fc2"), ("w12", "weights_in"),
                         ("w3", "weights_out")):
            for leaf in ("weight", "bias"):
                if f"{s}mlp.{src}.{leaf}" in release:
                    hf[f"{d}mlp.{dst}.{leaf}"] = release[f"{s}mlp.{src}.{leaf}"]
        hf[d + "layer_scale2.lambda1"] = release[s + "ls2.gamma"]
    hf["layernorm.weight"] = release["norm.weight"]
    hf["layernorm.bias"] = release["norm.bias"]
    return hf


def write_hf_safetensors(path, release, dtype="F32"):
    import stopcal_model as sm
    hf = hf_state_dict(release)
    sm.write_safetensors(path, {k: (dtype, tuple(v.shape), v.numpy()) for k, v in hf.items()},
                         metadata={"format": "pt"})
    return path


class FakeTrainingPackage:
    """A module holding the training code's classes, importable only while in use.

    With trap=True its import creates `trap_marker`, so a test can prove a converter never
    imported it even where it could have."""

    def __init__(self, tmpdir, trap_marker=None):
        self.dir = os.path.join(tmpdir, "fakepkg")
        os.makedirs(self.dir, exist_ok=True)
        self.name = f"astronnomy_fake_{uuid.uuid4().hex[:8]}"
        trap = (f"open({trap_marker!r}, 'w').write('imported')\n" if trap_marker else "")
        with open(os.path.join(self.dir, self.name + ".py"), "w") as f:
            f.write(textwrap.dedent(f"""\
                # Stands in for astroNNomy's training code when writing test checkpoints.
                {trap}
                class ImagenetTransferLearning:
                    pass


                class ExperimentConfig:
                    def __init__(self, **fields):
                        self.__dict__.update(fields)


                class TransformSettings(dict):
                    pass
                """))
        sys.path.insert(0, self.dir)
        self.module = importlib.import_module(self.name)

    def remove(self):
        """Make the module unimportable again (and forget it), before a converter runs."""
        sys.modules.pop(self.name, None)
        if self.dir in sys.path:
            sys.path.remove(self.dir)
        importlib.invalidate_caches()


def make_finetuned(release, pkg, seed=1, model_name="dinov2_vitb14_reg", use_lora=True,
                   lora_rank=8, lora_alpha=16, tune_cls_token=False, tune_register_tokens=False,
                   pos_embed="pre-trained", lift="stack", resize_val=112, mean=0.05, std=0.2,
                   config_class=None, head_hidden=None, extra_state=None):
    """The dict save_checkpoint writes, with tensors drawn so that every tuned part matters."""
    n = _gen(seed)
    D = release["cls_token"].shape[-1]
    H = head_hidden or D
    depth = 1 + max(int(k.split(".")[1]) for k in release if k.startswith("blocks."))
    sd = collections.OrderedDict()
    sd["classifier.2.weight"] = n(H, D, std=1 / math.sqrt(D))
    sd["classifier.2.bias"] = n(H, std=0.1)
    sd["classifier.4.weight"] = n(1, H, std=3 / math.sqrt(H))
    sd["classifier.4.bias"] = n(1, std=0.1)
    if use_lora:
        # encoder.blocks.state_dict() of LoRA-wrapped blocks, filtered on "qkv.linear" and
        # prefixed with "feature_extractor.encoder.blocks" + key: no dot, as the reference does.
        bound = 1 / math.sqrt(D)
        for i in range(depth):
            for part in ("q", "v"):
                a = (torch.rand(lora_rank, D, generator=torch.Generator().manual_seed(
                    seed * 100 + i * 2 + (part == "v"))) * 2 - 1) * bound
                sd[f"feature_extractor.encoder.blocks{i}.attn.qkv.linear_a_{part}.weight"] = a
                sd[f"feature_extractor.encoder.blocks{i}.attn.qkv.linear_b_{part}.weight"] = \
                    n(D, lora_rank, std=0.5 / math.sqrt(lora_rank))
        # state_dict order: per block a_q, b_q, a_v, b_v
        sd = collections.OrderedDict(sorted(sd.items(), key=_reference_order))
    if tune_cls_token:
        sd["feature_extractor.encoder.cls_token"] = release["cls_token"] + n(1, 1, D, std=0.3)
    if tune_register_tokens:
        sd["feature_extractor.encoder.register_tokens"] = \
            release["register_tokens"] + n(*release["register_tokens"].shape, std=0.3)
    if "fine-tune" in pos_embed:
        base = release["pos_embed"].clone()
        if "zeros" in pos_embed:
            base[:, 1:] = 0
        sd["feature_extractor.encoder.pos_embed"] = base + n(*base.shape, std=0.1)
    if extra_state:
        sd.update(extra_state)

    model_kwargs = {"model_name": model_name, "dropout_p": 0.1, "lift": lift,
                    "use_lora": use_lora, "lora_rank": lora_rank, "lora_alpha": lora_alpha,
                    "tune_register_tokens": tune_register_tokens,
                    "tune_cls_token": tune_cls_token, "pos_embed": pos_embed,
                    "use_compile": False}
    data_transforms = {"resize_min": 224, "resize_max": 896, "resize_val": resize_val,
                       "transform_group": "O2", "normalize": True,
                       "mean": torch.asarray([mean]).to(torch.float32),
                       "std": torch.asarray([std]).to(torch.float32)}
    params = [torch.nn.Parameter(v.clone()) for v in list(sd.values())[:2]]
    opt = torch.optim.AdamW(params, lr=1e-4)
    sum(p.sum() for p in params).backward()
    opt.step()
    fields = dict(model=model_kwargs, training={"epochs": 60, "label_smoothing": 0.1},
                  dataloader={"batch_size": 32}, optimizer={"lr": 0.0001},
                  data_transforms=data_transforms,
                  logging={"log_dir": "runs", "wandb": {"mode": "offline"}},
                  reproducibility={"seed": 42})
    if config_class == "fake":
        fields["data_transforms"] = pkg.module.TransformSettings(data_transforms)
        config = pkg.module.ExperimentConfig(**fields)
    else:
        config = argparse.Namespace(**fields)
    return {"model": pkg.module.ImagenetTransferLearning,
            "model_state_dict": sd,
            "optimizer": type(opt),
            "optimizer_state_dict": opt.state_dict(),
            "step": 1234,
            "config": config}


def _reference_order(item):
    key = item[0]
    if key.startswith("classifier."):
        return (0, 0, key)
    block = int(key[len("feature_extractor.encoder.blocks"):].split(".")[0])
    leaf = key.split("qkv.")[1]
    return (1, block, ["linear_a_q.weight", "linear_b_q.weight", "linear_a_v.weight",
                       "linear_b_v.weight"].index(leaf))


def reference_logits(release_path, checkpoint_path, images, lora, round_bf16=False):
    """Logits of the reference model built from the two files' tensors (torch.load; the
    training package must be importable while this runs)."""
    torch.set_num_threads(1)
    release = torch.load(release_path)
    ck = torch.load(checkpoint_path)
    state = ck["model_state_dict"]
    if round_bf16:
        release = {k: v.to(torch.bfloat16).float() for k, v in release.items()}
        state = {k: v.to(torch.bfloat16).float() for k, v in state.items()}
    config = ck["config"]
    model_kwargs = config.model if hasattr(config, "model") else config["model"]
    model = torch_reference.build(release, state, model_kwargs, lora)
    batch = np.stack([np.ascontiguousarray(i) for i in images])
    return [float(v) for v in torch_reference.logits(model, batch)]
