#!/usr/bin/env python3
"""Models and images for test_bf16_numerics: the parity suite's models (stopcal-genmodel, the same
shapes and seeds as tests/parity/test_parity.py, plus two tiny DINOv3 ones) and LOFAR-like FITS images (tests/image/gen_fits.py:
noise at a realistic rms, beam-convolved sources, artefacts, NaN borders, 4-D headers).

    bf16_numerics_setup.py OUTDIR
"""
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.join(HERE, "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tests", "image"))
import gen_fits  # noqa: E402

TINY = ("--embed-dim", "128", "--heads", "2")
MODELS = {
    "tiny224": (*TINY, "--depth", "3", "--input-size", "224", "--seed", "1"),
    "s14": ("--variant", "s", "--input-size", "224", "--seed", "2"),
    "swiglu": (*TINY, "--depth", "2", "--ffn", "swiglu", "--registers", "4", "--head-hidden", "96",
               "--input-size", "224", "--seed", "12"),
    "b14reg560": ("--variant", "b", "--depth", "2", "--registers", "4", "--input-size", "560",
                  "--seed", "19"),
    # DINOv3 (RoPE, no positional table, patch 16): the bf16 path covers every family
    "dinov3": ("--family", "dinov3", "--variant", "tiny", "--input-size", "224", "--seed", "5"),
    "dinov3swiglu": ("--family", "dinov3", "--variant", "tiny-swiglu", "--input-size", "224",
                     "--seed", "6"),
}


def main(out):
    os.makedirs(out, exist_ok=True)
    for name, args in MODELS.items():
        subprocess.run([sys.executable, os.path.join(ROOT, "models", "stopcal-genmodel"), *args,
                        "-o", os.path.join(out, name + ".safetensors")], check=True)
    for i in range(4):
        gen_fits.lofar_4d(os.path.join(out, f"lofar{i}.fits"), 300 + 40 * i, 300 + 40 * i, 700 + i)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
