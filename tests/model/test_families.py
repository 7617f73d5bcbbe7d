"""models/families.json is the single source of each family's tensors: the bytes the C reader and
engine compile in are the bytes the Python writer reads, and a tensor added to (a copy of) the
description is written by the writer, expected by both readers and uploaded by the engine, with
no other change anywhere. The C side is tests/model/test_family_source (STOPCAL_FAMILY_TOOL).
"""

import copy
import json
import os
import subprocess
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import stopcal_harness as h  # noqa: E402
from stopcal_harness import TestFailure, check  # noqa: E402

sm = h.sm
TOOL = os.environ.get("STOPCAL_FAMILY_TOOL", "")
SOURCE = os.path.join(h.ROOT, "models", "families.json")
PROBE = "blocks.{i}.probe.gamma"


def tool(*args, env=None):
    r = subprocess.run([TOOL, *map(str, args)], capture_output=True, text=True,
                       env={**os.environ, **(env or {})})
    for mark in h.SANITIZER_MARKS:
        check(mark not in r.stderr, f"sanitizer report:\n{r.stderr}")
    return r


def probe_description(ctx):
    """A copy of the description with one more tensor per block in both families (no slot: the
    engine has no use for it, but must take it)."""
    desc = json.loads(open(SOURCE, "rb").read())
    for fam in desc["families"].values():
        fam["tensors"].append({"name": PROBE, "shape": ["D"], "kind": "vector"})
    path = ctx.path("families-probe.json")
    with open(path, "w") as f:
        json.dump(desc, f)
    return path


def genmodel(ctx, name, family, env=None):
    args = ["--family", family, "--embed-dim", 64, "--heads", 1, "--depth", 2,
            "--input-size", 32 if family == "dinov3" else 28, "--registers", 4]
    r = subprocess.run([sys.executable, h.GENMODEL, *map(str, args), "-o", ctx.path(name)],
                       capture_output=True, text=True, env={**os.environ, **(env or {})})
    check(r.returncode == 0, f"stopcal-genmodel: {r.stderr}")
    return ctx.path(name)


def test_the_c_engine_compiles_in_the_bytes_the_python_writer_reads(ctx):
    check(TOOL, "STOPCAL_FAMILY_TOOL names the C tool")
    out = ctx.path("embedded.json")
    r = tool("dump", out)
    check(r.returncode == 0, r.stderr)
    embedded = open(out, "rb").read()
    check(embedded == open(SOURCE, "rb").read(), "the compiled-in bytes are models/families.json's")
    check(embedded == sm.FAMILIES_BYTES, "and the bytes stopcal_model.py read")
    check(os.path.samefile(sm.FAMILIES_PATH, SOURCE), f"the writer reads {sm.FAMILIES_PATH}")


def test_every_described_tensor_is_uploaded(ctx):
    for family in sm.FAMILIES:
        path = genmodel(ctx, f"{family}.safetensors", family)
        r = tool("load", path)
        check(r.returncode == 0, f"{family}: {r.stdout}{r.stderr}")
        n = len(sm.read_model(path)[1])
        check(f"tensors {n} uploaded {n}" in r.stdout, f"{family}: {r.stdout}")


def test_a_tensor_added_to_the_description_is_written_expected_and_uploaded(ctx):
    alt = {"STOPCAL_TEST_ONLY_FAMILIES": probe_description(ctx)}
    for family in sm.FAMILIES:
        path = genmodel(ctx, f"{family}-probe.safetensors", family, env=alt)
        _, arrays, _ = sm.read_safetensors(path)
        for i in range(2):
            name = PROBE.replace("{i}", str(i))
            check(name in arrays and arrays[name].shape == (64,), f"{family}: the writer wrote {name}")
        r = tool("load", path, env=alt)
        check(r.returncode == 0, f"{family} under the probe description: {r.stdout}{r.stderr}")
        n = len(arrays)
        check(f"tensors {n} uploaded {n}" in r.stdout, f"{family}: the engine took every tensor: {r.stdout}")
        # The shipped description does not know it: both readers refuse the file by its name.
        r = tool("load", path)
        check(r.returncode != 0 and "unexpected tensor" in r.stdout and "probe.gamma" in r.stdout,
              f"{family}: the C reader without the probe: {r.stdout}")
        try:
            sm.read_model(path)
            raise TestFailure("the Python reader accepted a tensor its description lacks")
        except sm.ModelFormatError as e:
            check("unexpected tensor" in str(e) and "probe.gamma" in str(e), str(e))
        # And a file without it is refused under the probe description: the reader expects it.
        plain = genmodel(ctx, f"{family}.safetensors", family)
        r = tool("load", plain, env=alt)
        check(r.returncode != 0 and "missing tensor" in r.stdout and "probe.gamma" in r.stdout,
              f"{family}: the C reader with the probe, on a file without it: {r.stdout}")


def test_a_broken_description_is_reported_not_crashed_on(ctx):
    desc = json.loads(open(SOURCE, "rb").read())
    bad = copy.deepcopy(desc)
    bad["families"]["dinov3"]["tensors"][0]["shape"] = ["D*"]
    path = ctx.path("bad.json")
    with open(path, "w") as f:
        json.dump(bad, f)
    model = genmodel(ctx, "d3.safetensors", "dinov3")
    r = tool("load", model, env={"STOPCAL_TEST_ONLY_FAMILIES": path})
    check(r.returncode != 0 and "shape" in r.stdout and "D*" in r.stdout, f"bad shape: {r.stdout}")
    bad = copy.deepcopy(desc)
    bad["families"]["dinov3"]["forward"]["block"].append("teleport")
    with open(path, "w") as f:
        json.dump(bad, f)
    r = tool("load", model, env={"STOPCAL_TEST_ONLY_FAMILIES": path})
    check(r.returncode != 0 and "teleport" in r.stdout, f"unknown step: {r.stdout}")
    bad = copy.deepcopy(desc)
    bad["families"]["dinov3"]["tensors"][0]["slot"] = "nowhere"
    with open(path, "w") as f:
        json.dump(bad, f)
    r = tool("load", model, env={"STOPCAL_TEST_ONLY_FAMILIES": path})
    check(r.returncode != 0 and "nowhere" in r.stdout, f"unknown slot: {r.stdout}")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
