"""`stopcal-infer` refuses every malformed model file cleanly, and loads every valid variant.

Each case starts from a valid tiny model written by models/stopcal_model.py, breaks one thing,
and requires: a non-zero exit, exactly one line on stderr starting "stopcal-infer: " that names
the problem (a keyword, matched outside the quoted file path), and no sanitizer report. The
Python reader (stopcal_model.py) must refuse the same file with the same keyword, so the two
halves of the format contract cannot drift apart.

    test_malformed.py --infer build/server/stopcal-infer [--case NAME]...
"""

import hashlib
import json
import math
import os
import struct
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
import stopcal_harness as h  # noqa: E402
from stopcal_harness import TestFailure, check  # noqa: E402

sm = h.sm
SIZE = 28  # a 2×2 patch grid: loading is what is under test


# --------------------------------------------------------------------------------------------
# building files


class Parts:
    """A model file taken apart: metadata, and tensors as [name, dtype, shape, raw bytes] in
    file order. Tests change the parts (or the header afterwards) and reassemble."""

    def __init__(self, cfg, arrays, dtype="F32"):
        self.metadata = {"stopcal.config": json.dumps(cfg)}
        self.tensors = [[n, dtype, list(a.shape), sm.encode_tensor(a, dtype)]
                        for n, a in sorted(arrays.items())]

    def find(self, name):
        return next(t for t in self.tensors if t[0] == name)

    def remove(self, name):
        self.tensors = [t for t in self.tensors if t[0] != name]

    def header_and_data(self):
        """Header entries (name → dict, in file order) with back-to-back offsets, and the data."""
        entries, at = {}, 0
        for name, dtype, shape, raw in self.tensors:
            entries[name] = {"dtype": dtype, "shape": shape, "data_offsets": [at, at + len(raw)]}
            at += len(raw)
        return entries, b"".join(t[3] for t in self.tensors)


def assemble(entries, data, metadata, header_bytes=None, pad=True):
    """File bytes from header entries, data and metadata (None: no __metadata__ at all)."""
    if header_bytes is None:
        header_bytes = sm.encode_header(entries, metadata) if pad else \
            json.dumps({**({"__metadata__": metadata} if metadata is not None else {}),
                        **entries}, separators=(",", ":")).encode()
    return struct.pack("<Q", len(header_bytes)) + header_bytes + data


def tiny_model(ctx, registers=0):
    """(config, fp32 arrays) of a valid tiny model, written and read back by the library. The
    config comes without the writer's data digest (optional in format_version 2): the cases
    change the data on purpose; the digest cases below use the library's files as written."""
    path = h.genmodel(ctx, f"valid-r{registers}.safetensors", "--embed-dim", 64, "--heads", 1,
                      "--depth", 2, "--registers", registers, "--input-size", SIZE,
                      "--name", "tiny-valid")
    cfg, arrays = sm.read_model(path)
    cfg.pop(sm.DIGEST_KEY)
    return cfg, arrays


def valid_bytes(ctx, **kw):
    cfg, arrays = tiny_model(ctx, **kw)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    return assemble(entries, data, p.metadata)


def write(ctx, data, name="bad.safetensors"):
    path = ctx.path(name)
    with open(path, "wb") as f:
        f.write(data)
    return path


def pixels(ctx):
    return h.write_pixels(ctx, "x.f32", h.make_image(0, SIZE))


# --------------------------------------------------------------------------------------------
# the checks


def expect_refusal(ctx, data, *keywords):
    """Both readers refuse `data`; stopcal-infer with one clean line naming every keyword."""
    path = write(ctx, data)
    try:
        sm.read_model(path)
        raise TestFailure("the Python reader accepted it")
    except sm.ModelFormatError as e:
        for k in keywords:
            check(k in str(e), f"Python reader: {k!r} not in {str(e)!r}")
    r, _ = h.run_infer(ctx, path, [pixels(ctx)], json_out=False, expect_ok=False)
    lines = r.stderr.splitlines()
    check(r.returncode != 0, f"exit status 0 for a bad model; stdout: {r.stdout!r}")
    check(len(lines) == 1 and lines[0].startswith("stopcal-infer: "),
          f"stderr must be one line starting 'stopcal-infer: ', got:\n{r.stderr}")
    message = lines[0].replace(path, "<model>")
    for k in keywords:
        check(k in message, f"{k!r} not in the message: {lines[0]!r}")
    check(r.stdout == "", f"nothing on stdout, got {r.stdout!r}")
    ctx.note(f"refused: {message}")


