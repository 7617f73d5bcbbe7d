"""Parity of `stopcal-infer` with the PyTorch reference (tests/reference/dinov2_torch.py).

Every case writes a random model (models/stopcal-genmodel) and a few structured images, runs the
binary on them in one call and requires |Δ logit| ≤ 1e-4·max(1, |logit|) and
|Δ continue_score| ≤ 1e-4 against the fp32 reference (ARCHITECTURE.md §3).

    test_parity.py --infer build/server/stopcal-infer [--case NAME]...
"""

import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import stopcal_harness as h  # noqa: E402
from stopcal_harness import check  # noqa: E402

TINY = ("--embed-dim", 128, "--heads", 2)  # 2 heads of 64, cheap under sanitizers


def images(size, seeds, channels=3):
    return [h.make_image(s, size, channels) for s in seeds]


def test_tiny_model_at_224(ctx):
    m = h.genmodel(ctx, "tiny.safetensors", *TINY, "--depth", 3, "--input-size", 224, "--seed", 1)
    h.check_parity(ctx, "tiny@224", m, images(224, [10, 11]))


def test_s14_at_224_full_depth(ctx):
    m = h.genmodel(ctx, "s14.safetensors", "--variant", "s", "--input-size", 224, "--seed", 2)
    h.check_parity(ctx, "vits14@224", m, images(224, [20, 21]))


def test_s14_reg_at_non_native_grid(ctx):
    # 224 px → a 16×16 grid: the stored 37×37 table is shrunk with PyTorch's antialias filter.
    m = h.genmodel(ctx, "s14reg.safetensors", "--variant", "s", "--registers", 4,
                   "--input-size", 224, "--seed", 3)
    h.check_parity(ctx, "vits14-reg@224", m, images(224, [30, 31]))


def test_b14_reg_at_the_deployed_geometry(ctx):
    # The deployed model's width, heads and token count (560 px: 1 + 4 + 40² = 1,605 tokens),
    # with two blocks instead of twelve to keep the suite fast under sanitizers.
    m = h.genmodel(ctx, "b14reg.safetensors", "--variant", "b", "--depth", 2, "--registers", 4,
                   "--input-size", 560, "--seed", 19)
    h.check_parity(ctx, "vitb14-reg-2blocks@560", m, images(560, [190, 191]))


def test_tiny_reg_upsampled_to_grid_40(ctx):
    # 560 px → 40×40, the deployed geometry: antialias=True still changes the kernel when
    # upsampling 37 → 40 (PIL's cubic, A = −0.5).
    m = h.genmodel(ctx, "tinyreg560.safetensors", *TINY, "--depth", 2, "--registers", 4,
                   "--input-size", 560, "--seed", 4)
    h.check_parity(ctx, "tiny-reg@560", m, images(560, [40, 41]))


def test_tiny_scale_factor_upsampled_to_grid_40(ctx):
    m = h.genmodel(ctx, "tiny560.safetensors", *TINY, "--depth", 2, "--input-size", 560,
                   "--seed", 5)
    h.check_parity(ctx, "tiny-scale-factor@560", m, images(560, [50]))


def test_interpolation_mode_is_set_by_the_file_not_by_registers(ctx):
    # The mode is a field of its own: registers with the scale-factor rule and the reverse.
    # 238 px → an odd grid of 17.
    a = h.genmodel(ctx, "reg-sf.safetensors", *TINY, "--depth", 2, "--registers", 4,
                   "--pos-interp", "bicubic_scale_factor", "--input-size", 238, "--seed", 6)
    h.check_parity(ctx, "tiny-reg-scale-factor@238", a, images(238, [60]))
    b = h.genmodel(ctx, "noreg-aa.safetensors", *TINY, "--depth", 2,
                   "--pos-interp", "bicubic_antialias", "--input-size", 238, "--seed", 7)
    h.check_parity(ctx, "tiny-antialias@238", b, images(238, [61]))


def test_native_grid_uses_the_stored_table(ctx):
    # 518 px → g = 37 = G: DINOv2 returns the table as stored. With the scale-factor rule a
    # resample would shift every position by a fraction of a cell, so this case would notice.
    a = h.genmodel(ctx, "native-sf.safetensors", *TINY, "--depth", 2, "--input-size", 518,
                   "--seed", 8)
    h.check_parity(ctx, "tiny-scale-factor@518", a, images(518, [80]))
    b = h.genmodel(ctx, "native-aa.safetensors", *TINY, "--depth", 2, "--registers", 4,
                   "--input-size", 518, "--seed", 9)
    h.check_parity(ctx, "tiny-reg@518", b, images(518, [81]))


