#!/usr/bin/env python3
"""Train stopcal's demo model: simulate self-calibration cycles, preprocess, train, evaluate on
held-out fields, export to the stopcal format, write the example FITS files and the model card.

    /usr/bin/python3 models/demo/train.py --seed 0

One command, fixed seed, CPU only (torch.set_num_threads(--threads), 1 by default: the machine
is shared); about 11 minutes here (2.5 simulating 2,400 images, 8 training). Outputs, next to this
file unless --out says otherwise:
    stopcal-demo.safetensors   the model (stopcal format v3, F32)
    MODEL_CARD.md              data, split, metrics, sha256 (--card-only rewrites it from the log)
    training_log.json          everything the card says, plus the per-epoch history
    examples/*.fits            small simulated images with their expected decisions
    examples/expected.json     name → expected decision, label metadata and the model's scores

The architecture is DINOv2 with registers (ViT, pre-LN blocks with LayerScale, exact-erf GELU MLP,
[CLS, 4 registers, patches]) at embed 192, depth 4, 3 heads, patch 14, input 112, so its positional
table is stored for the 8×8 grid of a 112² input and never resized; the head is the reference's
Linear(D, D) → ReLU → Linear(D, 1), its logit the "continue" logit.
"""

import argparse
import hashlib
import json
import math
import os
import platform
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))

import preprocess as pp  # noqa: E402
import simulate as sim  # noqa: E402
import stopcal_model as sm  # noqa: E402

NAME = "stopcal-demo-vits-reg"
VERSION = "1.0.0"
EMBED, DEPTH, HEADS, REGISTERS, PATCH, INPUT = 192, 4, 3, 4, 14, 112
GRID = INPUT // PATCH
EXAMPLE_SEED_BASE = 900_000_000   # example fields: a seed range the data set never uses


# --------------------------------------------------------------------------------------------
# the network (DINOv2 names, so the state dict is the model file)


class LayerScale(nn.Module):
    def __init__(self, dim, init):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init)))

    def forward(self, x):
        return x * self.gamma


class Attention(nn.Module):
    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        B, N, D = x.shape
        hd = D // self.heads
        q, k, v = self.qkv(x).reshape(B, N, 3, self.heads, hd).permute(2, 0, 3, 1, 4)
        a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(hd), dim=-1)
        return self.proj((a @ v).transpose(1, 2).reshape(B, N, D))


class Mlp(nn.Module):
    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    def __init__(self, dim, heads, ls_init):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads)
        self.ls1 = LayerScale(dim, ls_init)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = Mlp(dim, 4 * dim)
        self.ls2 = LayerScale(dim, ls_init)

    def forward(self, x):
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class Head(nn.Module):
    """The reference head Sequential(Flatten, Dropout1d, Linear(D, D), ReLU, Linear(D, 1))."""

    def __init__(self, dim, dropout):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.fc1 = nn.Linear(dim, dim)
        self.fc2 = nn.Linear(dim, 1)

    def forward(self, x):
        return self.fc2(F.relu(self.fc1(self.drop(x))))


class DemoViT(nn.Module):
    def __init__(self, ls_init=0.1, dropout=0.1):
        super().__init__()
        D = EMBED
        self.patch_embed = nn.Module()
        self.patch_embed.proj = nn.Conv2d(3, D, PATCH, PATCH)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, D))
        self.register_tokens = nn.Parameter(torch.zeros(1, REGISTERS, D))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + GRID * GRID, D))
        self.blocks = nn.ModuleList([Block(D, HEADS, ls_init) for _ in range(DEPTH)])
        self.norm = nn.LayerNorm(D, eps=1e-6)
        self.head = Head(D, dropout)
        # DINOv2's initialisation: truncated normal(0.02) for weights and positions, zero biases.
        for p in (self.pos_embed, self.register_tokens):
            nn.init.trunc_normal_(p, std=0.02)
        nn.init.normal_(self.cls_token, std=1e-6)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def features(self, x):
        """The final-norm CLS token (B, D) for inputs (B, 1 or 3, S, S)."""
        B = x.shape[0]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        t = self.patch_embed.proj(x).flatten(2).transpose(1, 2)
        t = torch.cat([self.cls_token.expand(B, -1, -1), t], dim=1) + self.pos_embed
        t = torch.cat([t[:, :1], self.register_tokens.expand(B, -1, -1), t[:, 1:]], dim=1)
        for blk in self.blocks:
            t = blk(t)
        return self.norm(t)[:, 0]

    def forward(self, x):
        return self.head(self.features(x))[:, 0]