def with_header(ctx, mutate, **kw):
    """Valid parts → header entries → mutate(entries, parts) may return new (entries, data)."""
    cfg, arrays = tiny_model(ctx, **kw)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    out = mutate(entries, p)
    if out is not None:
        entries, data = out
    return assemble(entries, data, p.metadata)


def with_config(ctx, mutate):
    """A valid file whose stopcal.config was changed by mutate(cfg) (in place)."""
    cfg, arrays = tiny_model(ctx)
    mutate(cfg)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    return assemble(entries, data, p.metadata)


def shift_from(entries, index, delta):
    """Move the tensors from file position `index` on by `delta` bytes."""
    for i, e in enumerate(entries.values()):
        if i >= index:
            e["data_offsets"] = [e["data_offsets"][0] + delta, e["data_offsets"][1] + delta]


# --------------------------------------------------------------------------------------------
# the container


def test_empty_file_is_refused_as_truncated(ctx):
    expect_refusal(ctx, b"", "truncated")


def test_file_cut_inside_the_header_length_is_refused_as_truncated(ctx):
    expect_refusal(ctx, valid_bytes(ctx)[:5], "truncated")


def test_file_cut_inside_the_data_is_refused_as_truncated(ctx):
    expect_refusal(ctx, valid_bytes(ctx)[:-100], "truncated")


