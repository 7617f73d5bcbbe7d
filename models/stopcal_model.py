"""Read and write stopcal model files (models/FORMAT.md, format versions 1 to 3) with numpy only.

A model file is a safetensors container whose ``__metadata__["stopcal.config"]`` holds the JSON
configuration. This module is the Python half of the contract whose C half is models/model.c: the
generator of random test models, the checkpoint converter and the demo-model trainer all write
through it, and the test harness reads through it. It checks what the C reader checks, with the
same keywords in its messages ("truncated", "header length", "JSON", "offsets", "byte length",
"dtype", "missing tensor", "unexpected tensor", "shape", "stopcal.config", ...), and is at least
as strict: what it writes the C reader loads, and what the C reader refuses it refuses too.

Typical use::

    cfg = make_config(embed_dim=384, depth=12, num_heads=6, input_size=224, name="vits14")
    write_model("m.safetensors", cfg, tensors, dtype="bf16")   # tensors: name -> array or callable
    cfg, weights = read_model("m.safetensors")                  # weights: name -> fp32 ndarray
"""

import hashlib
import json
import math
import mmap
import os
import struct

import numpy as np

FORMAT_VERSION = 3  # what this module writes; it reads 1 to 3 (FORMAT.md)
FORMAT_VERSION_MIN = 1
MAX_ALIASES = 16
DIGEST_KEY = "tensor_data_sha256"  # format_version 2: SHA-256 of the data section, optional
_DIGEST_PLACEHOLDER = "?" * 64     # written first, replaced once the data has been hashed
HEAD_DIM = 64  # the attention head dimension of every DINOv2 and DINOv3 variant
MAX_HEADER_BYTES = 100 * 1024 * 1024

DTYPE_SIZES = {"F32": 4, "F16": 2, "BF16": 2}
# Accept the spellings people type on command lines as well as the safetensors names.
_DTYPE_ALIASES = {"f32": "F32", "fp32": "F32", "float32": "F32",
                  "f16": "F16", "fp16": "F16", "float16": "F16",
                  "bf16": "BF16", "bfloat16": "BF16"}

PROFILES = ("cortexchange-v2", "cortexchange-v3")
LORA_HANDLINGS = ("none", "merge", "drop")
PRECISIONS = ("fp32", "bf16", "auto")  # format_version 3: runtime.precision

# The architecture description (models/families.json): each family's architecture keys, tensors
# and forward steps. The C reader and engine compile the same bytes in; nothing here lists them
# again. STOPCAL_TEST_ONLY_FAMILIES points both sides at another description (tests only).
FAMILIES_PATH = os.environ.get("STOPCAL_TEST_ONLY_FAMILIES") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "families.json")
with open(FAMILIES_PATH, "rb") as _f:
    FAMILIES_BYTES = _f.read()
FAMILIES = json.loads(FAMILIES_BYTES)["families"]
SYMBOLS = json.loads(FAMILIES_BYTES)["symbols"]
FFN_KINDS = tuple(FAMILIES["dinov2"]["architecture"]["ffn"]["values"])
POS_INTERPOLATIONS = tuple(FAMILIES["dinov2"]["architecture"]["pos_embed_interpolation"]["values"])

# Keys of each config object. FORMAT.md makes unknown keys an error at the top level and inside
# "architecture" (whose keys the family's description names); we are equally strict in the other
# fixed-schema objects so that a writer never produces a file that a stricter reader might refuse.
# "provenance" is free-form.
_TOP_KEYS = ("format_version", "name", "version", "architecture", "input", "preprocessing",
             "output", "lora", "provenance", "aliases", DIGEST_KEY, "runtime")
_SUB_KEYS = {
    "input": ("size",),
    "preprocessing": ("profile", "mean", "std", "noise_sigma"),
    "output": ("logit", "threshold"),
    "lora": ("handling", "rank", "alpha"),
    "runtime": ("precision",),
}


# Limits of the C reader (models/model.c, model_config.c) outside the architecture (whose ranges
# are in the description), mirrored so that a file written here always loads there.
INT_RANGES = {"input.size": (1, 8192), "lora.rank": (0, 4096)}
MAX_NAME_BYTES = 127
MAX_VERSION_BYTES = 63
MAX_TENSOR_NAME_BYTES = 96
MAX_DIMS = 4
MAX_DIM = 1 << 40


class ModelFormatError(ValueError):
    """A model file or config that breaks models/FORMAT.md; the message names the problem."""


