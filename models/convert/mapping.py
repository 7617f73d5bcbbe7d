"""From the reference pipeline's files to one stopcal model file (ARCHITECTURE.md §3, models/FORMAT.md).

Inputs: a DINOv2 backbone (the torch-hub release `.pth`, or a Hugging Face safetensors file)
and a fine-tuned checkpoint as astroNNomy's `save_checkpoint` writes it:

    torch.save({"model": ImagenetTransferLearning,            # the class, pickled by name
                "model_state_dict": model.finetuned_state_dict(),
                "optimizer": AdamW, "optimizer_state_dict": ..., "step": n,
                "config": Namespace(model={model_name, lift, use_lora, lora_rank, lora_alpha,
                                           tune_cls_token, tune_register_tokens, pos_embed, ...},
                                    data_transforms={resize_val, mean, std, ...}, ...)})

`finetuned_state_dict()` holds only the tuned tensors: `classifier.{2,4}.*` (the head),
`feature_extractor.encoder.{cls_token,register_tokens,pos_embed}` when tuned, and the LoRA
adapters of every block as `feature_extractor.encoder.blocks{i}.attn.qkv.linear_{a,b}_{q,v}.weight`
(no dot after "blocks": the reference's key bug, which makes the deployed strict=False loader
ignore them). Every name is mapped or refused: a key we cannot place stops the conversion.
"""

import hashlib
import math
import os
import re

import numpy as np

from . import st_reader, torchzip

import stopcal_model as sm  # models/ is on sys.path (the stopcal-convert script puts it there)

CONVERTER_VERSION = "1"


class ConversionError(ValueError):
    """A conversion this tool refuses; the message says why and what to do."""


class Lazy:
    """A tensor to be produced on demand: shape known now, values when written."""

    __slots__ = ("shape", "_f32", "_f64", "source")

    def __init__(self, shape, f32, f64=None, source=""):
        self.shape, self._f32, self._f64, self.source = tuple(shape), f32, f64, source

    @classmethod
    def of(cls, tensor, source):
        if tensor.dtype not in ("float32", "float16", "bfloat16", "float64"):
            raise ConversionError(f"{source}: dtype {tensor.dtype}, expected a floating tensor")
        return cls(tensor.shape, tensor.numpy, tensor.float64, source)

    def f32(self):
        a = np.asarray(self._f32(), dtype=np.float32)
        if a.shape != self.shape:
            raise AssertionError(f"{self.source}: produced {a.shape}, promised {self.shape}")
        return a

    def f64(self):
        return np.asarray(self._f64() if self._f64 else self._f32(), dtype=np.float64)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _shape(t):
    return "(" + ", ".join(map(str, t.shape)) + ")"


# --------------------------------------------------------------------------------------------
# backbones

_BLOCK_LEAVES = (
    "norm1.weight", "norm1.bias", "attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight",
    "attn.proj.bias", "ls1.gamma", "ls2.gamma", "norm2.weight", "norm2.bias",
    "mlp.fc1.weight", "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias",
    "mlp.w12.weight", "mlp.w12.bias", "mlp.w3.weight", "mlp.w3.bias")
_TOP_KEYS = ("cls_token", "pos_embed", "register_tokens", "patch_embed.proj.weight",
             "patch_embed.proj.bias", "norm.weight", "norm.bias")
_DROPPED = ("mask_token",)  # DINOv2's masked-token embedding: training only

_HF_TOP = {
    "embeddings.cls_token": "cls_token",
    "embeddings.position_embeddings": "pos_embed",
    "embeddings.register_tokens": "register_tokens",
    "embeddings.patch_embeddings.projection.weight": "patch_embed.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "patch_embed.proj.bias",
    "layernorm.weight": "norm.weight",
    "layernorm.bias": "norm.bias",
}
_HF_BLOCK = {
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attention.output.dense.weight": "attn.proj.weight",
    "attention.output.dense.bias": "attn.proj.bias",
    "layer_scale1.lambda1": "ls1.gamma", "layer_scale2.lambda1": "ls2.gamma",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
    "mlp.weights_in.weight": "mlp.w12.weight", "mlp.weights_in.bias": "mlp.w12.bias",
    "mlp.weights_out.weight": "mlp.w3.weight", "mlp.weights_out.bias": "mlp.w3.bias",
}
_HF_QKV = ("attention.attention.query", "attention.attention.key", "attention.attention.value")