def test_file_cut_inside_the_header_is_refused(ctx):
    data = valid_bytes(ctx)
    (n,) = struct.unpack_from("<Q", data)
    expect_refusal(ctx, data[:8 + n // 2], "header length")


def test_header_length_past_the_end_is_refused(ctx):
    data = bytearray(valid_bytes(ctx))
    struct.pack_into("<Q", data, 0, len(data))
    expect_refusal(ctx, bytes(data), "header length")


def test_header_length_that_would_wrap_around_is_refused(ctx):
    data = bytearray(valid_bytes(ctx))
    struct.pack_into("<Q", data, 0, 2**64 - 4)  # 8 + N wraps to 4 in 64-bit arithmetic
    expect_refusal(ctx, bytes(data), "header length")


def test_header_length_over_100_mib_is_refused(ctx):
    data = bytearray(valid_bytes(ctx))
    struct.pack_into("<Q", data, 0, 100 * 1024 * 1024 + 8)
    expect_refusal(ctx, bytes(data), "header length")


def test_invalid_header_json_is_refused(ctx):
    data = bytearray(valid_bytes(ctx))
    (n,) = struct.unpack_from("<Q", data)
    end = data.rindex(b"}", 8, 8 + n)
    data[end] = ord(" ")  # the object is never closed
    expect_refusal(ctx, bytes(data), "JSON")


def test_header_that_is_not_an_object_is_refused(ctx):
    expect_refusal(ctx, assemble({}, b"", None, header_bytes=b"[1, 2, 3]       "), "JSON")


def test_header_with_invalid_utf8_is_refused(ctx):
    expect_refusal(ctx, assemble({}, b"", None, header_bytes=b'{"\xff\xfe": 1}        '), "JSON")


def test_nan_literal_in_the_header_is_refused(ctx):
    # Python's json would take NaN; JSON (and jansson) does not.
    cfg, arrays = tiny_model(ctx)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    header = sm.encode_header(entries, p.metadata).rstrip()[:-1] + b',"x":NaN}'
    header += b" " * (-(8 + len(header)) % 8)
    expect_refusal(ctx, assemble(entries, data, None, header_bytes=header), "JSON")


def test_duplicate_tensor_names_are_refused(ctx):
    cfg, arrays = tiny_model(ctx)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    header = sm.encode_header(entries, p.metadata).rstrip()
    first = json.dumps({"norm.bias": entries["norm.bias"]}, separators=(",", ":"))[1:-1]
    header = header[:-1] + b"," + first.encode() + b"}"
    header += b" " * (-(8 + len(header)) % 8)
    expect_refusal(ctx, assemble(entries, data, None, header_bytes=header), "JSON")


def test_overlapping_offsets_are_refused(ctx):
    def overlap(entries, p):
        shift_from(entries, 5, -4)  # tensor 5 starts 4 bytes inside tensor 4
        _, data = p.header_and_data()
        cut = entries[p.tensors[5][0]]["data_offsets"][0]
        return entries, data[:cut] + data[cut + 4:]
    expect_refusal(ctx, with_header(ctx, overlap), "offsets")


def test_offsets_with_a_gap_are_refused(ctx):
    def gap(entries, p):
        shift_from(entries, 5, 8)
        _, data = p.header_and_data()
        at = entries[p.tensors[5][0]]["data_offsets"][0] - 8
        return entries, data[:at] + bytes(8) + data[at:]
    expect_refusal(ctx, with_header(ctx, gap), "offsets")


def test_offsets_not_starting_at_zero_are_refused(ctx):
    def lead(entries, p):
        shift_from(entries, 0, 8)
        return entries, bytes(8) + p.header_and_data()[1]
    expect_refusal(ctx, with_header(ctx, lead), "offsets")


def test_out_of_order_offsets_are_refused(ctx):
    def backwards(entries, p):
        e = entries[p.tensors[3][0]]
        e["data_offsets"] = e["data_offsets"][::-1]  # [end, begin]
    expect_refusal(ctx, with_header(ctx, backwards), "offsets")


def test_trailing_bytes_after_the_last_tensor_are_refused(ctx):
    expect_refusal(ctx, valid_bytes(ctx) + bytes(16), "offsets")


def test_byte_length_that_disagrees_with_the_shape_is_refused(ctx):
    def longer(entries, p):
        name = p.tensors[2][0]
        entries[name]["data_offsets"][1] += 4
        shift_from(entries, 3, 4)
        _, data = p.header_and_data()
        at = entries[name]["data_offsets"][1] - 4
        return entries, data[:at] + bytes(4) + data[at:]
    expect_refusal(ctx, with_header(ctx, longer), "byte length")


def test_dtype_that_disagrees_with_the_byte_length_is_refused(ctx):
    def narrower(entries, p):
        entries["norm.weight"]["dtype"] = "F16"  # half the bytes the offsets cover
    expect_refusal(ctx, with_header(ctx, narrower), "byte length")


def test_unknown_dtype_f64_is_refused(ctx):
    def f64(entries, p):
        entries["norm.weight"]["dtype"] = "F64"
    expect_refusal(ctx, with_header(ctx, f64), "dtype")


def test_unknown_dtype_i8_is_refused(ctx):
    def i8(entries, p):
        entries["blocks.0.attn.qkv.bias"]["dtype"] = "I8"
    expect_refusal(ctx, with_header(ctx, i8), "dtype")


def test_negative_dimension_is_refused(ctx):
    def negative(entries, p):
        entries["norm.weight"]["shape"] = [-64]
    expect_refusal(ctx, with_header(ctx, negative), "shape")


def test_shape_whose_size_overflows_is_refused(ctx):
    def huge(entries, p):
        entries["norm.weight"]["shape"] = [2**40, 2**40, 2**40]
    expect_refusal(ctx, with_header(ctx, huge), "shape")


def test_offsets_far_past_the_end_are_refused(ctx):
    def far(entries, p):
        # begin/end near 2^62: pointer arithmetic on them must never happen unchecked.
        entries["norm.weight"]["data_offsets"] = [2**62, 2**62 + 256]
        return entries, p.header_and_data()[1]
    expect_refusal(ctx, with_header(ctx, far))


# --------------------------------------------------------------------------------------------
# the tensor set


def _drop(name):
    def drop(entries, p):
        p.remove(name)
        return p.header_and_data()
    return drop


def _add(name, shape):
    def add(entries, p):
        p.tensors.append([name, "F32", list(shape), bytes(4 * int(math.prod(shape)))])
        p.tensors.sort()
        return p.header_and_data()
    return add


def test_missing_tensor_is_refused_by_name(ctx):
    expect_refusal(ctx, with_header(ctx, _drop("blocks.1.ls2.gamma")),
                   "missing tensor", "blocks.1.ls2.gamma")


def test_missing_register_tokens_are_refused_by_name(ctx):
    expect_refusal(ctx, with_header(ctx, _drop("register_tokens"), registers=4),
                   "missing tensor", "register_tokens")


def test_unexpected_tensor_is_refused_by_name(ctx):
    expect_refusal(ctx, with_header(ctx, _add("blocks.1.attn.extra.weight", (64,))),
                   "unexpected tensor", "blocks.1.attn.extra.weight")


def test_register_tokens_in_a_model_without_registers_are_refused(ctx):
    expect_refusal(ctx, with_header(ctx, _add("register_tokens", (1, 4, 64))),
                   "unexpected tensor", "register_tokens")


def test_block_beyond_the_configured_depth_is_refused(ctx):
    expect_refusal(ctx, with_header(ctx, _add("blocks.2.norm1.weight", (64,))),
                   "unexpected tensor", "blocks.2.norm1.weight")


def test_transposed_qkv_weight_is_refused_by_name(ctx):
    def transpose(entries, p):
        entries["blocks.0.attn.qkv.weight"]["shape"] = [64, 192]  # same bytes, wrong shape
    expect_refusal(ctx, with_header(ctx, transpose), "shape", "blocks.0.attn.qkv.weight")


def test_pos_embed_for_another_grid_is_refused_by_name(ctx):
    def grid36(entries, p):
        t = p.find("pos_embed")
        t[2], t[3] = [1, 1 + 36 * 36, 64], bytes(4 * (1 + 36 * 36) * 64)
        return p.header_and_data()
    expect_refusal(ctx, with_header(ctx, grid36), "shape", "pos_embed")


def test_flattened_patch_embedding_is_refused_by_name(ctx):
    def flat(entries, p):
        entries["patch_embed.proj.weight"]["shape"] = [64, 588]
    expect_refusal(ctx, with_header(ctx, flat), "shape", "patch_embed.proj.weight")


# --------------------------------------------------------------------------------------------
# stopcal.config


def test_file_without_metadata_is_refused(ctx):
    cfg, arrays = tiny_model(ctx)
    entries, data = Parts(cfg, arrays).header_and_data()
    expect_refusal(ctx, assemble(entries, data, None), "stopcal.config")


def test_metadata_without_stopcal_config_is_refused(ctx):
    cfg, arrays = tiny_model(ctx)
    entries, data = Parts(cfg, arrays).header_and_data()
    expect_refusal(ctx, assemble(entries, data, {"format": "pt"}), "stopcal.config")


def test_stopcal_config_that_is_not_json_is_refused(ctx):
    cfg, arrays = tiny_model(ctx)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    expect_refusal(ctx, assemble(entries, data, {"stopcal.config": "{\"format_version\": 1,"}),
                   "stopcal.config", "JSON")


def _config_case(ctx, mutate, *keywords):
    expect_refusal(ctx, with_config(ctx, mutate), *keywords)


def test_nul_character_in_the_config_is_refused(ctx):
    _config_case(ctx, lambda c: c.update(name="tiny\0valid"), "stopcal.config")


def test_embed_dim_not_heads_times_64_is_refused(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(num_heads=2), "embed_dim")


def test_input_size_not_a_multiple_of_the_patch_size_is_refused(ctx):
    _config_case(ctx, lambda c: c["input"].update(size=30), "input.size")


def test_unknown_profile_is_refused(ctx):
    _config_case(ctx, lambda c: c["preprocessing"].update(profile="cortexchange-v9"), "profile")


def test_unknown_top_level_key_is_refused_by_name(ctx):
    _config_case(ctx, lambda c: c.update(colour="blue"), "colour")


def test_unknown_architecture_key_is_refused_by_name(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(dropout=0.1), "dropout")


def test_format_version_4_is_refused(ctx):
    _config_case(ctx, lambda c: c.update(format_version=4), "format_version")


def test_runtime_needs_format_version_3(ctx):
    _config_case(ctx, lambda c: c.update(format_version=2, runtime={"precision": "bf16"}), "runtime",
                 "format_version 3")


def test_runtime_precision_must_be_fp32_bf16_or_auto(ctx):
    _config_case(ctx, lambda c: c.update(format_version=3, runtime={"precision": "fp16"}),
                 "runtime.precision", "fp16")
    _config_case(ctx, lambda c: c.update(format_version=3, runtime={"precision": 16}), "runtime.precision")
    _config_case(ctx, lambda c: c.update(format_version=3, runtime="bf16"), "runtime")
    _config_case(ctx, lambda c: c.update(format_version=3, runtime={"precison": "bf16"}), "precison")


def test_aliases_need_format_version_2(ctx):
    _config_case(ctx, lambda c: c.update(format_version=1, aliases=["surf/x"]), "aliases", "format_version 2")


def test_aliases_that_are_not_names_are_refused(ctx):
    _config_case(ctx, lambda c: c.update(aliases="surf/x"), "aliases")
    _config_case(ctx, lambda c: c.update(aliases=["surf/x", 7]), "aliases[1]")
    _config_case(ctx, lambda c: c.update(aliases=["surf/infer"]), "aliases[0]", "'infer'")
    _config_case(ctx, lambda c: c.update(aliases=["a//b"]), "aliases[0]", "non-empty")
    _config_case(ctx, lambda c: c.update(aliases=["x y"]), "aliases[0]", "letters")
    _config_case(ctx, lambda c: c.update(aliases=["surf/x", "surf/x"]), "twice")
    _config_case(ctx, lambda c: c.update(aliases=["a%d" % i for i in range(17)]), "aliases")


def test_format_version_0_is_refused(ctx):
    _config_case(ctx, lambda c: c.update(format_version=0), "format_version")


def test_data_digest_in_a_version_1_file_is_refused(ctx):
    _config_case(ctx, lambda c: c.update(format_version=1, tensor_data_sha256="0" * 64),
                 "tensor_data_sha256", "format_version 2")


def test_data_digest_that_is_not_64_hex_digits_is_refused(ctx):
    for bad in ("0" * 63, "A" * 64, "g" * 64, 7):
        _config_case(ctx, lambda c: c.update(tensor_data_sha256=bad), "tensor_data_sha256")


def test_missing_config_section_is_refused_by_name(ctx):
    _config_case(ctx, lambda c: c.pop("lora"), "lora")


def test_unknown_family_is_refused(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(family="vit"), "family")


def test_unknown_ffn_is_refused(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(ffn="geglu"), "ffn")


def test_unknown_pos_interpolation_is_refused(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(pos_embed_interpolation="bilinear"),
                 "pos_embed_interpolation")


def test_threshold_outside_0_1_is_refused(ctx):
    _config_case(ctx, lambda c: c["output"].update(threshold=1.5), "threshold")


def test_zero_std_is_refused(ctx):
    _config_case(ctx, lambda c: c["preprocessing"].update(std=[1.0, 0.0, 1.0]), "std")


def test_non_positive_layernorm_eps_is_refused(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(layernorm_eps=0), "layernorm_eps")


def test_unknown_lora_handling_is_refused(ctx):
    _config_case(ctx, lambda c: c["lora"].update(handling="fuse"), "handling")


def test_depth_as_a_string_is_refused(ctx):
    _config_case(ctx, lambda c: c["architecture"].update(depth="2"), "depth")


# --------------------------------------------------------------------------------------------
# the tensor data digest (format_version 2)


def _written_with_digest(ctx, name="digest.safetensors"):
    path = h.genmodel(ctx, name, "--embed-dim", 64, "--heads", 1, "--depth", 2, "--registers", 4,
                      "--input-size", SIZE, "--name", "tiny-digest")
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack_from("<Q", raw, 0)
    cfg = json.loads(json.loads(raw[8:8 + n])["__metadata__"]["stopcal.config"])
    check(cfg["format_version"] == 3, f"the writer writes format_version 3: {cfg['format_version']}")
    check(cfg.get(sm.DIGEST_KEY) == hashlib.sha256(raw[8 + n:]).hexdigest(),
          "tensor_data_sha256 is the SHA-256 of the data section")
    return path, raw, 8 + n


def test_one_flipped_weight_byte_is_refused_as_corrupted(ctx):
    path, raw, start = _written_with_digest(ctx)
    _same_logits_as_reference(ctx, path, "digest-intact")  # the intact file loads
    # The first and last data bytes and one inside a block weight: any changed byte is caught.
    for at in (start, start + (len(raw) - start) // 2 + 1, len(raw) - 1):
        bad = bytearray(raw)
        bad[at] ^= 0x01
        expect_refusal(ctx, bytes(bad), "corrupted", "SHA-256")


def test_loader_says_whether_the_data_was_verified(ctx):
    path, _, _ = _written_with_digest(ctx)
    r, _ = h.run_infer(ctx, path, [pixels(ctx)], json_out=False)
    check("digest" not in r.stderr, f"a verified file loads quietly: {r.stderr!r}")
    v1 = write(ctx, with_config(ctx, lambda c: c.update(format_version=1)), "v1.safetensors")
    r, _ = h.run_infer(ctx, v1, [pixels(ctx)], json_out=False)
    check("no tensor data digest" in r.stderr and "format_version 1" in r.stderr,
          f"stopcal-infer says the v1 file's data is unverified: {r.stderr!r}")


def test_format_version_1_file_without_digest_loads_and_matches(ctx):
    v1 = write(ctx, with_config(ctx, lambda c: c.update(format_version=1)), "v1.safetensors")
    cfg1, _ = sm.read_model(v1)
    check(cfg1["format_version"] == 1 and sm.DIGEST_KEY not in cfg1, f"a v1 file: {cfg1}")
    _same_logits_as_reference(ctx, v1, "format-version-1")


# --------------------------------------------------------------------------------------------
# valid files in every allowed form


def _same_logits_as_reference(ctx, path, label):
    images = [h.make_image(1, SIZE), h.make_image(2, SIZE)]
    paths = [h.write_pixels(ctx, f"{label}-{i}.f32", im) for i, im in enumerate(images)]
    _, doc = h.run_infer(ctx, path, paths)
    h.compare(ctx, label, h.reference_logits(path, images), doc["results"])
    return [r["logit"] for r in doc["results"]]


def test_f32_f16_and_bf16_files_load_and_match_the_reference(ctx):
    for dtype in ("f32", "f16", "bf16"):
        path = h.genmodel(ctx, f"tiny-{dtype}.safetensors", "--embed-dim", 64, "--heads", 1,
                          "--depth", 2, "--registers", 4, "--input-size", SIZE, "--dtype", dtype)
        _same_logits_as_reference(ctx, path, f"tiny-{dtype}")


def test_header_order_need_not_follow_the_data_order(ctx):
    # FORMAT.md sorts tensors by offset, not by their place in the JSON object.
    cfg, arrays = tiny_model(ctx)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    shuffled = dict(reversed(list(entries.items())))
    path = write(ctx, assemble(shuffled, data, p.metadata), "reversed.safetensors")
    ref = write(ctx, assemble(entries, data, p.metadata), "canonical.safetensors")
    check(_same_logits_as_reference(ctx, path, "reversed-header") ==
          _same_logits_as_reference(ctx, ref, "canonical"), "same logits either way")


def test_unaligned_data_section_loads(ctx):
    # Without the padding the data starts at an odd offset: slower, never wrong.
    cfg, arrays = tiny_model(ctx)
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    raw = assemble(entries, data, p.metadata, pad=False)
    if (len(raw) - len(data)) % 4 == 0:
        p.metadata["note"] = "x"  # one more byte of header moves the data off alignment
        raw = assemble(entries, data, p.metadata, pad=False)
    check((len(raw) - len(data)) % 4 != 0, "the data section really is misaligned")
    _same_logits_as_reference(ctx, write(ctx, raw, "unaligned.safetensors"), "unaligned")


def test_free_form_provenance_and_extra_metadata_load(ctx):
    cfg, arrays = tiny_model(ctx)
    cfg["provenance"].update(trained_on={"images": 371}, notes=["a", "b"])
    p = Parts(cfg, arrays)
    p.metadata["format"] = "pt"  # other safetensors tools add their own metadata
    entries, data = p.header_and_data()
    _same_logits_as_reference(ctx, write(ctx, assemble(entries, data, p.metadata),
                                         "provenance.safetensors"), "provenance")


def test_format_version_1_files_still_load(ctx):
    cfg, arrays = tiny_model(ctx)
    check(cfg["format_version"] == 3, "writers write format_version 3")
    cfg["format_version"] = 1
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    path = write(ctx, assemble(entries, data, p.metadata), "version1.safetensors")
    check(sm.read_model(path)[0]["format_version"] == 1, "read as version 1")
    _same_logits_as_reference(ctx, path, "format_version 1")


def test_aliases_of_format_version_2_load(ctx):
    cfg, arrays = tiny_model(ctx)
    cfg["aliases"] = ["surf/dino_big_lora_tune_posclsreg_may_O2_aug_099", "short"]
    p = Parts(cfg, arrays)
    entries, data = p.header_and_data()
    path = write(ctx, assemble(entries, data, p.metadata), "aliases.safetensors")
    check(sm.read_model(path)[0]["aliases"] == cfg["aliases"], "aliases read back")
    _same_logits_as_reference(ctx, path, "aliases")


if __name__ == "__main__":
    sys.exit(h.main(globals()))