# --------------------------------------------------------------------------------------------
# dtypes


def canonical_dtype(dtype):
    """Return the safetensors dtype name ("F32", "F16", "BF16") for any accepted spelling."""
    if dtype in DTYPE_SIZES:
        return dtype
    try:
        return _DTYPE_ALIASES[str(dtype).lower()]
    except KeyError:
        raise ModelFormatError(f"dtype {dtype!r} is not one of F32, F16, BF16") from None


def f32_to_bf16_bits(x):
    """Round fp32 values to bfloat16, nearest-even, returning the uint16 bit patterns.

    NaN stays a (quiet) NaN instead of being rounded into an infinity."""
    bits = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1)))
               >> np.uint32(16)).astype(np.uint16)
    nan = np.isnan(np.asarray(x, dtype=np.float32))
    if nan.any():
        rounded[nan] = ((bits[nan] >> np.uint32(16)) | np.uint32(0x0040)).astype(np.uint16)
    return rounded


def bf16_bits_to_f32(bits):
    """Widen bfloat16 bit patterns (uint16) to fp32 exactly."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << np.uint32(16)).view(np.float32)


def encode_tensor(array, dtype):
    """Return the little-endian bytes of ``array`` stored as ``dtype`` (F32, F16 or BF16)."""
    dtype = canonical_dtype(dtype)
    a = np.asarray(array, dtype=np.float32)
    if dtype == "F32":
        out = a.astype("<f4", copy=False)
    elif dtype == "F16":
        out = a.astype("<f2")
    else:
        out = f32_to_bf16_bits(a).astype("<u2", copy=False)
    return np.ascontiguousarray(out).tobytes()


def decode_tensor(raw, dtype, shape):
    """Widen the bytes of one stored tensor to a fp32 ndarray of ``shape`` (a copy)."""
    dtype = canonical_dtype(dtype)
    if dtype == "F32":
        a = np.frombuffer(raw, dtype="<f4").astype(np.float32)
    elif dtype == "F16":
        a = np.frombuffer(raw, dtype="<f2").astype(np.float32)
    else:
        a = bf16_bits_to_f32(np.frombuffer(raw, dtype="<u2"))
    return a.reshape(shape)


# --------------------------------------------------------------------------------------------
# config


def default_ffn_hidden_dim(embed_dim, ffn):
    """DINOv2's hidden width: 4·D for the MLP; for SwiGLU the fused rule, 8/3·D rounded up to a
    multiple of 8 (4096 for ViT-g/14's D = 1536)."""
    if ffn == "mlp":
        return 4 * embed_dim
    return (int(4 * embed_dim * 2 / 3) + 7) // 8 * 8


def default_pos_interpolation(num_registers):
    """DINOv2's torch-hub rule: register models resize with antialias to an exact size, the
    others by scale factor (g + 0.1)/G without antialias."""
    return "bicubic_antialias" if num_registers > 0 else "bicubic_scale_factor"


def make_config(*, embed_dim, depth, num_heads, ffn="mlp", ffn_hidden_dim=None, num_registers=0,
                patch_size=None, pos_embed_grid=37, pos_embed_interpolation=None,
                layernorm_eps=None, head_hidden_dim=None, input_size=224,
                profile=None, mean=(0.0, 0.0, 0.0), std=(1.0, 1.0, 1.0),
                noise_sigma=0.0, threshold=0.5, lora_handling="none", lora_rank=0, lora_alpha=0,
                name=None, version="0.1.0", provenance=None, aliases=None, family="dinov2",
                rope_base=100.0, precision=None):
    """Build a complete, validated stopcal.config dict; omitted sizes follow the family's rules
    (DINOv2: patch 14, eps 1e-6, profile cortexchange-v2; DINOv3: patch 16, eps 1e-5, RoPE base
    100, profile cortexchange-v3). aliases: other names requests may use for the model, or None;
    precision: runtime.precision ("fp32", "bf16", "auto"), or None for no runtime object."""
    if family not in FAMILIES:
        raise ModelFormatError(f"stopcal.config: architecture.family {family!r} is not one of "
                               f"{', '.join(map(repr, FAMILIES))}")
    v3 = family == "dinov3"
    arch = {
        "family": family,
        "embed_dim": int(embed_dim),
        "depth": int(depth),
        "num_heads": int(num_heads),
        "ffn": ffn,
        "ffn_hidden_dim": int(ffn_hidden_dim if ffn_hidden_dim is not None
                              else default_ffn_hidden_dim(embed_dim, ffn)),
        "num_registers": int(num_registers),
        "patch_size": int(patch_size if patch_size is not None else (16 if v3 else 14)),
        "pos_embed_grid": int(pos_embed_grid),
        "pos_embed_interpolation": (pos_embed_interpolation if pos_embed_interpolation
                                    else default_pos_interpolation(num_registers)),
        "layernorm_eps": float(layernorm_eps if layernorm_eps is not None else (1e-5 if v3 else 1e-6)),
        "head_hidden_dim": int(head_hidden_dim if head_hidden_dim is not None else embed_dim),
        "rope_base": float(rope_base),
    }
    cfg = {
        "format_version": FORMAT_VERSION,
        "name": name or f"{family}-random",
        "version": version,
        # Only the keys the family's description names, in its order.
        "architecture": {"family": family,
                         **{k: arch[k] for k in FAMILIES[family]["architecture"]}},
        "input": {"size": int(input_size)},
        "preprocessing": {
            "profile": profile or ("cortexchange-v3" if v3 else "cortexchange-v2"),
            "mean": [float(v) for v in mean],
            "std": [float(v) for v in std],
            "noise_sigma": float(noise_sigma),
        },
        "output": {"logit": "continue", "threshold": float(threshold)},
        "lora": {"handling": lora_handling, "rank": int(lora_rank), "alpha": lora_alpha},
        "provenance": dict(provenance) if provenance else {"created_by": "stopcal_model.py",
                                                           "sources": []},
    }
    if aliases:
        cfg["aliases"] = list(aliases)
    if precision is not None:
        cfg["runtime"] = {"precision": precision}
    validate_config(cfg)
    return cfg


_RESERVED_NAME_PARTS = (".", "..", "versions", "ready", "infer")


def check_model_name(name):
    """The rule for model names and aliases (model_name_check in models/model_config.c): 1-127
    bytes of letters, digits, '-', '_', '.', and '/' between non-empty parts, none of them a word
    of the /v2 paths. Returns None, or what is wrong."""
    if not isinstance(name, str) or not 1 <= len(name.encode("utf-8")) <= 127:
        return f"{name!r}: a model name is 1 to 127 characters"
    if not all(c.isascii() and (c.isalnum() or c in "-_./") for c in name):
        return f"'{name}': a model name may hold letters, digits, '-', '_', '.' and '/' only"
    for part in name.split("/"):
        if not part:
            return f"'{name}': '/' must separate non-empty parts of a model name"
        if part in _RESERVED_NAME_PARTS:
            return f"'{name}': '{part}' cannot be part of a model name (it is a word of the /v2 paths)"
    return None


def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v):
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _short_string(v, limit):
    return isinstance(v, str) and len(v.encode("utf-8")) <= limit