class Backbone:
    """A DINOv2 backbone under torch-hub names (FORMAT.md's), with its inferred architecture."""

    family = "dinov2"

    def __init__(self, path, fmt, tensors, dropped):
        self.path, self.format, self.tensors, self.dropped = path, fmt, tensors, dropped
        self.arch = infer_architecture(tensors, path)

    def describe(self):
        a = self.arch
        return (f"DINOv2 D={a['embed_dim']} depth={a['depth']} heads={a['num_heads']} "
                f"ffn={a['ffn']}({a['ffn_hidden_dim']}) registers={a['num_registers']} "
                f"patch={a['patch_size']} pos-grid={a['pos_embed_grid']}")


def _unknown(names, path, what):
    names = sorted(names)
    more = f" and {len(names) - 5} more" if len(names) > 5 else ""
    return ConversionError(f"{path}: {what} cannot be mapped: {', '.join(names[:5])}{more}")


def _hub_tensors(sd, path):
    """torch-hub state-dict names → canonical names; chunked blocks (blocks.c.i.*) flattened."""
    out, dropped, unknown = {}, [], []
    for key, t in sd.items():
        if not isinstance(key, str):
            raise ConversionError(f"{path}: state-dict key {key!r} is not a string")
        if not isinstance(t, torchzip.Tensor):
            raise ConversionError(f"{path}: {key} is a {type(t).__name__}, not a tensor")
        name = key
        m = re.fullmatch(r"blocks\.(\d+)\.(\d+)\.(.+)", key)  # BlockChunk: global index inside
        if m:
            name = f"blocks.{m.group(2)}.{m.group(3)}"
        if name in _DROPPED:
            dropped.append(name)
            continue
        m = re.fullmatch(r"blocks\.(\d+)\.(.+)", name)
        if name in _TOP_KEYS or (m and m.group(2) in _BLOCK_LEAVES):
            if name in out:
                raise ConversionError(f"{path}: {name} appears twice")
            out[name] = Lazy.of(t, f"{path}:{key}")
        else:
            unknown.append(key)
    if unknown:
        raise _unknown(unknown, path, "these tensors are not part of a DINOv2 torch-hub backbone "
                                      "and")
    return out, dropped


def _hf_tensors(sd, path):
    """Hugging Face Dinov2Model names → canonical names; q, k, v concatenated into qkv."""
    out, dropped, unknown, qkv = {}, [], [], {}
    for key, t in sd.items():
        name = key[len("dinov2."):] if key.startswith("dinov2.") else key
        if name == "embeddings.mask_token":
            dropped.append("mask_token")
            continue
        if name in _HF_TOP:
            out[_HF_TOP[name]] = Lazy.of(t, f"{path}:{key}")
            continue
        m = re.fullmatch(r"encoder\.layer\.(\d+)\.(.+)", name)
        if m and m.group(2) in _HF_BLOCK:
            out[f"blocks.{m.group(1)}.{_HF_BLOCK[m.group(2)]}"] = Lazy.of(t, f"{path}:{key}")
            continue
        if m:
            part, _, leaf = m.group(2).rpartition(".")
            if part in _HF_QKV and leaf in ("weight", "bias"):
                Lazy.of(t, f"{path}:{key}")  # dtype check
                qkv.setdefault((int(m.group(1)), leaf), {})[_HF_QKV.index(part)] = t
                continue
        unknown.append(key)
    if unknown:
        raise _unknown(unknown, path, "these tensors are not part of a Hugging Face DINOv2 "
                                      "backbone and")
    for (i, leaf), parts in sorted(qkv.items()):
        if len(parts) != 3:
            missing = [("query", "key", "value")[j] for j in range(3) if j not in parts]
            raise ConversionError(f"{path}: layer {i} lacks attention {'/'.join(missing)}.{leaf}")
        q, k, v = parts[0], parts[1], parts[2]
        if not (q.shape == k.shape == v.shape):
            raise ConversionError(f"{path}: layer {i} query/key/value {leaf} shapes differ: "
                                  f"{q.shape}, {k.shape}, {v.shape}")
        shape = (3 * q.shape[0],) + tuple(q.shape[1:])
        out[f"blocks.{i}.attn.qkv.{leaf}"] = Lazy(
            shape, lambda q=q, k=k, v=v: np.concatenate([q.numpy(), k.numpy(), v.numpy()]),
            lambda q=q, k=k, v=v: np.concatenate([q.float64(), k.float64(), v.float64()]),
            f"{path}:encoder.layer.{i}.attention.attention.{{query,key,value}}.{leaf}")
    return out, dropped