# --------------------------------------------------------------------------------------------
# data


def field_seed(seed, index):
    return int(np.random.SeedSequence([seed, index]).generate_state(1)[0])


def make_dataset(seed, n_fields, log):
    """Simulate n_fields sequences; returns inputs (N, 1, S, S) float32, labels, metadata."""
    xs, ys, meta = [], [], []
    t0 = time.monotonic()
    for f in range(n_fields):
        for m in sim.simulate_field(field_seed(seed, f)):
            x, _, _ = pp.preprocess_image(m["image"], INPUT)
            xs.append(x[:1])
            ys.append(m["label"])
            meta.append(dict(field=f, cycle=m["cycle"], phase_rms_deg=m["phase_rms_deg"],
                             artefact_peak_sigma=m["artefact_peak_sigma"],
                             artefact_peak_all_sigma=m["artefact_peak_all_sigma"],
                             artefact_rms_sigma=m["artefact_rms_sigma"]))
        if (f + 1) % 50 == 0:
            log(f"  simulated {f + 1}/{n_fields} fields ({time.monotonic() - t0:.0f} s)")
    return np.stack(xs), np.array(ys, dtype=np.int64), meta


def dihedral(x, rng):
    """A random one of the 8 rotations/reflections per image (labels do not depend on them)."""
    out = x.clone()
    for i in range(x.shape[0]):
        k = int(rng.integers(0, 4))
        im = torch.rot90(x[i], k, dims=(-2, -1))
        if rng.random() < 0.5:
            im = im.flip(-1)
        out[i] = im
    return out


# --------------------------------------------------------------------------------------------
# metrics


def roc_auc(scores, labels):
    """Area under the ROC curve (Mann–Whitney U, ties counted half)."""
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    pos, neg = scores[labels == 1], scores[labels == 0]
    if len(pos) == 0 or len(neg) == 0:
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    allv = np.concatenate([pos, neg])[order]
    ranks = np.empty(len(allv))
    i = 0
    while i < len(allv):  # average ranks over ties
        j = i
        while j + 1 < len(allv) and allv[j + 1] == allv[i]:
            j += 1
        ranks[i:j + 1] = 0.5 * (i + j) + 1
        i = j + 1
    r = np.empty(len(allv))
    r[order] = ranks
    u = np.sum(r[:len(pos)]) - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def metrics(scores, labels, threshold=0.5):
    pred = (np.asarray(scores) >= threshold).astype(int)
    labels = np.asarray(labels)
    tp = int(np.sum((pred == 1) & (labels == 1)))
    tn = int(np.sum((pred == 0) & (labels == 0)))
    fp = int(np.sum((pred == 1) & (labels == 0)))
    fn = int(np.sum((pred == 0) & (labels == 1)))
    return dict(n=len(labels), accuracy=(tp + tn) / max(1, len(labels)),
                roc_auc=roc_auc(scores, labels), tp=tp, tn=tn, fp=fp, fn=fn,
                stop_recall=tn / max(1, tn + fp), continue_recall=tp / max(1, tp + fn))


@torch.no_grad()
def predict(model, x, batch=128):
    model.eval()
    out = [torch.sigmoid(model(torch.from_numpy(x[i:i + batch]))).numpy()
           for i in range(0, len(x), batch)]
    return np.concatenate(out).astype(np.float64)


# --------------------------------------------------------------------------------------------
# export