def _in_range(key):
    lo, hi = INT_RANGES[key]
    return (lambda v: _is_int(v) and lo <= v <= hi), f"an integer in [{lo}, {hi}]"


def _need(obj, key, where, check, what):
    if key not in obj:
        raise ModelFormatError(f"stopcal.config: {where}{key} is missing")
    v = obj[key]
    if not check(v):
        raise ModelFormatError(f"stopcal.config: {where}{key} must be {what}, not {v!r}")
    return v


def _no_unknown_keys(obj, allowed, where):
    for key in obj:
        if key not in allowed:
            raise ModelFormatError(f"stopcal.config: unknown key {where}{key}")


def validate_config(cfg):
    """Check a stopcal.config dict against FORMAT.md; raise ModelFormatError naming the field.

    Field paths in messages are dotted (``architecture.embed_dim``, ``input.size``)."""
    if not isinstance(cfg, dict):
        raise ModelFormatError("stopcal.config: not a JSON object")
    if _has_nul(cfg):
        raise ModelFormatError("stopcal.config: a string holds a NUL character")
    _no_unknown_keys(cfg, _TOP_KEYS, "")
    fv = _need(cfg, "format_version", "", _is_int, "an integer")
    if not FORMAT_VERSION_MIN <= fv <= FORMAT_VERSION:
        raise ModelFormatError(f"stopcal.config: format_version {fv} is not supported "
                               f"(this reader knows {FORMAT_VERSION_MIN} to {FORMAT_VERSION})")
    if "aliases" in cfg:
        if fv < 2:
            raise ModelFormatError("stopcal.config: unknown key aliases (it needs format_version 2)")
        aliases = cfg["aliases"]
        if not isinstance(aliases, list) or len(aliases) > MAX_ALIASES:
            raise ModelFormatError(f"stopcal.config: aliases must be a list of at most {MAX_ALIASES} "
                                   f"names, not {aliases!r}")
        for i, a in enumerate(aliases):
            why = check_model_name(a)
            if why:
                raise ModelFormatError(f"stopcal.config: aliases[{i}] {why}")
        if len(set(aliases)) != len(aliases):
            raise ModelFormatError(f"stopcal.config: aliases lists a name twice: {aliases!r}")
    if DIGEST_KEY in cfg:
        if fv < 2:
            raise ModelFormatError(f"stopcal.config: {DIGEST_KEY} needs format_version 2 (the "
                                   f"file says {fv})")
        d = cfg[DIGEST_KEY]
        if not (isinstance(d, str) and len(d) == 64 and all(c in "0123456789abcdef" for c in d)):
            raise ModelFormatError(f"stopcal.config: {DIGEST_KEY} must be 64 lowercase hex digits")
    _need(cfg, "name", "", lambda v: _short_string(v, MAX_NAME_BYTES) and v != "",
          f"a non-empty string of at most {MAX_NAME_BYTES} bytes")
    _need(cfg, "version", "", lambda v: _short_string(v, MAX_VERSION_BYTES),
          f"a string of at most {MAX_VERSION_BYTES} bytes")

    if "runtime" in cfg:
        if fv < 3:
            raise ModelFormatError("stopcal.config: runtime needs format_version 3 (the file says "
                                   f"{fv})")
        rt = _need(cfg, "runtime", "", lambda v: isinstance(v, dict), "an object")
        _no_unknown_keys(rt, _SUB_KEYS["runtime"], "runtime.")
        _need(rt, "precision", "runtime.", lambda v: v in PRECISIONS,
              " or ".join(map(repr, PRECISIONS)))

    arch = _need(cfg, "architecture", "", lambda v: isinstance(v, dict), "an object")
    a = "architecture."
    family = _need(arch, "family", a, lambda v: v in FAMILIES,
                   " or ".join(map(repr, FAMILIES)))
    desc = FAMILIES[family]
    if fv < desc["min_format_version"]:
        raise ModelFormatError(f"stopcal.config: architecture.family {family!r} needs "
                               f"format_version {desc['min_format_version']} (the file says {fv})")
    _no_unknown_keys(arch, ("family", *desc["architecture"]), "architecture.")
    for key, spec in desc["architecture"].items():
        _need(arch, key, a, *_arch_check(spec))
    D, heads = arch["embed_dim"], arch["num_heads"]
    if D != heads * HEAD_DIM:
        raise ModelFormatError(f"stopcal.config: architecture.embed_dim {D} is not "
                               f"num_heads × {HEAD_DIM} = {heads * HEAD_DIM}")
    P = arch["patch_size"]

    inp = _need(cfg, "input", "", lambda v: isinstance(v, dict), "an object")
    _no_unknown_keys(inp, _SUB_KEYS["input"], "input.")
    S = _need(inp, "size", "input.", *_in_range("input.size"))
    if S % P:
        raise ModelFormatError(f"stopcal.config: input.size {S} is not a multiple of "
                               f"architecture.patch_size {P}")

    pre = _need(cfg, "preprocessing", "", lambda v: isinstance(v, dict), "an object")
    _no_unknown_keys(pre, _SUB_KEYS["preprocessing"], "preprocessing.")
    _need(pre, "profile", "preprocessing.", lambda v: v in PROFILES,
          " or ".join(map(repr, PROFILES)))
    three = lambda v: isinstance(v, list) and len(v) == 3 and all(map(_is_number, v))  # noqa: E731
    _need(pre, "mean", "preprocessing.", three, "3 numbers")
    _need(pre, "std", "preprocessing.", lambda v: three(v) and all(s > 0 for s in v),
          "3 positive numbers")
    _need(pre, "noise_sigma", "preprocessing.", lambda v: _is_number(v) and v >= 0,
          "a number >= 0")

    out = _need(cfg, "output", "", lambda v: isinstance(v, dict), "an object")
    _no_unknown_keys(out, _SUB_KEYS["output"], "output.")
    _need(out, "logit", "output.", lambda v: v == "continue", '"continue"')
    _need(out, "threshold", "output.", lambda v: _is_number(v) and 0 < v < 1,
          "a number in (0, 1)")

    lora = _need(cfg, "lora", "", lambda v: isinstance(v, dict), "an object")
    _no_unknown_keys(lora, _SUB_KEYS["lora"], "lora.")
    handling = _need(lora, "handling", "lora.", lambda v: v in LORA_HANDLINGS,
                     " or ".join(map(repr, LORA_HANDLINGS)))
    rank = _need(lora, "rank", "lora.", *_in_range("lora.rank"))
    alpha = _need(lora, "alpha", "lora.", lambda v: _is_number(v) and v >= 0, "a number >= 0")
    if handling == "none" and (rank != 0 or alpha != 0):
        raise ModelFormatError('stopcal.config: lora.rank and lora.alpha must be 0 when '
                               'lora.handling is "none"')

    _need(cfg, "provenance", "", lambda v: isinstance(v, dict), "an object")