def load_backbone(path):
    """Open a backbone file (torch-hub .pth or Hugging Face safetensors) → Backbone."""
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    kind = torchzip.sniff(path)
    if kind == "safetensors":
        try:
            metadata, sd = st_reader.read(path)
        except st_reader.SafetensorsError as e:
            raise ConversionError(str(e)) from None
        if isinstance(metadata, dict) and "stopcal.config" in metadata:
            raise ConversionError(f"{path}: already a stopcal model file, not a backbone")
        from . import dinov3
        if dinov3.looks_like_hf(sd):
            return dinov3.load_backbone(path, st=sd)
        tensors, dropped = _hf_tensors(sd, path)
        return Backbone(path, "hugging-face-safetensors", tensors, dropped)
    obj, _ = _load_torch(path)
    if isinstance(obj, dict) and "model_state_dict" in obj:
        raise ConversionError(f"{path}: a fine-tuned checkpoint (it has model_state_dict); pass "
                              f"it with --checkpoint and the DINOv2 release file with --backbone")
    if not (isinstance(obj, dict) and obj and all(isinstance(v, torchzip.Tensor)
                                                  for v in obj.values())):
        keys = list(obj)[:6] if isinstance(obj, dict) else type(obj).__name__
        raise ConversionError(f"{path}: not a DINOv2 release state dict (a flat dict of tensors "
                              f"such as dinov2_vitb14_reg4_pretrain.pth); found {keys}")
    from . import dinov3
    if dinov3.looks_like_release(obj):
        if "pos_embed" in obj:
            raise ConversionError(f"{path}: has both a positional table (pos_embed, DINOv2) and "
                                  f"DINOv3's RoPE periods or storage tokens: not a release file")
        return dinov3.load_backbone(path, obj=obj)
    tensors, dropped = _hub_tensors(obj, path)
    return Backbone(path, "torch-hub-release", tensors, dropped)


def convert_any(backbone, ck, lora=None, profile=None, **kw):
    """convert() for the backbone's family (DINOv2 here, DINOv3 in convert/dinov3.py); profile
    None is the family's default (cortexchange-v2 for DINOv2, cortexchange-v3 for DINOv3)."""
    if getattr(backbone, "family", "dinov2") == "dinov3":
        from . import dinov3
        return dinov3.convert(backbone, ck, lora=lora, profile=profile, **kw)
    return convert(backbone, ck, lora=lora, profile=profile or "cortexchange-v2", **kw)


def _load_torch(path):
    try:
        return torchzip.load(path)
    except torchzip.CheckpointError as e:
        raise ConversionError(str(e)) from None


def block_layout(t, path, D, ffn_names="mlp.fc1 nor mlp.w12", tokens_label="register_tokens has"):
    """(depth, ffn, ffn_hidden_dim, registers) read off a backbone in stopcal's tensor names (t),
    shared by the DINOv2 and DINOv3 mappings; the labels name the tensors as the message's reader
    knows them."""
    blocks = {int(m.group(1)) for k in t for m in [re.match(r"blocks\.(\d+)\.", k)] if m}
    depth = max(blocks) + 1
    if blocks != set(range(depth)):
        raise ConversionError(f"{path}: blocks {sorted(set(range(depth)) - blocks)} are missing")
    if "blocks.0.mlp.fc1.weight" in t:
        ffn, F = "mlp", t["blocks.0.mlp.fc1.weight"].shape[0]
    elif "blocks.0.mlp.w12.weight" in t:
        ffn, F = "swiglu", t["blocks.0.mlp.w12.weight"].shape[0] // 2
    else:
        raise ConversionError(f"{path}: block 0 has neither {ffn_names}")
    R = 0
    if "register_tokens" in t:
        rt = t["register_tokens"].shape
        if len(rt) != 3 or rt[0] != 1 or rt[2] != D:
            raise ConversionError(f"{path}: {tokens_label} shape {rt}, expected (1, R, {D})")
        R = rt[1]
    return depth, ffn, F, R

