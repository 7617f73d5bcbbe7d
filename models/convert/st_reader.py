"""Read any safetensors file (a Hugging Face backbone, or a stopcal model file) lazily, numpy only.

Unlike models/stopcal_model.py's reader, which enforces FORMAT.md, this one accepts what
Hugging Face writes: more dtypes (F64, integer types), any tensor names, any order. It still
checks every offset against the file, so a malformed header is refused, never followed.
"""

import json
import math
import os
import struct

import numpy as np

MAX_HEADER_BYTES = 100 * 1024 * 1024
_NP = {"F32": "<f4", "F16": "<f2", "BF16": "<u2", "F64": "<f8", "I64": "<i8", "I32": "<i4",
       "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "?"}


class SafetensorsError(ValueError):
    pass


class STTensor:
    """One tensor of a safetensors file, read on demand (same interface as torchzip.Tensor)."""

    __slots__ = ("path", "begin", "end", "shape", "st_dtype")

    def __init__(self, path, begin, end, shape, st_dtype):
        self.path, self.begin, self.end = path, begin, end
        self.shape, self.st_dtype = tuple(shape), st_dtype

    @property
    def dtype(self):
        return {"F32": "float32", "F16": "float16", "BF16": "bfloat16", "F64": "float64"}.get(
            self.st_dtype, self.st_dtype.lower())

    def raw(self):
        with open(self.path, "rb") as f:
            f.seek(self.begin)
            buf = f.read(self.end - self.begin)
        if len(buf) != self.end - self.begin:
            raise SafetensorsError(f"{self.path}: truncated tensor data")
        return np.frombuffer(buf, dtype=_NP[self.st_dtype]).reshape(self.shape)

    def numpy(self):
        a = self.raw()
        if self.st_dtype == "BF16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        if self.st_dtype in ("F32", "F16", "F64"):
            return a.astype(np.float32)
        return a.astype(a.dtype.newbyteorder("="))

    def float64(self):
        a = self.raw()
        if self.st_dtype == "BF16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
        return a.astype(np.float64)

    def __repr__(self):
        return f"Tensor({self.dtype}, {list(self.shape)})"


def read(path):
    """Parse a safetensors header. Returns (metadata dict or None, {name: STTensor})."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise SafetensorsError(f"{path}: truncated (no header length)")
        (n,) = struct.unpack("<Q", head)
        if n > MAX_HEADER_BYTES or 8 + n > size:
            raise SafetensorsError(f"{path}: header length {n} is past the end of the file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as e:
            raise SafetensorsError(f"{path}: header JSON is invalid ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header JSON is not an object")
    metadata = header.pop("__metadata__", None)
    start, data_len = 8 + n, size - 8 - n
    tensors = {}
    for name, e in header.items():
        if not (isinstance(e, dict) and {"dtype", "shape", "data_offsets"} <= set(e)):
            raise SafetensorsError(f"{path}: tensor {name}: malformed header entry")
        dtype, shape, offs = e["dtype"], e["shape"], e["data_offsets"]
        if dtype not in _NP:
            raise SafetensorsError(f"{path}: tensor {name}: dtype {dtype!r} is not supported")
        if not (isinstance(shape, list) and all(isinstance(d, int) and d >= 0 for d in shape)):
            raise SafetensorsError(f"{path}: tensor {name}: shape {shape!r} is invalid")
        if not (isinstance(offs, list) and len(offs) == 2 and all(isinstance(o, int)
                                                                  for o in offs)):
            raise SafetensorsError(f"{path}: tensor {name}: data_offsets {offs!r} are invalid")
        begin, end = offs
        want = math.prod(shape) * np.dtype(_NP[dtype]).itemsize
        if not (0 <= begin <= end <= data_len) or end - begin != want:
            raise SafetensorsError(f"{path}: tensor {name}: data_offsets {offs} do not hold "
                                   f"shape {shape} of {dtype} within the file")
        tensors[name] = STTensor(path, start + begin, start + end, shape, dtype)
    return metadata, tensors