def _arch_check(spec):
    """(check, what) for one architecture key as the description types it."""
    if spec["type"] == "int":
        lo, hi = spec["range"]
        return (lambda v: _is_int(v) and lo <= v <= hi), f"an integer in [{lo}, {hi}]"
    if spec["type"] == "number":
        lo, hi = spec["open_range"]
        return (lambda v: _is_number(v) and lo < v < hi), f"a number in ({lo}, {hi})"
    if spec["type"] == "choice":
        return (lambda v: v in spec["values"]), " or ".join(map(repr, spec["values"]))
    raise ModelFormatError(f"{FAMILIES_PATH}: unknown key type {spec['type']!r}")


def _symbols(arch):
    """The description's shape symbols for one architecture (those the family's keys define)."""
    out = {}
    for sym, key in SYMBOLS.items():
        if key == "embed_dim / num_heads":
            out[sym] = arch["embed_dim"] // arch["num_heads"]
        elif key in arch:
            out[sym] = arch[key]
    return out


def eval_shape_expr(text, symbols):
    """Value of one shape expression of the description: integers and symbols joined by + - * /
    (integer division) and parentheses, the usual precedence. models/family.c evaluates the same."""
    toks, i = [], 0
    while i < len(text):
        c = text[i]
        if c.isspace():
            i += 1
        elif c.isalnum() or c == "_":
            j = i
            while j < len(text) and (text[j].isalnum() or text[j] == "_"):
                j += 1
            toks.append(text[i:j])
            i = j
        elif c in "+-*/()":
            toks.append(c)
            i += 1
        else:
            raise ModelFormatError(f"{FAMILIES_PATH}: bad character {c!r} in shape {text!r}")
    pos = 0

    def atom():
        nonlocal pos
        if pos >= len(toks):
            raise ModelFormatError(f"{FAMILIES_PATH}: shape {text!r} ends early")
        t = toks[pos]
        pos += 1
        if t == "(":
            v = expr()
            if pos >= len(toks) or toks[pos] != ")":
                raise ModelFormatError(f"{FAMILIES_PATH}: shape {text!r} misses a ')'")
            pos += 1
            return v
        if t.isdigit():
            return int(t)
        if t in symbols:
            return symbols[t]
        raise ModelFormatError(f"{FAMILIES_PATH}: unknown symbol {t!r} in shape {text!r}")

    def term():
        nonlocal pos
        v = atom()
        while pos < len(toks) and toks[pos] in "*/":
            op = toks[pos]
            pos += 1
            r = atom()
            if op == "/" and r == 0:
                raise ModelFormatError(f"{FAMILIES_PATH}: shape {text!r} divides by zero")
            v = v * r if op == "*" else v // r
        return v

    def expr():
        nonlocal pos
        v = term()
        while pos < len(toks) and toks[pos] in "+-":
            op = toks[pos]
            pos += 1
            v = v + term() if op == "+" else v - term()
        return v

    v = expr()
    if pos != len(toks):
        raise ModelFormatError(f"{FAMILIES_PATH}: shape {text!r} has a stray {toks[pos]!r}")
    return v