def test_stored_grid_other_than_37(ctx):
    a = h.genmodel(ctx, "g24.safetensors", *TINY, "--depth", 2, "--pos-grid", 24,
                   "--input-size", 224, "--seed", 10)
    h.check_parity(ctx, "tiny-G24-scale-factor@224", a, images(224, [100]))
    b = h.genmodel(ctx, "g12.safetensors", *TINY, "--depth", 2, "--pos-grid", 12, "--registers", 4,
                   "--input-size", 224, "--seed", 11)
    h.check_parity(ctx, "tiny-reg-G12@224", b, images(224, [101]))


def test_swiglu_model(ctx):
    # ViT-g/14's feed-forward on a tiny width; a head narrower than D on top.
    m = h.genmodel(ctx, "swiglu.safetensors", *TINY, "--depth", 2, "--ffn", "swiglu",
                   "--registers", 4, "--head-hidden", 96, "--input-size", 224, "--seed", 12)
    cfg, _ = h.sm.read_model(m)
    check(cfg["architecture"]["ffn_hidden_dim"] == 344, "SwiGLU hidden width follows DINOv2's rule")
    h.check_parity(ctx, "tiny-swiglu@224", m, images(224, [120, 121]))


def _check_stored_dtype(model, dtype):
    _, _, dtypes = h.sm.read_safetensors(model)
    check(set(dtypes.values()) == {dtype}, f"{model} holds {set(dtypes.values())}, not {dtype}")


def test_f16_weights(ctx):
    m = h.genmodel(ctx, "f16.safetensors", *TINY, "--depth", 2, "--registers", 4,
                   "--input-size", 224, "--dtype", "f16", "--seed", 13)
    _check_stored_dtype(m, "F16")
    h.check_parity(ctx, "tiny-reg-f16@224", m, images(224, [130]))


def test_bf16_weights(ctx):
    m = h.genmodel(ctx, "bf16.safetensors", *TINY, "--depth", 2, "--input-size", 224,
                   "--dtype", "bf16", "--seed", 14)
    _check_stored_dtype(m, "BF16")
    h.check_parity(ctx, "tiny-bf16@224", m, images(224, [140]))


def test_batch_of_three_images_in_one_call(ctx):
    # One forward pass of 3 different images, one of them a 1-channel file (replicated to 3):
    # each answer must be the reference's for that image alone, whatever batch it shared.
    m = h.genmodel(ctx, "batch.safetensors", *TINY, "--depth", 2, "--registers", 4,
                   "--input-size", 224, "--seed", 22)
    ims = [h.make_image(150, 224), h.make_image(151, 224, channels=1), h.make_image(152, 224)]
    paths = [h.write_pixels(ctx, f"img{i}.f32", im) for i, im in enumerate(ims)]
    ref = h.reference_logits(m, ims)
    check(min(abs(a - b) for a, b in [(ref[0], ref[1]), (ref[1], ref[2]), (ref[0], ref[2])]) > 1e-2,
          f"the three images should give clearly different logits: {ref}")
    _, doc = h.run_infer(ctx, m, paths)
    check([r["name"] for r in doc["results"]] == paths, "results come back in the order given")
    h.compare(ctx, "batch of 3", ref, doc["results"])
    _, split = h.run_infer(ctx, m, paths, "--max-batch", 2)
    h.compare(ctx, "batch of 3 with --max-batch 2", ref, split["results"])
    _, serial = h.run_infer(ctx, m, paths, "--threads", 1)
    h.compare(ctx, "batch of 3 on one thread", ref, serial["results"])
    for i, p in enumerate(paths):
        _, one = h.run_infer(ctx, m, [p])
        h.compare(ctx, f"image {i} alone", ref[i:i + 1], one["results"])


def test_json_results_follow_the_contract(ctx):
    m = h.genmodel(ctx, "contract.safetensors", *TINY, "--depth", 1, "--input-size", 56,
                   "--name", "contract-model", "--seed", 16)
    paths = [h.write_pixels(ctx, f"c{i}.f32", h.make_image(160 + i, 56)) for i in range(2)]
    r, doc = h.run_infer(ctx, m, paths)
    check(r.stderr == "", f"nothing on stderr on success, got: {r.stderr!r}")
    check(set(doc) >= {"model", "stopcal_version", "results"}, f"top-level keys: {sorted(doc)}")
    check(doc["model"].get("name") == "contract-model", f"model name: {doc['model']}")
    check(doc["model"].get("sha256") == h.sha256_of(m), "model.sha256 is the file's SHA-256")
    check(isinstance(doc["stopcal_version"], str) and doc["stopcal_version"], "stopcal_version")
    keys = {"name", "continue_score", "stop_probability", "decision", "threshold", "logit", "rms",
            "nonfinite_pixels", "precision"}
    for p, res in zip(paths, doc["results"]):
        check(set(res) == keys, f"result keys {sorted(res)} are not {sorted(keys)}")
        check(res["name"] == p, f"name {res['name']!r} is the path as given, {p!r}")
        check(abs(res["continue_score"] - h.sigmoid(res["logit"])) <= 1e-6,
              f"continue_score is sigmoid(logit): {res}")
        check(abs(res["stop_probability"] - (1 - res["continue_score"])) <= 1e-6,
              f"stop_probability = 1 − continue_score: {res}")
        check(res["threshold"] == 0.5, f"threshold defaults to the model's 0.5: {res}")
        want = "stop" if res["continue_score"] < 0.5 else "continue"
        check(res["decision"] == want, f"decision: {res}")
        check(res["rms"] is None and res["nonfinite_pixels"] == 0, f"raw pixels: {res}")
        check(res["precision"] == "fp32", f"the parity runs are pinned to fp32: {res}")
    ctx.note(f"contract: {json.dumps(doc['results'][0])}")


