"""Seed corpora for the libFuzzer targets in this folder, written fresh on each run (run_fuzz.sh):
small valid inputs of every form each parser accepts, and a few near misses, so the fuzzer starts
deep inside the format instead of at random bytes.

    seeds.py model|multipart|config|api_key|http OUTDIR
"""

import json
import os
import struct
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "models"))


def model_seeds(out):
    import numpy as np
    import stopcal_model as sm

    rng = np.random.default_rng(7)
    # As small as the format allows (D = 64, one block, a 2x2 grid), in each dtype and form.
    forms = [
        ("v2-bf16", dict(), "BF16"),
        ("v2-f16-reg-swiglu", dict(num_registers=2, ffn="swiglu", ffn_hidden_dim=8), "F16"),
        ("v2-f32-v3-profile", dict(profile="cortexchange-v3", mean=(0.1, 0.2, 0.3)), "F32"),
        # format_version 3: a DINOv3 (RoPE periods, storage tokens, no positional table) with a
        # runtime object
        ("v3-dinov3-runtime", dict(family="dinov3", num_registers=1, precision="bf16"), "F32"),
    ]
    for name, extra, dtype in forms:
        kw = dict(embed_dim=64, depth=1, num_heads=1, ffn_hidden_dim=8, head_hidden_dim=4,
                  patch_size=2, pos_embed_grid=2, input_size=4, name=name)
        kw.update(extra)
        cfg = sm.make_config(**kw)
        arrays = {k: rng.standard_normal(s).astype(np.float32)
                  for k, s in sm.expected_tensor_shapes(cfg).items()}
        path = os.path.join(out, name + ".safetensors")
        sm.write_model(path, cfg, arrays, dtype=dtype)
        if name == "v2-bf16":
            with open(path, "rb") as f:
                raw = bytearray(f.read())
            raw[-3] ^= 0x10  # the digest no longer matches
            with open(os.path.join(out, "v2-bf16-corrupted.safetensors"), "wb") as f:
                f.write(raw)
            # The same tensors as a format_version 1 file, without a digest.
            v1 = {k: v for k, v in cfg.items() if k != sm.DIGEST_KEY}
            v1["format_version"] = 1
            sm.write_safetensors(os.path.join(out, "v1-bf16.safetensors"),
                                 {k: ("BF16", a.shape, a) for k, a in arrays.items()},
                                 {"stopcal.config": json.dumps(v1)})
    # Container-level near misses.
    header = b'{"__metadata__":{"stopcal.config":"{}"},"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}'
    with open(os.path.join(out, "bad-config.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(header)) + header + b"\0\0\0\0")


def multipart_seeds(out):
    b = "XyZ-boundary"
    fits = b"SIMPLE  =                    T" + b" " * 50
    bodies = {
        "two-files": (f'multipart/form-data; boundary={b}',
                      f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="a.fits"\r\n'
                      f'Content-Type: application/fits\r\n\r\n'.encode() + fits +
                      f'\r\n--{b}\r\nContent-Disposition: form-data; name="file"; filename="b.fits"\r\n\r\n'
                      .encode() + fits + f'\r\n--{b}--\r\n'.encode()),
        "quoted-boundary": (f'multipart/form-data; charset=utf-8; boundary="{b}"',
                            f'preamble\r\n--{b}\r\nContent-Disposition: form-data; name="threshold"\r\n\r\n'
                            f'0.4\r\n--{b}--\r\nepilogue'.encode()),
        "unterminated": (f'multipart/form-data; boundary={b}',
                         f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="x.fits"\r\n\r\n'
                         .encode() + fits),
        "no-boundary": ('multipart/form-data', b"--\r\n"),
    }
    for name, (ct, body) in bodies.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(ct.encode() + b"\n" + body)


def config_seeds(out):
    seeds = {
        "defaults": "",
        "models": "--model\ndemo=models/demo/stopcal-demo.safetensors\n--model\nb.safetensors\n--port\n0",
        "limits": "--max-body-bytes\n64M\n--max-images\n8\n--max-queue\n16\n--memory-budget-bytes\n1G",
        "env": "STOPCAL_PORT=9000\nSTOPCAL_MODEL=a=x.safetensors,b=y.safetensors\n--device\ncpu",
        "equals-form": "--threads=4\n--device=cuda:1\n--api-key-file=/tmp/key\n--host=::1",
        "bad": "--port\n70000\n--no-such-flag\nextra",
        "help": "--help",
    }
    for name, text in seeds.items():
        with open(os.path.join(out, name), "w") as f:
            f.write(text)


def api_key_seeds(out):
    seeds = {
        "token": b"s3cr3t-token-0123456789abcdef\n",
        "crlf-padded": b"  \t Zm9vYmFyLXRva2Vu==\r\n\r\n",
        "long": b"k" * 5000 + b"\n",  # past the 4096 bytes the first reader kept
        "two-lines": b"first\nsecond\n",
        "nul-inside": b"abc\0def\n",
        "empty": b"",
    }
    for name, raw in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(raw)


def http_seeds(out):
    """Raw requests, and the model the in-process server loads (OUTDIR/../model.safetensors)."""
    import subprocess
    root = os.path.join(HERE, "..", "..")
    model = os.path.join(out, "..", "model.safetensors")
    subprocess.run([sys.executable, os.path.join(root, "models", "stopcal-genmodel"), "--embed-dim", "64",
                    "--heads", "1", "--depth", "1", "--input-size", "28", "--pos-grid", "2", "--seed", "3",
                    "--name", "fuzz", "-o", model], check=True, stdout=subprocess.DEVNULL)
    sys.path.insert(0, os.path.join(HERE, "..", "server"))
    import serverlib
    fits = serverlib.fits_bytes(32, 32, 1)
    b = "fuzzbound"
    multipart = (f'--{b}\r\nContent-Disposition: form-data; name="file"; filename="a.fits"\r\n\r\n'.encode()
                 + fits + f'\r\n--{b}--\r\n'.encode())
    pixels = json.dumps({"id": "q1", "inputs": [{"name": "pixels", "datatype": "FP32", "shape": [1, 1, 28, 28],
                                                 "data": [0.5] * (28 * 28)}],
                         "outputs": [{"name": "continue_score"}]}).encode()
    header = json.dumps({"inputs": [{"name": "image", "datatype": "BYTES", "shape": [1],
                                     "parameters": {"binary_data_size": 4 + len(fits)}}],
                         "parameters": {"binary_data_output": True}}).encode()
    binary = header + struct.pack("<I", len(fits)) + fits

    def req(method, path, body=b"", headers=()):
        head = f"{method} {path} HTTP/1.1\r\nHost: fuzz\r\n" + "".join(h + "\r\n" for h in headers)
        if body or method == "POST":
            head += f"Content-Length: {len(body)}\r\n"
        return head.encode() + b"\r\n" + body

    seeds = {
        "get-models": req("GET", "/v1/models"),
        "get-metadata": req("GET", "/v2/models/m") + req("GET", "/v2/models/m/ready"),  # pipelined
        "metrics": req("GET", "/metrics", headers=("Connection: close",)),
        "v1-fits": req("POST", "/v1/predict?name=a.fits&threshold=0.3", fits,
                       ("Content-Type: application/fits",)),
        "v1-multipart": req("POST", "/v1/predict?model=m", multipart,
                            (f"Content-Type: multipart/form-data; boundary={b}",)),
        "v2-json": req("POST", "/v2/models/m/infer", pixels, ("Content-Type: application/json",)),
        "v2-binary": req("POST", "/v2/models/m/infer", binary, ("Content-Type: application/octet-stream",
                                                                 f"Inference-Header-Content-Length: {len(header)}")),
        "v1-chunked": (b"POST /v1/predict HTTP/1.1\r\nHost: f\r\nContent-Type: application/fits\r\n"
                       b"Transfer-Encoding: chunked\r\n\r\n" + b"%x\r\n" % len(fits) + fits + b"\r\n0\r\n\r\n"),
        "bad-length": req("POST", "/v2/models/m/infer", b"{}", ("Content-Length: 5",)),
        "escapes": req("GET", "/v2/health/live%00x?model=%ff&threshold=%2e5"),
    }
    for name, raw in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(raw)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("model", "multipart", "config", "api_key", "http"):
        sys.exit(__doc__)
    os.makedirs(sys.argv[2], exist_ok=True)
    globals()[sys.argv[1] + "_seeds"](sys.argv[2])