def _when(cond, arch, symbols):
    """A tensor's condition: "SYMBOL>INT" or "KEY=VALUE"; None (always)."""
    if cond is None:
        return True
    if ">" in cond:
        sym, n = cond.split(">", 1)
        return eval_shape_expr(sym, symbols) > int(n)
    key, value = cond.split("=", 1)
    return arch.get(key) == value


def family_tensors(cfg):
    """The description's tensors for this config, expanded: a list of (name, shape, entry) in the
    description's order, blocks.{i} repeated for i in [0, depth)."""
    arch = cfg["architecture"]
    symbols = _symbols(arch)
    out = []
    for entry in FAMILIES[arch["family"]]["tensors"]:
        if not _when(entry.get("when"), arch, symbols):
            continue
        shape = tuple(eval_shape_expr(d, symbols) for d in entry["shape"])
        if "{i}" in entry["name"]:
            out += [(entry["name"].replace("{i}", str(i)), shape, entry)
                    for i in range(arch["depth"])]
        else:
            out.append((entry["name"], shape, entry))
    return out


def expected_tensor_shapes(cfg):
    """Map every tensor name the config implies to its shape (a tuple), in sorted name order.

    This is the family's table in the description (models/families.json, FORMAT.md); the C
    reader demands exactly this set with exactly these shapes."""
    return dict(sorted((name, shape) for name, shape, _ in family_tensors(cfg)))