def test_parity_runs_pinned_to_the_cpu_backend(ctx):
    """The fp32 tolerances of these cases are for the CPU engine: the harness passes --device cpu
    (on a GPU node `auto` would pick the bf16 CUDA path) and checks the backend that ran."""
    m = h.genmodel(ctx, "pin.safetensors", *TINY, "--depth", 1, "--input-size", 56, "--seed", 18)
    p = h.write_pixels(ctx, "pin.f32", h.make_image(180, 56))
    r, doc = h.run_infer(ctx, m, [p])
    check(r.args[r.args.index("--device") + 1] == "cpu", f"command: {r.args}")
    check(doc.get("backend") == "cpu", f"stopcal-infer reports backend {doc.get('backend')!r}")
    # And a device that is not there is an error, not a silent CPU run the tests would mistake.
    r, _ = h.run_infer(ctx, m, [p], "--device", "cuda:7", expect_ok=False, json_out=False)
    lines = r.stderr.strip().splitlines()
    check(r.returncode != 0 and lines and lines[0].startswith("stopcal-infer: ")
          and "cuda" in r.stderr, f"--device cuda:7 without that device: {r.returncode} {r.stderr!r}")


def test_threshold_sets_the_decision(ctx):
    m = h.genmodel(ctx, "thr.safetensors", *TINY, "--depth", 1, "--input-size", 56, "--seed", 17)
    p = h.write_pixels(ctx, "t.f32", h.make_image(170, 56))
    _, doc = h.run_infer(ctx, m, [p])
    score = doc["results"][0]["continue_score"]
    for thr, want in ((min(0.999, score + 0.01), "stop"), (max(0.001, score - 0.01), "continue")):
        _, d = h.run_infer(ctx, m, [p], "--threshold", repr(thr))
        res = d["results"][0]
        check(res["decision"] == want and abs(res["threshold"] - thr) < 1e-9,
              f"--threshold {thr} with continue_score {score}: {res}")


def test_text_output_has_one_line_per_image(ctx):
    m = h.genmodel(ctx, "text.safetensors", *TINY, "--depth", 1, "--input-size", 56, "--seed", 18)
    paths = [h.write_pixels(ctx, f"t{i}.f32", h.make_image(180 + i, 56)) for i in range(3)]
    r, _ = h.run_infer(ctx, m, paths, json_out=False)
    lines = r.stdout.splitlines()
    check(len(lines) == 3, f"3 lines for 3 images, got:\n{r.stdout}")
    ctx.note(f"text output: {lines[0]!r}")


def test_pixels_of_the_wrong_size_are_refused(ctx):
    m = h.genmodel(ctx, "px.safetensors", *TINY, "--depth", 1, "--input-size", 56, "--seed", 20)
    good = h.write_pixels(ctx, "good.f32", h.make_image(200, 56))
    for label, image in (("two-channel", h.make_image(201, 56, channels=2)),
                         ("other-size", h.make_image(202, 42)),
                         ("one-float-too-many", np.append(h.make_image(203, 56).ravel(), 0.5))):
        bad = h.write_pixels(ctx, f"{label}.f32", image)
        r, _ = h.run_infer(ctx, m, [good, bad], expect_ok=False)
        lines = r.stderr.splitlines()
        check(r.returncode != 0 and len(lines) == 1 and lines[0].startswith("stopcal-infer: ")
              and bad in lines[0], f"{label}: want one line naming {bad}, got {r.stderr!r}")
    r, _ = h.run_infer(ctx, m, [ctx.path("absent.f32")], expect_ok=False)
    check(r.returncode != 0 and r.stderr.startswith("stopcal-infer: "), f"absent: {r.stderr!r}")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