def infer_architecture(t, path):
    """The FORMAT.md architecture fields implied by a canonical backbone's shapes."""
    for need in ("cls_token", "pos_embed", "patch_embed.proj.weight", "norm.weight",
                 "blocks.0.attn.qkv.weight"):
        if need not in t:
            raise ConversionError(f"{path}: no {need}: not a DINOv2 backbone")
    cls = t["cls_token"].shape
    if len(cls) != 3 or cls[:2] != (1, 1):
        raise ConversionError(f"{path}: cls_token has shape {cls}, expected (1, 1, D)")
    D = cls[2]
    if D % sm.HEAD_DIM:
        raise ConversionError(f"{path}: embed dim {D} is not a multiple of {sm.HEAD_DIM}, "
                              f"DINOv2's head dimension")
    pw = t["patch_embed.proj.weight"].shape
    if len(pw) != 4 or pw[0] != D or pw[1] != 3 or pw[2] != pw[3]:
        raise ConversionError(f"{path}: patch_embed.proj.weight has shape {pw}, expected "
                              f"({D}, 3, P, P)")
    pe = t["pos_embed"].shape
    G = math.isqrt(max(pe[1] - 1, 0)) if len(pe) == 3 else 0
    if len(pe) != 3 or pe[0] != 1 or pe[2] != D or G * G != pe[1] - 1 or G == 0:
        raise ConversionError(f"{path}: pos_embed has shape {pe}, expected (1, 1 + G², {D})")
    depth, ffn, F, R = block_layout(t, path, D)
    return {"family": "dinov2", "embed_dim": D, "depth": depth, "num_heads": D // sm.HEAD_DIM,
            "ffn": ffn, "ffn_hidden_dim": F, "num_registers": R, "patch_size": pw[2],
            "pos_embed_grid": G, "pos_embed_interpolation": sm.default_pos_interpolation(R),
            "layernorm_eps": 1e-6}


# --------------------------------------------------------------------------------------------
# fine-tuned checkpoints

HEAD_KEYS = {"classifier.2.weight": "head.fc1.weight", "classifier.2.bias": "head.fc1.bias",
             "classifier.4.weight": "head.fc2.weight", "classifier.4.bias": "head.fc2.bias"}
TOKEN_KEYS = {"feature_extractor.encoder.cls_token": "cls_token",
              "feature_extractor.encoder.register_tokens": "register_tokens",
              "feature_extractor.encoder.pos_embed": "pos_embed"}
# The reference saves f"feature_extractor.encoder.blocks{key}" with key = "0.attn.qkv...";
# the dotted spelling (a fixed trainer) is accepted too.
LORA_KEY = re.compile(r"feature_extractor\.encoder\.blocks(\.?)(\d+)\.attn\.qkv\."
                      r"linear_([ab])_([qv])\.weight")
# ImagenetTransferLearning's constructor defaults, which apply to keys config.model lacks.
MODEL_DEFAULTS = {"model_name": "resnet50", "lift": "stack", "use_lora": False,
                  "lora_alpha": 16.0, "lora_rank": 16, "tune_register_tokens": False,
                  "tune_cls_token": False, "pos_embed": "pre-trained"}


def field(obj, name, default=None):
    """obj[name] for a dict, obj.name for a stand-in (argparse.Namespace...), else default."""
    if isinstance(obj, dict):
        return obj.get(name, default)
    if torchzip.is_standin(obj):
        return obj.fields().get(name, default)
    return default


def plain(v, depth=0):
    """A JSON-friendly copy of an unpickled value (stand-ins as dicts, small tensors as lists)."""
    if depth > 20:
        return "..."
    if isinstance(v, (str, int, float, bool)) or v is None:
        return v
    if isinstance(v, dict):
        return {str(k): plain(x, depth + 1) for k, x in v.items()}
    if isinstance(v, (list, tuple, set, frozenset)):
        return [plain(x, depth + 1) for x in v]
    if torchzip.is_standin(v):
        f = v.fields()
        return plain(f, depth + 1) if f else repr(v)
    if isinstance(v, (torchzip.Tensor, st_reader.STTensor)):
        if math.prod(v.shape) <= 64:
            vals = v.float64().ravel().tolist() if v.dtype in (
                "float32", "float16", "bfloat16", "float64") else v.numpy().ravel().tolist()
            return vals[0] if len(v.shape) == 0 else vals
        return repr(v)
    if isinstance(v, np.ndarray):
        return v.tolist() if v.size <= 64 else repr(v)
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, type) and issubclass(v, torchzip.StandIn):
        return torchzip.standin_name(v)
    return repr(v)