def check_tensor_set(cfg, shapes):
    """Check a name → shape map against the config: raise ModelFormatError on a missing tensor,
    an unexpected tensor or a wrong shape, naming the tensor."""
    want = expected_tensor_shapes(cfg)
    for name in want:
        if name not in shapes:
            raise ModelFormatError(f"missing tensor {name}")
    for name in shapes:
        if name not in want:
            raise ModelFormatError(f"unexpected tensor {name}")
    for name, shape in want.items():
        if tuple(shapes[name]) != shape:
            raise ModelFormatError(f"tensor {name} has shape {list(shapes[name])}, "
                                   f"the config implies {list(shape)}")


# --------------------------------------------------------------------------------------------
# the safetensors container


def encode_header(entries, metadata=None):
    """Serialise a safetensors header, padded with spaces so that 8 + len is a multiple of 8.

    entries: name → {"dtype", "shape", "data_offsets"} in the order they are to appear;
    metadata: str → str for ``__metadata__`` (written first), or None for none.
    Returns the header bytes without the 8-byte length prefix."""
    header = {}
    if metadata is not None:
        header["__metadata__"] = metadata
    header.update(entries)
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    return raw + b" " * (-(8 + len(raw)) % 8)


def write_safetensors(path, tensors, metadata=None, digest_placeholder=None):
    """Write a safetensors file, tensors back to back in sorted name order.

    tensors: name → (dtype, shape, source), where source is an array (any float dtype, converted
    to ``dtype``), raw ``bytes`` already encoded, or a zero-argument callable returning either;
    callables are called one at a time so a multi-gigabyte model never sits in memory whole.
    digest_placeholder: a string that occurs exactly once in the header; it is overwritten, in
    place, with the SHA-256 hex digest of the data section once that has been written.
    No stopcal validation here: the tests use this to write deliberately bad files."""
    if os.path.exists(path) and not os.path.isfile(path):
        # The file is written beside the target and renamed onto it: onto /dev/null or a FIFO
        # that rename would replace the special file itself.
        raise ModelFormatError(f"{path} exists and is not a regular file; not replacing it")
    entries, offset = {}, 0
    order = sorted(tensors)
    for name in order:
        dtype, shape, _ = tensors[name]
        dtype = canonical_dtype(dtype)
        nbytes = math.prod(int(s) for s in shape) * DTYPE_SIZES[dtype]
        entries[name] = {"dtype": dtype, "shape": [int(s) for s in shape],
                         "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    header = encode_header(entries, metadata)
    digest_at = None
    if digest_placeholder is not None:
        mark = digest_placeholder.encode("ascii")
        if len(mark) != 64 or header.count(mark) != 1:
            raise ModelFormatError("digest placeholder must be 64 characters found once in the header")
        digest_at = 8 + header.index(mark)
    data_hash = hashlib.sha256()
    tmp = f"{path}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(header)))
            f.write(header)
            for name in order:
                dtype, shape, source = tensors[name]
                if callable(source):
                    source = source()
                if isinstance(source, (bytes, bytearray)):
                    raw = bytes(source)
                else:
                    arr = np.asarray(source)
                    if tuple(arr.shape) != tuple(shape):
                        raise ModelFormatError(f"tensor {name} has shape {list(arr.shape)}, "
                                               f"expected {list(shape)}")
                    raw = encode_tensor(arr, dtype)
                begin, end = entries[name]["data_offsets"]
                if len(raw) != end - begin:
                    raise ModelFormatError(f"tensor {name}: byte length {len(raw)} is not "
                                           f"{end - begin}")
                f.write(raw)
                data_hash.update(raw)
            if digest_at is not None:
                f.seek(digest_at)
                f.write(data_hash.hexdigest().encode("ascii"))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _reject_duplicates(pairs):
    seen = {}
    for k, v in pairs:
        if k in seen:
            raise ValueError(f"duplicate key {k!r}")
        seen[k] = v
    return seen


def _reject_constant(name):
    raise ValueError(f"{name} is not JSON")  # Python's json accepts NaN and Infinity


def _has_nul(obj):
    if isinstance(obj, str):
        return "\0" in obj
    if isinstance(obj, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in obj.items())
    if isinstance(obj, list):
        return any(map(_has_nul, obj))
    return False


def _loads(text):
    """json.loads as strict as jansson's defaults: no duplicate keys, no NaN/Infinity, no NUL."""
    obj = json.loads(text, object_pairs_hook=_reject_duplicates, parse_constant=_reject_constant)
    if _has_nul(obj):
        raise ValueError("a string holds a NUL character")
    return obj


def parse_safetensors(buf):
    """Parse and check a safetensors container held in ``buf`` (bytes, mmap or memoryview).

    Returns (entries, metadata, data_start): entries maps name → {"dtype", "shape",
    "data_offsets"}, metadata is the ``__metadata__`` value or None. Enforces FORMAT.md's container
    rules (size limits, JSON, dtypes, byte lengths, tiling) but nothing about stopcal.config."""
    size = len(buf)
    if size < 8:
        raise ModelFormatError(f"truncated: {size} bytes, too short for the header length")
    (n,) = struct.unpack_from("<Q", buf, 0)
    if n > MAX_HEADER_BYTES or 8 + n > size:
        raise ModelFormatError(f"header length {n} is past the end of the {size}-byte file "
                               f"or over {MAX_HEADER_BYTES} bytes")
    try:
        header = _loads(bytes(buf[8:8 + n]).decode("utf-8"))
    except ValueError as e:  # UnicodeDecodeError is one too
        raise ModelFormatError(f"header JSON is invalid: {e}") from None
    if not isinstance(header, dict):
        raise ModelFormatError("header JSON is not an object")
    metadata = header.pop("__metadata__", None)  # judged by config_from_metadata
    data_len = size - 8 - n
    spans = []
    for name, e in header.items():
        if len(name.encode("utf-8")) >= MAX_TENSOR_NAME_BYTES:
            raise ModelFormatError(f"tensor name {name[:40]!r}... is too long")
        if not (isinstance(e, dict) and {"dtype", "shape", "data_offsets"} <= set(e)):
            raise ModelFormatError(f"tensor {name}: header entry needs dtype, shape and "
                                   f"data_offsets")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in DTYPE_SIZES:
            raise ModelFormatError(f"tensor {name}: dtype {dtype!r} is not F32, F16 or BF16")
        if not isinstance(shape, list) or len(shape) > MAX_DIMS:
            raise ModelFormatError(f"tensor {name}: shape {shape!r} is not a list of at most "
                                   f"{MAX_DIMS} dimensions")
        for d in shape:
            if not (_is_int(d) and 0 <= d <= MAX_DIM):
                raise ModelFormatError(f"tensor {name}: shape {shape!r} has an invalid dimension")
        numel = math.prod(shape)
        if numel * 8 >= 1 << 64:  # where the C reader's size_t arithmetic would overflow
            raise ModelFormatError(f"tensor {name}: shape {shape!r} overflows")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_int(o) for o in offs)):
            raise ModelFormatError(f"tensor {name}: data_offsets {offs!r} are not two integers")
        begin, end = offs
        if begin < 0 or end < begin:
            raise ModelFormatError(f"tensor {name}: data_offsets [{begin}, {end}] are out of "
                                   f"order")
        want = numel * DTYPE_SIZES[dtype]
        if end - begin != want:
            raise ModelFormatError(f"tensor {name}: byte length {end - begin} is not "
                                   f"shape {shape} × {DTYPE_SIZES[dtype]} = {want}")
        spans.append((begin, end, name))
    # Tile check in the C reader's order, so both name the same first problem.
    spans.sort()
    at = 0
    for begin, end, name in spans:
        if end > data_len:
            raise ModelFormatError(f"truncated: tensor {name} ends at data offset {end}, the "
                                   f"file holds {data_len} data bytes")
        if begin != at:
            what = "overlap the tensor before" if begin < at else "leave a gap before"
            raise ModelFormatError(f"tensor {name}: data_offsets [{begin}, {end}] {what} it "
                                   f"(expected it to begin at {at})")
        at = end
    if at != data_len:
        raise ModelFormatError(f"data_offsets end at {at} but the data section has {data_len} "
                               f"bytes (trailing bytes)")
    return header, metadata, 8 + n