def sha256_of(path):
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def export(model, path, provenance):
    cfg = sm.make_config(embed_dim=EMBED, depth=DEPTH, num_heads=HEADS, num_registers=REGISTERS,
                         patch_size=PATCH, pos_embed_grid=GRID,
                         pos_embed_interpolation="bicubic_antialias", input_size=INPUT,
                         profile="cortexchange-v2", name=NAME, version=VERSION,
                         provenance=provenance)
    sd = {k: v.detach().cpu().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    write = {k: sd[k] for k in sm.expected_tensor_shapes(cfg)}
    extra = set(sd) - set(write)
    if extra:
        raise RuntimeError(f"state dict has tensors the format does not: {sorted(extra)}")
    sm.write_model(path, cfg, write, dtype="F32")
    return cfg


def load_exported(path):
    """The exported file back into a DemoViT (for checking the export is exact)."""
    _, weights = sm.read_model(path)
    model = DemoViT()
    model.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    return model.eval()


# --------------------------------------------------------------------------------------------
# examples


def make_examples(outdir, seed, n_try=40):
    """A clean image (the last cycle of a converged sequence, label stop), a corrupted one (first
    cycle, label continue) and one midway (a later cycle still labelled continue), from fields
    outside the data set's seed range. The first example fields that have such cycles are taken,
    without looking at the model."""
    os.makedirs(outdir, exist_ok=True)
    chosen = {}
    for k in range(n_try):
        s = EXAMPLE_SEED_BASE + 1000 * seed + k
        seq = sim.simulate_field(s)
        if "clean" not in chosen and seq[-1]["label"] == 0 and seq[-1]["artefact_peak_sigma"] < 2:
            chosen["clean"] = seq[-1]
        if "corrupted" not in chosen and seq[0]["label"] == 1 and seq[0]["phase_rms_deg"] > 20:
            chosen["corrupted"] = seq[0]
        if "midway" not in chosen:
            mids = [m for m in seq[1:] if m["label"] == 1 and 10 < m["artefact_peak_sigma"] < 40]
            if mids:
                chosen["midway"] = mids[0]
        if len(chosen) == 3:
            break
    names = {"clean": "clean_stop", "corrupted": "corrupted_continue",
             "midway": "midway_continue"}
    out = {}
    for key in ("clean", "corrupted", "midway"):
        m = chosen[key]
        name = names[key]
        path = os.path.join(outdir, name + ".fits")
        sim.write_fits(path, m, name)
        out[name + ".fits"] = dict(expected="continue" if m["label"] else "stop",
                                   cycle=m["cycle"], field_seed=m["seed"],
                                   phase_rms_deg=round(m["phase_rms_deg"], 4),
                                   artefact_peak_sigma=round(m["artefact_peak_sigma"], 3),
                                   sha256=sha256_of(path))
    return out


# --------------------------------------------------------------------------------------------
# the card


def write_card(path, info):
    torch_version = info.get("torch", torch.__version__)
    m_test, m_val = info["test"], info["val"]
    ds = info["dataset"]
    ex_rows = "\n".join(
        f"| `examples/{n}` | {e['cycle']} | {e['phase_rms_deg']:.2f}° | "
        f"{e['artefact_peak_sigma']:.1f} σ | {e['expected']} | {e['continue_score']:.4f} |"
        for n, e in info["examples"].items())
    band_rows = "\n".join(f"| {b['band']} | {b['n']} | {b['accuracy']:.3f} |"
                          for b in info["test_bands"])
    cyc_rows = "\n".join(f"| {c['cycle']} | {c['n']} | {c['continue_fraction']:.2f} | "
                         f"{c['accuracy']:.3f} |" for c in info["test_cycles"])
    text = f"""# Model card: {NAME} {VERSION}

**A demonstration, not for science.** This model was trained only on simulated images. It shows
that stopcal starts and answers sensibly without downloading anything; its answers on real LOFAR
images mean nothing. For science use the published Leiden/SURF model, converted with
`stopcal-convert`.

## File

- `models/demo/stopcal-demo.safetensors` — stopcal model format v3 (its tensor data SHA-256
  recorded, so a corrupted copy is refused), all tensors F32, {info['file_bytes']:,} bytes
- sha256 `{info['sha256']}`{(chr(10) + "- " + info['rewritten']) if info.get('rewritten') else ""}
- the service's default model; `tests/demo` checks this sha256, the engine's parity with PyTorch on
  the example images and the expected decisions.

## Architecture

DINOv2 with registers, the reference pipeline's architecture at a small size: embed 192, depth 4,
3 heads (head dim 64), MLP 768 (exact-erf GELU), LayerScale, LayerNorm eps 1e-6, 4 register
tokens, patch 14, input 112×112 (grid 8×8: the positional table is stored for the 8×8 grid, so it is
used as stored and never resized; `pos_embed_interpolation` is `bicubic_antialias` as for every
register model). Head: the reference's `Linear(192, 192) → ReLU → Linear(192, 1)` on the final-norm
CLS token (its dropout at {info['hparams']['dropout']:g} in training). The logit is the **continue** logit:
`continue_score = sigmoid(logit)`, decision stop when `continue_score < 0.5`.
{info['n_params']:,} parameters, trained from scratch (no pretrained backbone).

## Input

Preprocessing profile `cortexchange-v2` (ARCHITECTURE.md §4): rms by iterative 3σ clipping, SymLogNorm stretch,
min-shift, clip to [0, 1], transpose, bilinear resize (no antialias) to 112², three identical
channels, mean 0 / std 1. The training inputs were computed with `models/demo/preprocess.py` from the
same float32 pixels the FITS files hold, so the service sees from a FITS file exactly what the model
was trained on.

## Data (simulated)

`models/demo/simulate.py`: a LOFAR-like array (6 superterp, 18 core and 14 remote stations out to
~45 km; 703 baselines), a 4–8 h track at declination 30°–70°, 48 time steps, 3 channels at
126/144/162 MHz, baselines to 40 kλ; a sky of a bright calibrator (flux 500–8000 × noise; point,
resolved or double), faint power-law point sources and extended Gaussian emission; antenna-based,
time-correlated phase errors (larger on remote stations) with amplitude errors 0.25 × the phase
rms in radians; Briggs −0.5 imaging on a 512² grid, 256² pixels of 2″ kept, the restoring beam
fitted to the PSF, an idealised CLEAN (components > 5σ, scaled by the gains' coherence) restored
plus the residual, which holds the thermal noise, faint sources and the calibration artefacts.
Noise 50–300 µJy/beam. Each field is a sequence of {sim.N_CYCLES} self-calibration cycles with the
phase rms shrinking geometrically (factor 0.15–0.45 per cycle) from a first-cycle artefact level of
20–1000 σ (phase rms ≤ 70°) to a floor of 0.3–3 σ; the data (sky, thermal noise) are the same in
every cycle of a field, only the calibration solutions change.

**Label:** the artefact image E is the noiseless dirty image of what the gain errors add
(g_i conj(g_j)·V − c·V for the CLEANed components). **stop** (0) when |E| < {sim.LABEL_PEAK_SIGMA:g} σ
everywhere outside real emission (where the restored model is below {sim.LABEL_PEAK_SIGMA:g} σ): no
artefact a source finder would pick up at {sim.LABEL_PEAK_SIGMA:g} σ, so further cycles cannot improve
what can be seen; **continue** (1) otherwise.

| | fields | images | continue fraction |
|---|---|---|---|
| train | {ds['train']['fields']} | {ds['train']['images']} | {ds['train']['continue_fraction']:.2f} |
| validation | {ds['val']['fields']} | {ds['val']['images']} | {ds['val']['continue_fraction']:.2f} |
| test (held out) | {ds['test']['fields']} | {ds['test']['images']} | {ds['test']['continue_fraction']:.2f} |

The split is by field (a whole sequence goes to one split), drawn with the seed; the test fields
were used for nothing but these figures. Validation chose the epoch.

## Training

`{info['command']}` ({info['total_seconds'] / 60:.1f} minutes in all on this shared 2-core machine,
{info['train_seconds'] / 60:.1f} of them training; torch {torch_version} on the CPU,
{info['threads']} thread{'s' if info['threads'] != 1 else ''}). From scratch, in two stages
(LP-FT): the head alone is first fitted by L-BFGS to the CLS features of the randomly initialised
backbone (linear probing; validation accuracy {info['probe_val_accuracy']:.3f}), then the whole
network is fine-tuned with AdamW (lr {info['hparams']['lr']:g}, weight decay
{info['hparams']['wd']:g}, batch {info['hparams']['batch']}, {info['hparams']['epochs']} epochs,
one epoch of warm-up then cosine decay), binary cross-entropy on the continue logit, random
rotations and reflections of the input. The epoch with the best validation accuracy is kept
(epoch {info['best_epoch']}). Two runs on this machine gave bit-identical weights.

## Results (held-out test fields, threshold 0.5, scores of the exported file)

| split | images | accuracy | ROC-AUC | stop recall | continue recall |
|---|---|---|---|---|---|
| validation | {m_val['n']} | {m_val['accuracy']:.3f} | {m_val['roc_auc']:.3f} | {m_val['stop_recall']:.3f} | {m_val['continue_recall']:.3f} |
| **test** | {m_test['n']} | **{m_test['accuracy']:.3f}** | **{m_test['roc_auc']:.3f}** | {m_test['stop_recall']:.3f} | {m_test['continue_recall']:.3f} |

Test confusion: {m_test['tn']} stop and {m_test['tp']} continue correct; {m_test['fp']} stop images
called continue, {m_test['fn']} continue images called stop.

Test accuracy by artefact peak outside real emission (the errors sit near the 5σ boundary):

| artefact peak | images | accuracy |
|---|---|---|
{band_rows}

By self-calibration cycle:

| cycle | images | continue fraction | accuracy |
|---|---|---|---|
{cyc_rows}

## Examples

`models/demo/examples/` (float32 FITS, 256², 4-D LOFAR-style header; from fields outside the data
set; expected decisions in `examples/expected.json`):

| file | cycle | phase rms | artefact peak | expected | continue_score |
|---|---|---|---|---|---|
{ex_rows}

## Limits

Simulated data only: one array, one frequency band, direction-independent errors, an idealised CLEAN,
no primary beam, ionospheric structure as a smooth per-station random process. The label is a
property of the simulation (artefacts above 5σ), not the human judgement the published model
learnt. Near the boundary the model leans to "stop": artefacts of 5–10σ are called stop about half
the time. Reproducing the exact bytes needs the same torch/numpy build and thread count; the same
command on another build gives an equivalent model, not the same sha256.
"""
    with open(path, "w") as f:
        f.write(text)


# --------------------------------------------------------------------------------------------


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--fields", type=int, default=400, help="simulated fields (6 images each)")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--wd", type=float, default=0.05)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--probe-l2", type=float, default=1e-3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=HERE, help="output directory (default: models/demo)")
    p.add_argument("--cache", help="keep the simulated data set in this .npz (for experiments; "
                   "it must have been made with the same --seed and --fields)")
    p.add_argument("--card-only", action="store_true",
                   help="only rewrite MODEL_CARD.md from the training_log.json of a finished run")
    args = p.parse_args(argv)
    if args.card_only:
        with open(os.path.join(args.out, "training_log.json")) as f:
            write_card(os.path.join(args.out, "MODEL_CARD.md"), json.load(f))
        return 0

    t_start = time.monotonic()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    log = lambda s: print(s, flush=True)  # noqa: E731
    command = "/usr/bin/python3 models/demo/train.py --seed %d" % args.seed
    defaults = p.parse_args([])
    for k in ("fields", "epochs", "batch", "lr", "wd", "dropout", "probe_l2", "threads"):
        if getattr(args, k) != getattr(defaults, k):
            command += f" --{k.replace('_', '-')} {getattr(args, k)}"

    log(f"simulating {args.fields} fields × {sim.N_CYCLES} cycles")
    cache = args.cache and os.path.exists(args.cache)
    if cache:
        with np.load(args.cache, allow_pickle=False) as z:
            X, Y, meta = z["X"], z["Y"], json.loads(str(z["meta"]))
        log(f"data from {args.cache}")
    else:
        X, Y, meta = make_dataset(args.seed, args.fields, log)
        if args.cache:
            np.savez(args.cache, X=X, Y=Y, meta=json.dumps(meta))
    fields = rng.permutation(args.fields)
    n_test = n_val = int(round(0.15 * args.fields))
    split = {"test": set(fields[:n_test].tolist()),
             "val": set(fields[n_test:n_test + n_val].tolist()),
             "train": set(fields[n_test + n_val:].tolist())}
    idx = {k: np.array([i for i, m in enumerate(meta) if m["field"] in v])
           for k, v in split.items()}
    dataset = {k: dict(fields=len(split[k]), images=len(idx[k]),
                       continue_fraction=float(Y[idx[k]].mean())) for k in split}
    log(f"data: {json.dumps(dataset)} ({time.monotonic() - t_start:.0f} s)")

    Xtr, Ytr = torch.from_numpy(X[idx["train"]]), torch.from_numpy(Y[idx["train"]]).float()
    model = DemoViT(dropout=args.dropout)
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "token" not in n
             and "pos_embed" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "token" not in n
                                                              and "pos_embed" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": args.wd},
                             {"params": no_decay, "weight_decay": 0.0}], lr=args.lr)
    steps_per_epoch = math.ceil(len(Xtr) / args.batch)
    total, warm = args.epochs * steps_per_epoch, steps_per_epoch
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm
        else 0.5 * (1 + math.cos(math.pi * (s - warm) / max(1, total - warm))))
    # Stage 1, linear probing: fit the head alone (L-BFGS, full batch) on the CLS features of the
    # randomly initialised backbone. Those features already separate the classes, but along
    # directions of small variance that Adam would take thousands of steps to scale up; from a
    # fitted head the whole network trains at once (LP-FT, Kumar et al. 2022).
    t_train = time.monotonic()
    model.eval()
    with torch.no_grad():
        feats = torch.cat([model.features(Xtr[i:i + 128]) for i in range(0, len(Xtr), 128)])
    lbfgs = torch.optim.LBFGS(list(model.head.parameters()), max_iter=500, history_size=50,
                              line_search_fn="strong_wolfe")

    def probe_loss():
        lbfgs.zero_grad()
        loss = F.binary_cross_entropy_with_logits(model.head(feats)[:, 0], Ytr) + args.probe_l2 * (
            model.head.fc1.weight.pow(2).sum() + model.head.fc2.weight.pow(2).sum())
        loss.backward()
        return loss

    lbfgs.step(probe_loss)
    mv = metrics(predict(model, X[idx["val"]]), Y[idx["val"]])
    probe_val_accuracy = mv["accuracy"]
    log(f"linear probe: val acc {mv['accuracy']:.3f}  val auc {mv['roc_auc']:.3f}  "
        f"({time.monotonic() - t_train:.0f} s)")
    # Stage 2: fine-tune everything.
    aug_rng = np.random.default_rng(args.seed + 1)
    best = (-1.0, float("inf"))
    best_state, best_epoch, history = None, -1, []
    for epoch in range(args.epochs):
        model.train()
        perm = torch.from_numpy(aug_rng.permutation(len(Xtr)))
        loss_sum = 0.0
        for b in range(steps_per_epoch):
            sel = perm[b * args.batch:(b + 1) * args.batch]
            xb = dihedral(Xtr[sel], aug_rng)
            loss = F.binary_cross_entropy_with_logits(model(xb), Ytr[sel])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            loss_sum += float(loss) * len(sel)
        sv = predict(model, X[idx["val"]])
        mv = metrics(sv, Y[idx["val"]])
        vloss = float(np.mean(-(Y[idx["val"]] * np.log(np.clip(sv, 1e-7, 1))
                                + (1 - Y[idx["val"]]) * np.log(np.clip(1 - sv, 1e-7, 1)))))
        history.append(dict(epoch=epoch + 1, train_loss=loss_sum / len(Xtr), val_loss=vloss,
                            val_accuracy=mv["accuracy"], val_roc_auc=mv["roc_auc"]))
        log(f"epoch {epoch + 1:3d}  train loss {loss_sum / len(Xtr):.4f}  val loss {vloss:.4f}  "
            f"val acc {mv['accuracy']:.3f}  val auc {mv['roc_auc']:.3f}  "
            f"({time.monotonic() - t_train:.0f} s)")
        if (mv["accuracy"], -vloss) > (best[0], -best[1]):
            best, best_epoch = (mv["accuracy"], vloss), epoch + 1
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    train_seconds = time.monotonic() - t_train
    model.load_state_dict(best_state)
    model.eval()

    out_model = os.path.join(args.out, "stopcal-demo.safetensors")
    provenance = {
        "created_by": "models/demo/train.py",
        "command": command,
        "seed": args.seed,
        "simulator": "models/demo/simulate.py",
        "simulator_field_seeds": f"numpy SeedSequence([{args.seed}, i]) for i < {args.fields}",
        "data": f"{args.fields} simulated fields x {sim.N_CYCLES} cycles; split by field "
                f"{dataset['train']['fields']}/{dataset['val']['fields']}/"
                f"{dataset['test']['fields']} train/val/test",
        "label": (f"continue when calibration artefacts reach {sim.LABEL_PEAK_SIGMA:g} "
                  "sigma outside real emission, else stop"),
        "training": "linear probe of the head on the random backbone (L-BFGS), then full "
                    "fine-tuning (AdamW); epoch chosen on validation",
        "pos_embed": f"stored for the {GRID}x{GRID} grid of a {INPUT}-pixel input: used as stored",
        "note": "a demonstration trained on simulated images, not for science",
        "sources": [],
    }
    export(model, out_model, provenance)
    exported = load_exported(out_model)
    # The file must compute what the trained model computes.
    s_mem = predict(model, X[idx["test"]][:64])
    s_file = predict(exported, X[idx["test"]][:64])
    if np.max(np.abs(s_mem - s_file)) > 0:
        raise RuntimeError("the exported file does not reproduce the trained model")
    st, sv = predict(exported, X[idx["test"]]), predict(exported, X[idx["val"]])
    m_test, m_val = metrics(st, Y[idx["test"]]), metrics(sv, Y[idx["val"]])
    log(f"test: {json.dumps(m_test)}")
    peaks = np.array([meta[i]["artefact_peak_sigma"] for i in idx["test"]])
    cycles = np.array([meta[i]["cycle"] for i in idx["test"]])
    correct = (st >= 0.5).astype(int) == Y[idx["test"]]
    bands = []
    for lo, hi in ((0, 2.5), (2.5, 5), (5, 10), (10, 30), (30, float("inf"))):
        sel = (peaks >= lo) & (peaks < hi)
        bands.append(dict(band=f"{lo:g}–{hi:g} σ" if math.isfinite(hi) else f"≥ {lo:g} σ",
                          n=int(sel.sum()), accuracy=float(correct[sel].mean()) if sel.any()
                          else float("nan")))
    cyc = [dict(cycle=c, n=int((cycles == c).sum()),
                continue_fraction=float(Y[idx["test"]][cycles == c].mean()),
                accuracy=float(correct[cycles == c].mean())) for c in range(sim.N_CYCLES)]

    ex_dir = os.path.join(args.out, "examples")
    examples = make_examples(ex_dir, args.seed)
    for name, e in examples.items():
        x, rms, _ = pp.preprocess_fits(os.path.join(ex_dir, name), INPUT)
        e["continue_score"] = float(predict(exported, x[None])[0])
        e["decision"] = "stop" if e["continue_score"] < 0.5 else "continue"
        log(f"example {name}: expected {e['expected']}, continue_score {e['continue_score']:.4f}")
    with open(os.path.join(ex_dir, "expected.json"), "w") as f:
        json.dump({"model_sha256": sha256_of(out_model), "examples": examples}, f, indent=1)
        f.write("\n")

    info = dict(sha256=sha256_of(out_model), file_bytes=os.path.getsize(out_model),
                test=m_test, val=m_val, dataset=dataset, test_bands=bands, test_cycles=cyc,
                examples=examples, command=command, threads=args.threads,
                train_seconds=train_seconds, total_seconds=time.monotonic() - t_start,
                best_epoch=best_epoch, n_params=n_params, probe_val_accuracy=probe_val_accuracy,
                hparams=dict(lr=args.lr, wd=args.wd, batch=args.batch, epochs=args.epochs,
                             dropout=args.dropout))
    info = dict(info, history=history, torch=torch.__version__, numpy=np.__version__,
                python=platform.python_version())
    write_card(os.path.join(args.out, "MODEL_CARD.md"), info)
    with open(os.path.join(args.out, "training_log.json"), "w") as f:
        json.dump(info, f, indent=1, default=float)
        f.write("\n")
    log(f"wrote {out_model} sha256 {info['sha256']} ({info['total_seconds'] / 60:.1f} min, "
        f"{platform.python_version()})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