class Finetuned:
    """A reference checkpoint: its tuned tensors, model kwargs and data transforms."""

    def __init__(self, path, obj):
        self.path = path
        if not isinstance(obj, dict):
            raise ConversionError(f"{path}: holds a {type(obj).__name__}, not a checkpoint dict")
        if "model_state_dict" not in obj:
            if "cls_token" in obj or "blocks.0.attn.qkv.weight" in obj:
                raise ConversionError(f"{path}: a DINOv2 backbone state dict, not a fine-tuned "
                                      f"checkpoint; pass it with --backbone")
            raise ConversionError(f"{path}: no model_state_dict: not a checkpoint written by the "
                                  f"reference's save_checkpoint (keys: {list(obj)[:8]})")
        sd = obj["model_state_dict"]
        if not isinstance(sd, dict) or not all(isinstance(k, str) and isinstance(
                v, torchzip.Tensor) for k, v in sd.items()):
            raise ConversionError(f"{path}: model_state_dict is not a dict of tensors")
        self.state = sd
        config = obj.get("config")
        if config is None:
            legacy = " (an older TransferLearning-era checkpoint?)" if "model_args" in obj else ""
            raise ConversionError(f"{path}: no config{legacy}: the input size, LoRA alpha and "
                                  f"mean/std come from it, so this checkpoint cannot be converted")
        model_kw = field(config, "model")
        if torchzip.is_standin(model_kw):  # e.g. an OmegaConf node instead of a dict
            model_kw = plain(model_kw)
        if not isinstance(model_kw, dict):
            raise ConversionError(f"{path}: config.model is missing or not a dict of model "
                                  f"arguments")
        self.model_kwargs = {k: plain(v) for k, v in model_kw.items()}
        dt = plain(field(config, "data_transforms", {}) or {})
        if not isinstance(dt, dict):
            raise ConversionError(f"{path}: config.data_transforms is not a dict")
        self.data_transforms = dt
        cls = obj.get("model")
        self.model_class = (torchzip.standin_name(cls) if isinstance(cls, type) and issubclass(
            cls, torchzip.StandIn) else (None if cls is None else repr(cls)))
        step = obj.get("step")
        self.step = step if isinstance(step, int) and not isinstance(step, bool) else None

    def kw(self, name):
        return self.model_kwargs.get(name, MODEL_DEFAULTS.get(name))


def load_checkpoint(path):
    """Open a fine-tuned checkpoint (.pth, or a directory holding exactly one) → Finetuned."""
    if os.path.isdir(path):
        found = sorted(f for f in os.listdir(path) if f.endswith(".pth"))
        if len(found) != 1:
            raise ConversionError(f"{path}: a directory with {len(found)} .pth files; name the "
                                  f"checkpoint file itself")
        path = os.path.join(path, found[0])
    if not os.path.isfile(path):
        raise ConversionError(f"{path}: no such file")
    if torchzip.sniff(path) == "safetensors":
        raise ConversionError(f"{path}: a safetensors file; --checkpoint takes the reference's "
                              f"torch.save checkpoint (.pth)")
    obj, _ = _load_torch(path)
    return Finetuned(path, obj)


def _per_channel(value, what, path):
    """mean/std as saved (a 1-element tensor, a number, or 3 numbers) → 3 floats."""
    v = plain(value)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        v = [v]
    if not (isinstance(v, list) and len(v) in (1, 3) and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)
            for x in v)):
        raise ConversionError(f"{path}: config.data_transforms {what} is {v!r:.80}; expected one "
                              f"number or three")
    return [float(x) for x in (v * 3 if len(v) == 1 else v)]


# --------------------------------------------------------------------------------------------
# the conversion