def read_safetensors(path, with_data_sha256=False):
    """Read a safetensors file: returns (metadata, {name: fp32 ndarray}, {name: stored dtype}),
    and with_data_sha256 the SHA-256 hex digest of the data section as a fourth item."""
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size else b""
        try:
            entries, metadata, start = parse_safetensors(buf)
            data_sha256 = hashlib.sha256(buf[start:]).hexdigest() if with_data_sha256 else None
            arrays, dtypes = {}, {}
            for name, e in entries.items():
                begin, end = e["data_offsets"]
                arrays[name] = decode_tensor(buf[start + begin:start + end], e["dtype"],
                                             e["shape"])
                dtypes[name] = e["dtype"]
        finally:
            if size:
                buf.close()
    if with_data_sha256:
        return metadata, arrays, dtypes, data_sha256
    return metadata, arrays, dtypes


def config_from_metadata(metadata):
    """Extract and validate the stopcal.config dict from a ``__metadata__`` dict (or None)."""
    if not (isinstance(metadata, dict) and isinstance(metadata.get("stopcal.config"), str)):
        raise ModelFormatError("no stopcal.config string in __metadata__: not a stopcal model "
                               "file")
    try:
        cfg = _loads(metadata["stopcal.config"])
    except ValueError as e:
        raise ModelFormatError(f"stopcal.config is not valid JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelFormatError("stopcal.config must be a JSON object")
    validate_config(cfg)
    return cfg


def read_model(path):
    """Read and fully validate a stopcal model file.

    Returns (config dict, {name: fp32 ndarray}); F16 and BF16 tensors are widened exactly.
    A recorded tensor_data_sha256 is checked against the data, as the C reader does.
    Raises ModelFormatError naming the problem."""
    metadata, arrays, dtypes, data_sha256 = read_safetensors(path, with_data_sha256=True)
    cfg = config_from_metadata(metadata)
    check_tensor_set(cfg, {k: v.shape for k, v in arrays.items()})
    for name, _, entry in family_tensors(cfg):
        if entry.get("dtype") == "F32" and dtypes[name] != "F32":
            raise ModelFormatError(f"tensor {name} must be stored as F32 (it holds the values of a "
                                   f"formula, which a narrower type would move); this file stores "
                                   f"it as {dtypes[name]}")
    want = cfg.get(DIGEST_KEY)
    if want is not None and want != data_sha256:
        raise ModelFormatError(f"corrupted: the tensor data hashes to SHA-256 {data_sha256[:16]}... "
                               f"but the file recorded {want[:16]}... when it was written")
    return cfg, arrays


def write_model(path, cfg, tensors, dtype="F32"):
    """Validate and write a stopcal model file.

    tensors: name → array, or a zero-argument callable returning one (generated lazily, one at a
    time); the set and shapes must be exactly ``expected_tensor_shapes(cfg)``. dtype: F32, F16 or
    BF16 for every tensor but those the description pins to F32 (BF16 rounds to nearest even). The file is written as format_version 3
    with the SHA-256 of its data section (tensor_data_sha256), so the readers refuse a copy in
    which any weight byte changed; a given digest is replaced by the one of the data written."""
    validate_config(cfg)
    dtype = canonical_dtype(dtype)
    shapes = expected_tensor_shapes(cfg)
    check_tensor_set(cfg, {k: shapes.get(k, ()) for k in tensors})
    cfg = {**cfg, "format_version": FORMAT_VERSION, DIGEST_KEY: _DIGEST_PLACEHOLDER}
    metadata = {"stopcal.config": json.dumps(cfg, ensure_ascii=False)}
    # Tensors the description pins to F32 (RoPE periods: a formula's values, not weights) stay F32.
    pinned = {name for name, _, entry in family_tensors(cfg) if entry.get("dtype") == "F32"}
    write_safetensors(path, {name: ("F32" if name in pinned else dtype, shapes[name], tensors[name])
                             for name in shapes},
                      metadata, digest_placeholder=_DIGEST_PLACEHOLDER)