def _json_safe(v):
    """Strict JSON (the C reader's jansson refuses NaN and Infinity): non-finite floats as text."""
    if isinstance(v, float) and not math.isfinite(v):
        return repr(v)
    if isinstance(v, dict):
        return {k: _json_safe(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_json_safe(x) for x in v]
    return v


class Result:
    def __init__(self, config, tensors, notes):
        self.config, self.tensors, self.notes = config, tensors, notes


def _check_shape(t, want, what, path):
    if tuple(t.shape) != tuple(want):
        raise ConversionError(f"{path}: {what} has shape {tuple(t.shape)}, the backbone implies "
                              f"{tuple(want)}")


def take_head(state, D, path, model_name, backbone_path):
    """Pop the classifier head (classifier.2/.4) from a checkpoint state → (tensors, H)."""
    head = {}
    for key, dst in HEAD_KEYS.items():
        if key not in state:
            raise ConversionError(f"{path}: model_state_dict has no {key} (the classifier head)")
        head[dst] = Lazy.of(state.pop(key), f"{path}:{key}")
    H = head["head.fc1.weight"].shape[0] if len(head["head.fc1.weight"].shape) == 2 else -1
    if head["head.fc1.weight"].shape != (H, D):
        raise ConversionError(f"{path}: classifier.2.weight has shape "
                              f"{head['head.fc1.weight'].shape}, but the backbone's embed dim is "
                              f"{D} ({model_name} with {backbone_path}: wrong backbone file?)")
    if head["head.fc2.weight"].shape[0:1] != (1,):
        raise ConversionError(f"{path}: classifier.4.weight has shape "
                              f"{head['head.fc2.weight'].shape}: the head must emit one logit")
    for dst, want in (("head.fc1.bias", (H,)), ("head.fc2.weight", (1, H)),
                      ("head.fc2.bias", (1,))):
        _check_shape(head[dst], want, dst.replace("head.fc1", "classifier.2").replace(
            "head.fc2", "classifier.4"), path)
    return head, H


def take_lora(state, out, ck, lora, L, D, notes):
    """Pop the LoRA adapters from a checkpoint state and merge them into out's qkv weights (or
    drop them) → (lora config, lora provenance, whether there were adapters). Any key left in
    state afterwards is refused."""
    path = ck.path
    adapters, spellings = {}, set()
    for key in [k for k in state if LORA_KEY.fullmatch(k)]:
        dot, i, ab, qv = LORA_KEY.fullmatch(key).groups()
        spellings.add(dot)
        if int(i) >= L:
            raise ConversionError(f"{path}: {key} is for block {i}, the backbone has {L}")
        adapters.setdefault(int(i), {})[ab + qv] = Lazy.of(state.pop(key), f"{path}:{key}")
    if state:
        raise _unknown(state, path, "these model_state_dict keys")

    lora_cfg = {"handling": "none", "rank": 0, "alpha": 0}
    lora_prov = {"adapters": 0}
    if adapters:
        incomplete = [i for i in range(L) if len(adapters.get(i, {})) != 4]
        if incomplete:
            raise ConversionError(f"{path}: LoRA adapters of blocks {incomplete[:8]} are missing "
                                  f"or incomplete (each block needs linear_a_q, linear_b_q, "
                                  f"linear_a_v, linear_b_v)")
        r = adapters[0]["aq"].shape[0]
        for i, ad in adapters.items():
            for part in ("q", "v"):
                _check_shape(ad["a" + part], (r, D), f"block {i} linear_a_{part}.weight", path)
                _check_shape(ad["b" + part], (D, r), f"block {i} linear_b_{part}.weight", path)
        cfg_rank = ck.model_kwargs.get("lora_rank")
        if cfg_rank is not None and cfg_rank != r:
            raise ConversionError(f"{path}: config.model lora_rank is {cfg_rank} but the adapters "
                                  f"have rank {r}")
        alpha = ck.kw("lora_alpha")
        if not isinstance(alpha, (int, float)) or isinstance(alpha, bool) or alpha < 0:
            raise ConversionError(f"{path}: config.model lora_alpha is {alpha!r}")
        if "lora_alpha" not in ck.model_kwargs:
            notes.append(f"config.model has no lora_alpha: using the reference's default "
                         f"{alpha}")
        spelled = "blocks{i} (no dot: the deployed strict=False loader ignores them)" \
            if "" in spellings else "blocks.{i}"
        if lora is None:
            raise ConversionError(
                f"{path}: the checkpoint holds LoRA adapters (rank {r}, alpha {alpha}, keys "
                f"{spelled}); choose --lora merge (the fine-tuned model training meant: "
                f"W_q, W_v += (alpha/r)·B·A) or --lora drop (the backbone's own q and v, what a "
                f"loader that ignores the adapters computes)")
        lora_cfg = {"handling": lora, "rank": int(r), "alpha": alpha}
        lora_prov = {"adapters": len(adapters), "key_spelling": spelled,
                     "use_lora": ck.kw("use_lora")}
        if lora == "merge":
            scale = float(alpha) / r
            for i, ad in adapters.items():
                key = f"blocks.{i}.attn.qkv.weight"
                w = out[key]

                def merged(w=w, ad=ad):
                    a = w.f64().copy()
                    a[:D] += scale * (ad["bq"].f64() @ ad["aq"].f64())
                    a[2 * D:] += scale * (ad["bv"].f64() @ ad["av"].f64())
                    return a.astype(np.float32)
                out[key] = Lazy(w.shape, merged, None, w.source + " + LoRA")
            notes.append(f"LoRA merged into q and v of {L} blocks: rank {r}, alpha {alpha}, "
                         f"scale {scale:g}")
        else:
            notes.append(f"LoRA adapters of {L} blocks dropped (rank {r}, alpha {alpha}): the "
                         f"backbone's q and v are kept")
    elif lora is not None:
        notes.append(f"the checkpoint has no LoRA adapters: --lora {lora} has nothing to do")
    return lora_cfg, lora_prov, bool(adapters)


def input_params(ck, patch, notes):
    """Input size and mean/std from the checkpoint's config.data_transforms → (size, mean, std,
    data_transforms)."""
    path = ck.path
    dt = ck.data_transforms
    size = dt.get("resize_val", 560)
    if not size:
        size = dt.get("resize_max")
    if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
        raise ConversionError(f"{path}: config.data_transforms gives no usable input size "
                              f"(resize_val {dt.get('resize_val')!r}, resize_max "
                              f"{dt.get('resize_max')!r})")
    if size % patch:
        raise ConversionError(f"{path}: input size {size} (config.data_transforms resize_val) is "
                              f"not a multiple of the patch size {patch}")
    if "resize_val" not in dt:
        notes.append("config.data_transforms has no resize_val: using the reference's default 560")
    mean = _per_channel(dt.get("mean", 0.0), "mean", path)
    std = _per_channel(dt.get("std", 1.0), "std", path)
    if not all(s > 0 for s in std):
        raise ConversionError(f"{path}: config.data_transforms std {std} is not positive")
    return size, mean, std, dt


def name_version_sources(ck, backbone, name, version, lora, adapters, hash_inputs):
    """The model's name and version (defaults from the checkpoint) and the sources record."""
    path = ck.path
    stem = os.path.splitext(os.path.basename(path))[0]
    if not name:
        parent = os.path.basename(os.path.dirname(os.path.abspath(path)))
        base = f"{parent}-{stem}" if stem.startswith(("ckpt", "checkpoint", "model")) else stem
        name = base + (f"-lora-{lora}" if adapters else "")
    name = name.encode("utf-8")[:sm.MAX_NAME_BYTES].decode("utf-8", "ignore") or "converted"
    version = version or (f"step-{ck.step}" if ck.step is not None else "1")
    sources = []
    for role, p, fmt in (("backbone", backbone.path, backbone.format),
                         ("checkpoint", path, "astronnomy-torch-save")):
        sources.append({"role": role, "file": os.path.basename(p), "format": fmt,
                        "sha256": sha256_file(p) if hash_inputs else None})
    return name, version, sources


def convert(backbone, ck, lora=None, profile="cortexchange-v2", name=None, version=None,
            hash_inputs=True):
    """Build the stopcal config and tensors (name → callable) for backbone + checkpoint.

    lora: "merge", "drop", or None (allowed only when the checkpoint has no adapters).
    Raises ConversionError for anything the reference would not run as a DINOv2 classifier
    with a stacked grey-scale input, or anything that does not fit together."""
    notes = []
    path = ck.path
    arch = dict(backbone.arch)
    D, L, R, G = arch["embed_dim"], arch["depth"], arch["num_registers"], arch["pos_embed_grid"]

    model_name = ck.kw("model_name")
    if isinstance(model_name, str) and "dinov3" in model_name:
        raise ConversionError(f"{path}: config.model model_name is {model_name!r}, a DINOv3 "
                              f"checkpoint, but {backbone.path} is a DINOv2 backbone; pass the "
                              f"DINOv3 backbone it was trained on")
    if not isinstance(model_name, str) or "dinov2" not in model_name:
        origin = "" if "model_name" in ck.model_kwargs else " (absent: the reference's default)"
        raise ConversionError(f"{path}: config.model model_name is {model_name!r}{origin}; "
                              f"stopcal serves DINOv2 and DINOv3 backbones only "
                              f"(ARCHITECTURE.md §3)")
    lift = ck.kw("lift")
    if lift != "stack":
        raise ConversionError(f"{path}: config.model lift is {lift!r}; only 'stack' (the grey "
                              f"image repeated to 3 channels) is supported (ARCHITECTURE.md §3)")
    wants_reg = "_reg" in model_name
    if wants_reg != (R > 0):
        raise ConversionError(
            f"{path}: model_name {model_name!r} is a DINOv2 {'with' if wants_reg else 'without'} "
            f"registers, but {backbone.path} has {R} register tokens: wrong backbone file")
    m = re.search(r"vit[a-z](\d+)", model_name)
    if m and int(m.group(1)) != arch["patch_size"]:
        raise ConversionError(f"{path}: model_name {model_name!r} has patch size {m.group(1)}, "
                              f"the backbone {arch['patch_size']}: wrong backbone file")

    state = dict(ck.state)
    out = dict(backbone.tensors)

    # head
    head, H = take_head(state, D, path, model_name, backbone.path)
    out.update(head)

    # positional embedding: zeroed at build time, then overridden by a tuned one
    pos_mode = str(ck.kw("pos_embed"))
    overrides = []
    if "zeros" in pos_mode:
        base = out["pos_embed"]

        def zeroed(base=base):
            a = base.f32().copy()
            a[:, 1:, :] = 0.0
            return a
        out["pos_embed"] = Lazy(base.shape, zeroed, None, base.source + " (patch part zeroed)")
        notes.append('pos_embed: "zeros" in config: patch positions zeroed, as the reference '
                     'builds the model')
    flags = {"feature_extractor.encoder.cls_token": ("tune_cls_token", ck.kw("tune_cls_token")),
             "feature_extractor.encoder.register_tokens": ("tune_register_tokens",
                                                           ck.kw("tune_register_tokens")),
             "feature_extractor.encoder.pos_embed": ("pos_embed fine-tune",
                                                     "fine-tune" in pos_mode)}
    for key, dst in TOKEN_KEYS.items():
        flag, on = flags[key]
        if key in state:
            t = Lazy.of(state.pop(key), f"{path}:{key}")
            if dst not in out:
                raise ConversionError(f"{path}: has {key} but the backbone has no {dst}")
            _check_shape(t, out[dst].shape, key, path)
            out[dst] = t
            overrides.append(dst)
        elif on is True:
            raise ConversionError(f"{path}: config.model says {flag} but model_state_dict has no "
                                  f"{key}")
    if overrides:
        notes.append(f"from the checkpoint: {', '.join(overrides)}")

    # LoRA adapters
    lora_cfg, lora_prov, adapters = take_lora(state, out, ck, lora, L, D, notes)

    # input and preprocessing parameters
    size, mean, std, dt = input_params(ck, arch["patch_size"], notes)

    # metadata
    name, version, sources = name_version_sources(ck, backbone, name, version, lora, adapters,
                                                  hash_inputs)
    provenance = {
        "created_by": "stopcal-convert",
        "converter_version": CONVERTER_VERSION,
        "sources": sources,
        "checkpoint": {
            "model_class": ck.model_class, "step": ck.step,
            "model": {k: ck.model_kwargs.get(k) for k in (
                "model_name", "lift", "use_lora", "lora_rank", "lora_alpha", "pos_embed",
                "tune_cls_token", "tune_register_tokens", "dropout_p") if k in ck.model_kwargs},
            "data_transforms": {k: dt.get(k) for k in ("resize_val", "resize_min", "resize_max",
                                                       "normalize", "transform_group")
                                if k in dt},
        },
        "overrides": overrides,
        "pos_embed_zeroed": "zeros" in pos_mode,
        "lora": lora_prov,
        "dropped": sorted(set(backbone.dropped)),
        "notes": notes,
    }
    provenance = _json_safe(provenance)
    cfg = sm.make_config(
        embed_dim=D, depth=L, num_heads=arch["num_heads"], ffn=arch["ffn"],
        ffn_hidden_dim=arch["ffn_hidden_dim"], num_registers=R, patch_size=arch["patch_size"],
        pos_embed_grid=G, pos_embed_interpolation=arch["pos_embed_interpolation"],
        layernorm_eps=arch["layernorm_eps"], head_hidden_dim=H, input_size=size,
        profile=profile, mean=mean, std=std, noise_sigma=0.0, threshold=0.5,
        lora_handling=lora_cfg["handling"], lora_rank=lora_cfg["rank"],
        lora_alpha=lora_cfg["alpha"], name=name, version=version, provenance=provenance)

    return finish(cfg, out, backbone.path, f"a {arch['ffn']} DINOv2", notes)


def finish(cfg, out, backbone_path, what, notes):
    """Check the mapped tensors against the set and shapes the config implies → Result."""
    want = sm.expected_tensor_shapes(cfg)
    missing = [k for k in want if k not in out]
    if missing:
        raise ConversionError(f"{backbone_path}: the backbone lacks {', '.join(missing[:5])}")
    extra = [k for k in out if k not in want]
    if extra:
        raise ConversionError(f"{backbone_path}: tensors {', '.join(sorted(extra)[:5])} do not "
                              f"fit {what}")
    for k, shape in want.items():
        if out[k].shape != shape:
            raise ConversionError(f"{out[k].source}: shape {out[k].shape}, the model needs "
                                  f"{shape}")
    return Result(cfg, {k: out[k].f32 for k in want}, notes)
