"""Read a torch.save archive with numpy only, executing nothing that the file names.

torch.save (PyTorch >= 1.6) writes a zip: `<prefix>/data.pkl` (a pickle, protocol 2) plus one
record `<prefix>/data/<key>` per storage, tensors referring to storages by persistent id. A
pickle is a program: unpickling with the standard machinery imports and calls whatever globals
the file names, which is how a malicious checkpoint runs `os.system`. This reader resolves
globals itself:

- the handful that make tensors and plain containers (`torch._utils._rebuild_tensor_v2`,
  storage types, `collections.OrderedDict`, numpy's array reconstruction, ...) map to our own
  functions that build inert objects (`Tensor`, which reads its bytes from the zip on demand);
- anything from a module that can run code (builtins, os, subprocess, importlib, pickle, torch
  outside its data classes, ...) or any name that looks like a function is refused with a
  `CheckpointError` naming it;
- any other class (the training code's model class, argparse.Namespace, torch.optim.AdamW, ...)
  becomes an inert stand-in that records its arguments and state. Nothing is imported, so the
  training package need not be installed and its code never runs.

    obj, info = load("ckpt.pth")      # obj: dicts, lists, Tensor, StandIn, ...
    obj["model_state_dict"]["classifier.2.weight"].numpy()
"""

import _compat_pickle
import collections
import io
import os
import pickle
import zipfile

import numpy as np


class CheckpointError(ValueError):
    """A file this reader refuses; the message names the problem and the file."""


class Refused(pickle.UnpicklingError):
    """Raised while unpickling for something this reader will not build (a global it refuses,
    a malformed tensor); its message is shown as is, other unpickling errors as "malformed"."""


# Storage class name -> (numpy dtype without byte order, torch dtype name)
STORAGE_TYPES = {
    "FloatStorage": ("f4", "float32"),
    "DoubleStorage": ("f8", "float64"),
    "HalfStorage": ("f2", "float16"),
    "BFloat16Storage": ("u2", "bfloat16"),  # raw bits, widened by Tensor.numpy()
    "LongStorage": ("i8", "int64"),
    "IntStorage": ("i4", "int32"),
    "ShortStorage": ("i2", "int16"),
    "CharStorage": ("i1", "int8"),
    "ByteStorage": ("u1", "uint8"),
    "BoolStorage": ("?", "bool"),
    "ComplexFloatStorage": ("c8", "complex64"),
    "ComplexDoubleStorage": ("c16", "complex128"),
    "UntypedStorage": ("u1", "uint8"),  # bytes; _rebuild_tensor_v3 gives the dtype
}
TORCH_DTYPES = {
    "float32": "f4", "float": "f4", "float64": "f8", "double": "f8", "float16": "f2",
    "half": "f2", "bfloat16": "u2", "int64": "i8", "long": "i8", "int32": "i4", "int": "i4",
    "int16": "i2", "short": "i2", "int8": "i1", "uint8": "u1", "bool": "?",
    "complex64": "c8", "complex128": "c16",
}
_CANONICAL_DTYPE = {"float": "float32", "double": "float64", "half": "float16", "long": "int64",
                    "int": "int32", "short": "int16"}

# Modules whose globals can run code, read or write files, or import more: never resolved.
DENIED_MODULES = {
    "builtins", "__builtin__", "os", "posix", "nt", "posixpath", "ntpath", "subprocess", "sys",
    "importlib", "imp", "runpy", "shutil", "socket", "pickle", "_pickle", "cPickle", "marshal",
    "types", "code", "codeop", "pty", "ctypes", "multiprocessing", "threading", "_thread",
    "signal", "functools", "operator", "itertools", "io", "_io", "tempfile", "glob",
    "webbrowser", "http", "urllib", "urllib2", "ftplib", "smtplib", "telnetlib", "asyncio",
    "concurrent", "pdb", "bdb", "timeit", "trace", "inspect", "ast", "shelve", "dbm",
    "zipimport", "pkgutil", "site", "distutils", "setuptools", "pip", "copyreg", "copy_reg",
    "_codecs", "codecs", "platform", "getpass", "gc", "weakref", "ssl", "select", "selectors",
    "mmap", "fcntl", "resource", "sched", "logging", "zipfile", "tarfile", "sqlite3", "uuid",
    "numpy", "torch", "torchvision", "scipy", "pandas", "dill", "cloudpickle", "joblib",
    "yaml", "jinja2", "IPython", "_posixsubprocess", "_winapi", "msvcrt", "winreg",
}
# Names that are functions that act, whatever module claims them.
DENIED_NAMES = {
    "eval", "exec", "execfile", "compile", "system", "popen", "popen2", "popen3", "spawn",
    "spawnl", "spawnv", "spawnve", "spawnlp", "execv", "execve", "execl", "execlp", "call",
    "check_call", "check_output", "run", "Popen", "getoutput", "getstatusoutput",
    "__import__", "import_module", "reload", "getattr", "setattr", "delattr", "globals",
    "locals", "vars", "open", "load", "loads", "apply", "input", "breakpoint", "exit", "quit",
    "fork", "forkpty", "kill", "killpg", "remove", "unlink", "rmdir", "rmtree", "rename",
    "chmod", "chown", "symlink", "write", "writelines", "__reduce__", "__reduce_ex__",
    "__setstate__", "__getattribute__", "__builtins__", "__globals__", "__code__", "attrgetter",
    "methodcaller", "itemgetter", "partial", "start_new_thread", "interact", "runcode",
}
# Lower-case names in other modules that are plain data classes (inert stand-ins are fine).
STANDIN_LOWERCASE = {
    ("datetime", "datetime"), ("datetime", "date"), ("datetime", "time"),
    ("datetime", "timedelta"), ("datetime", "timezone"), ("decimal", "Decimal"),
}
# torch modules whose (capitalised) classes a checkpoint may reference: the optimizer class
# and nn classes. They become stand-ins, never torch's own objects.
TORCH_STANDIN_PREFIXES = ("torch.optim", "torch.nn.modules", "torch.nn.parameter", "torch.nn")


# --------------------------------------------------------------------------------------------
# inert objects


class Storage:
    """One storage record of the archive: its dtype, size and where its bytes are."""

    __slots__ = ("archive", "key", "np_dtype", "dtype_name", "nbytes", "record")

    def __init__(self, archive, key, np_dtype, dtype_name, nbytes, record):
        self.archive, self.key, self.record = archive, key, record
        self.np_dtype, self.dtype_name, self.nbytes = np_dtype, dtype_name, nbytes

    def __setstate__(self, state):
        raise Refused("a storage was given state: not a torch.save archive")

    def __repr__(self):
        return f"Storage({self.key!r}, {self.dtype_name}, {self.nbytes} bytes)"


class Tensor:
    """A tensor of the archive: shape, stride and offset into a storage, read on demand.

    Bounds are checked when it is built, so reading it never touches memory outside its
    storage's record."""

    __slots__ = ("storage", "offset", "shape", "stride", "dtype", "_np_dtype")

    def __init__(self, storage, offset, shape, stride, dtype, np_dtype):
        self.storage, self.offset = storage, offset
        self.shape, self.stride = shape, stride
        self.dtype, self._np_dtype = dtype, np_dtype

    def __setstate__(self, state):
        raise Refused("a tensor was given state: not a torch.save archive")

    @property
    def numel(self):
        n = 1
        for s in self.shape:
            n *= s
        return n

    def raw(self):
        """The tensor's elements as stored (BF16 as uint16 bits), C-contiguous, shape kept."""
        st = self.storage
        item = np.dtype(self._np_dtype).itemsize
        if self.numel == 0:
            return np.zeros(self.shape, dtype=st.archive.byteorder + self._np_dtype)
        extent = self.offset + 1 + sum((s - 1) * d for s, d in zip(self.shape, self.stride))
        buf = st.archive.read_record(st.record, extent * item)
        flat = np.frombuffer(buf, dtype=st.archive.byteorder + self._np_dtype)
        view = np.lib.stride_tricks.as_strided(
            flat[self.offset:], shape=self.shape,
            strides=tuple(d * item for d in self.stride), writeable=False)
        return np.array(view, order="C")  # a copy; keeps 0-d tensors 0-d

    def numpy(self):
        """A float32 copy for floating tensors (F16 and BF16 widened exactly; F64 rounded),
        the stored integer/bool type otherwise."""
        a = self.raw()
        if self.dtype == "bfloat16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32)
        if self.dtype in ("float32", "float16", "float64"):
            return a.astype(np.float32)
        return a.astype(a.dtype.newbyteorder("="))

    def float64(self):
        """The values in float64 (exact for every floating storage type)."""
        a = self.raw()
        if self.dtype == "bfloat16":
            return (a.astype(np.uint32) << np.uint32(16)).view(np.float32).astype(np.float64)
        return a.astype(np.float64)

    def __repr__(self):
        return f"Tensor({self.dtype}, {list(self.shape)})"


class StandIn:
    """An object of a class that was not imported: its constructor arguments and state, kept.

    Attribute access falls through to a dict state, so an argparse.Namespace stand-in reads
    like the real thing (`config.data_transforms`)."""

    _module = "?"
    _qualname = "?"

    def __new__(cls, *args, **kwargs):
        obj = object.__new__(cls)
        obj.__dict__["_args"] = args
        obj.__dict__["_kwargs"] = kwargs
        obj.__dict__["_state"] = None
        return obj

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.__dict__["_state"] = state

    def __getattr__(self, name):
        d = self.fields()
        if name in d:
            return d[name]
        raise AttributeError(f"{self._module}.{self._qualname} stand-in has no field {name!r}")

    # A dict or list subclass is pickled with its items after the object (SETITEMS, APPENDS):
    # keep them too.
    def __setitem__(self, key, value):
        self.__dict__.setdefault("_items", {})[key] = value

    def append(self, value):
        self.__dict__.setdefault("_list", []).append(value)

    def extend(self, values):
        for v in values:
            self.append(v)

    def fields(self):
        """The object's attributes (its pickled state, and its items if it is a dict
        subclass) as a dict, or {}."""
        merged = dict(self.__dict__.get("_items") or {})
        st = self.__dict__.get("_state")
        parts = st if isinstance(st, tuple) and len(st) == 2 else (st,)  # (dict, slots) state
        for part in parts:
            if isinstance(part, dict):
                merged.update(part)
        return merged

    def __repr__(self):
        return f"<{self._module}.{self._qualname} (not imported)>"


def is_standin(obj):
    return isinstance(obj, StandIn)


def standin_name(obj):
    """'module.Name' of a stand-in instance or class."""
    cls = obj if isinstance(obj, type) else type(obj)
    return f"{cls._module}.{cls._qualname}"


class StorageType:
    """What `torch.FloatStorage` and friends resolve to: a dtype marker."""

    __slots__ = ("name", "np_dtype", "dtype_name")

    def __init__(self, name):
        self.name = name
        self.np_dtype, self.dtype_name = STORAGE_TYPES[name]

    def __setstate__(self, state):
        raise Refused("a storage type was given state")

    def __repr__(self):
        return f"torch.{self.name}"


class TorchDtype:
    __slots__ = ("name", "np_dtype")

    def __init__(self, name):
        self.name = _CANONICAL_DTYPE.get(name, name)
        self.np_dtype = TORCH_DTYPES[name]

    def __setstate__(self, state):
        raise Refused("a dtype was given state")

    def __repr__(self):
        return f"torch.{self.name}"


class _Marker:
    """A class name that is only meaningful as an argument (torch.Tensor, builtins.object)."""

    __slots__ = ("name",)

    def __init__(self, name):
        self.name = name

    def __setstate__(self, state):
        raise Refused(f"{self.name} was given state")

    def __repr__(self):
        return self.name


_OBJECT = _Marker("builtins.object")
_TENSOR_TYPES = {("torch", "Tensor"), ("torch._tensor", "Tensor"),
                 ("torch.nn.parameter", "Parameter"), ("torch.nn", "Parameter")}


# --------------------------------------------------------------------------------------------
# the functions a torch pickle may call, re-implemented without side effects


def _ints(v, what):
    if not (isinstance(v, tuple) and all(isinstance(i, int) and not isinstance(i, bool)
                                         for i in v)):
        raise Refused(f"tensor {what} {v!r} is not a tuple of integers")
    return v


def _make_tensor(storage, offset, size, stride, np_dtype, dtype_name):
    if not isinstance(storage, Storage):
        raise Refused(f"tensor storage is {type(storage).__name__}, not a "
                      f"storage record")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise Refused(f"tensor storage offset {offset!r} is invalid")
    size, stride = _ints(tuple(size), "size"), _ints(tuple(stride), "stride")
    if len(size) != len(stride) or len(size) > 16:
        raise Refused(f"tensor size {size} and stride {stride} do not match")
    if any(s < 0 for s in size) or any(d < 0 for d in stride):
        raise Refused(f"tensor size {size} or stride {stride} is negative")
    item = np.dtype(np_dtype).itemsize
    if storage.nbytes % item:
        raise Refused(f"storage {storage.key}: {storage.nbytes} bytes is not a "
                      f"whole number of {dtype_name} elements")
    n_elems = storage.nbytes // item
    if all(s > 0 for s in size):
        last = offset + sum((s - 1) * d for s, d in zip(size, stride))
        if last >= n_elems:
            raise Refused(f"tensor of size {list(size)}, stride {list(stride)}, offset "
                          f"{offset} reaches element {last} of storage {storage.key}, which "
                          f"holds {n_elems}")
    return Tensor(storage, offset, size, stride, dtype_name, np_dtype)


def _rebuild_tensor(storage, storage_offset, size, stride, *_ignored):
    if not isinstance(storage, Storage):
        raise Refused("tensor without a storage record")
    return _make_tensor(storage, storage_offset, size, stride, storage.np_dtype,
                        storage.dtype_name)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, hooks, dtype,
                       *_ignored):
    if not isinstance(dtype, TorchDtype):
        raise Refused(f"tensor dtype {dtype!r} is not a torch dtype")
    return _make_tensor(storage, storage_offset, size, stride, dtype.np_dtype, dtype.name)


def _rebuild_parameter(data, *_ignored):
    if not isinstance(data, Tensor):
        raise Refused("parameter without tensor data")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    if not any(func is f for f in _REBUILDERS):
        raise Refused("tensor subclass rebuilt by an unexpected function")
    if not any(new_type is m for m in _TENSOR_MARKERS.values()):
        raise Refused(f"tensor subclass {new_type!r} is not supported")
    if not isinstance(args, tuple):
        raise Refused("tensor rebuild arguments are not a tuple")
    return func(*args)


def _unsupported_tensor(kind):
    def refuse(*_args):
        raise Refused(f"{kind} tensors are not supported (only dense CPU "
                      f"tensors)")
    return refuse


def _codecs_encode(text, encoding="utf-8"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise Refused("_codecs.encode is only accepted as protocol 2's bytes "
                      "encoding (str, 'latin1')")
    return text.encode("latin-1")


def _ordered_dict(*args):
    if args and not isinstance(args[0], (list, tuple, dict)):
        raise Refused("OrderedDict built from an unexpected argument")
    return collections.OrderedDict(*args)


def _defaultdict(*args):
    # The default factory would be called on a missing key; we keep a plain dict instead.
    return dict(args[1]) if len(args) > 1 and isinstance(args[1], dict) else {}


def _torch_device(*args):
    if not (1 <= len(args) <= 2 and all(isinstance(a, (str, int)) for a in args)):
        raise Refused("torch.device from an unexpected argument")
    return "device(" + ", ".join(map(repr, args)) + ")"


def _torch_size(*args):
    if len(args) != 1:
        raise Refused("torch.Size takes one tuple")
    return _ints(tuple(args[0]), "size")


def _small_bytes(kind):
    def make(*args):
        if not args:
            return kind()
        if len(args) <= 2 and isinstance(args[0], (bytes, bytearray, list)):
            if isinstance(args[0], list) and (len(args[0]) > 1 << 24 or not all(
                    isinstance(b, int) for b in args[0])):
                raise Refused(f"{kind.__name__} from an unexpected list")
            return kind(args[0])
        if len(args) == 2 and isinstance(args[0], str) and args[1] in ("latin1", "latin-1"):
            return kind(args[0], "latin-1")
        raise Refused(f"{kind.__name__}{args!r:.60} is not accepted")
    return make


def _collection(kind):
    def make(*args):
        if not args:
            return kind()
        if len(args) == 1 and isinstance(args[0], (list, tuple, set, frozenset)):
            return kind(args[0])
        raise Refused(f"{kind.__name__} from an unexpected argument")
    return make


def _complex(*args):
    if not all(isinstance(a, (int, float)) for a in args) or len(args) > 2:
        raise Refused("complex from an unexpected argument")
    return complex(*args)


def _slice(*args):
    if len(args) > 3 or not all(a is None or isinstance(a, int) for a in args):
        raise Refused("slice from an unexpected argument")
    return slice(*args)


def _reconstructor(cls, base, state):
    """copyreg._reconstructor (protocols 0 and 1) for stand-in classes only."""
    if isinstance(cls, type) and issubclass(cls, StandIn) and base is _OBJECT:
        obj = cls.__new__(cls)
        if state is not None:
            obj.__setstate__(state)
        return obj
    raise Refused("copyreg._reconstructor is only accepted for plain classes")


def _np_reconstruct(cls, shape, code):
    if cls is not np.ndarray or tuple(shape) != (0,) or not isinstance(code, bytes):
        raise Refused("numpy array reconstruction with unexpected arguments")
    return np.ndarray.__new__(np.ndarray, (0,), np.uint8)


def _np_dtype(spec, align=False, copy=False):
    if not isinstance(spec, str) or len(spec) > 8:
        raise Refused(f"numpy dtype {spec!r:.40} is not accepted")
    dt = np.dtype(spec)
    if dt.hasobject:
        raise Refused("numpy object arrays are not accepted")
    return dt


def _np_scalar(dtype, raw=None):
    if not isinstance(dtype, np.dtype) or dtype.hasobject or not isinstance(raw, bytes):
        raise Refused("numpy scalar with unexpected arguments")
    if len(raw) != dtype.itemsize:
        raise Refused("numpy scalar of the wrong byte length")
    return np.frombuffer(raw, dtype=dtype)[0]


_TENSOR_MARKERS = {key: _Marker(".".join(key)) for key in _TENSOR_TYPES}

class _Safe:
    """One of our functions as a pickle sees it: callable, but with no attributes that a
    BUILD opcode could overwrite (a plain function's __defaults__ or __dict__ could be)."""

    __slots__ = ("_fn",)

    def __init__(self, fn):
        object.__setattr__(self, "_fn", fn)

    def __call__(self, *args, **kwargs):
        return self._fn(*args, **kwargs)

    def __setattr__(self, name, value):
        raise Refused("a function was given state")

    def __setstate__(self, state):
        raise Refused("a function was given state")

    def __repr__(self):
        return f"<safe {self._fn.__name__}>"


_FUNCTIONS = {
    ("torch._utils", "_rebuild_tensor_v2"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor"): _rebuild_tensor,
    ("torch._utils", "_rebuild_tensor_v3"): _rebuild_tensor_v3,
    ("torch._utils", "_rebuild_parameter"): _rebuild_parameter,
    ("torch._utils", "_rebuild_parameter_with_state"): _rebuild_parameter,
    ("torch._tensor", "_rebuild_from_type_v2"): _rebuild_from_type_v2,
    ("torch._utils", "_rebuild_sparse_tensor"): _unsupported_tensor("sparse"),
    ("torch._utils", "_rebuild_sparse_csr_tensor"): _unsupported_tensor("sparse"),
    ("torch._utils", "_rebuild_qtensor"): _unsupported_tensor("quantized"),
    ("torch._utils", "_rebuild_meta_tensor_no_storage"): _unsupported_tensor("meta"),
    ("torch._utils", "_rebuild_wrapper_subclass"): _unsupported_tensor("subclass"),
    ("torch._utils", "_rebuild_device_tensor_from_numpy"): _unsupported_tensor("numpy-backed"),
    ("torch._utils", "_rebuild_nested_tensor"): _unsupported_tensor("nested"),
    ("torch", "Size"): _torch_size,
    ("torch", "device"): _torch_device,
    ("collections", "OrderedDict"): _ordered_dict,
    ("collections", "defaultdict"): _defaultdict,
    ("_codecs", "encode"): _codecs_encode,
    ("copyreg", "_reconstructor"): _reconstructor,
    ("builtins", "set"): _collection(set),
    ("builtins", "frozenset"): _collection(frozenset),
    ("builtins", "bytearray"): _small_bytes(bytearray),
    ("builtins", "bytes"): _small_bytes(bytes),
    ("builtins", "complex"): _complex,
    ("builtins", "slice"): _slice,
    ("numpy.core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _np_reconstruct,
    ("numpy", "dtype"): _np_dtype,
    ("numpy.core.multiarray", "scalar"): _np_scalar,
    ("numpy._core.multiarray", "scalar"): _np_scalar,
}
ALLOWED = {key: _Safe(fn) for key, fn in _FUNCTIONS.items()}
ALLOWED[("builtins", "object")] = _OBJECT
ALLOWED[("numpy", "ndarray")] = np.ndarray  # only as _reconstruct's first argument
_REBUILDERS = tuple(ALLOWED[("torch._utils", n)] for n in (
    "_rebuild_tensor_v2", "_rebuild_tensor", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state"))
for _key in _TENSOR_TYPES:
    ALLOWED[_key] = _TENSOR_MARKERS[_key]


_standin_classes = {}


def _check_denied(module, name):
    """Refused unless module.name may become an inert stand-in (a torch nn/optim class, or a
    class of a module that cannot run code)."""
    top = module.split(".", 1)[0]
    parts = name.split(".")
    qual = f"{module}.{name}"
    if any(p in DENIED_NAMES for p in parts) or any(p.startswith("__") for p in parts):
        raise Refused(f"refusing {qual}: it is a function that can run code or touch files, and "
                      f"a checkpoint's data never needs one")
    if top == "torch" and module.startswith(TORCH_STANDIN_PREFIXES) and name[:1].isupper():
        return
    if top in DENIED_MODULES:
        raise Refused(f"refusing {qual}: module {top} can run code, and only tensors, "
                      f"containers and plain classes are accepted")


def _standin_class(module, name):
    key = (module, name)
    if key not in _standin_classes:
        _standin_classes[key] = type(name.rsplit(".", 1)[-1], (StandIn,),
                                     {"_module": module, "_qualname": name,
                                      "__module__": "stopcal.standin"})
    return _standin_classes[key]


def python3_name(module, name):
    """The Python 3 name of a protocol 0-2 global (`__builtin__.eval` → `builtins.eval`,
    `commands.getoutput` → `subprocess.getoutput`), as pickle's own find_class maps it."""
    if (module, name) in _compat_pickle.NAME_MAPPING:
        return _compat_pickle.NAME_MAPPING[(module, name)]
    return _compat_pickle.IMPORT_MAPPING.get(module, module), name


def resolve_global(module, name):
    """What a pickle's GLOBAL module.name becomes here, or Refused."""
    if not (isinstance(module, str) and isinstance(name, str)):
        raise Refused("global with a non-string name")
    module, name = python3_name(module, name)
    key = (module, name)
    if key in ALLOWED:
        return ALLOWED[key]
    if module == "torch" and name in STORAGE_TYPES:
        return StorageType(name)
    if module == "torch" and name in TORCH_DTYPES:
        return TorchDtype(name)
    _check_denied(module, name)
    if name[:1].isupper() or key in STANDIN_LOWERCASE:
        return _standin_class(module, name)
    raise Refused(f"refusing {module}.{name}: it looks like a function (a checkpoint's data "
                  f"needs classes only), and it is never imported or called")


# --------------------------------------------------------------------------------------------
# the archive


class Archive:
    """An open torch.save zip: its record prefix, byte order, and storage records."""

    def __init__(self, path):
        self.path = path
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as e:
            raise CheckpointError(f"{path}: not a readable zip archive ({e})") from None
        names = self.zip.namelist()
        pkls = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if not pkls:
            if any(n.endswith("constants.pkl") or "/code/" in n for n in names):
                raise CheckpointError(f"{path}: a TorchScript archive (torch.jit.save), not a "
                                      f"torch.save checkpoint")
            raise CheckpointError(f"{path}: zip archive without a <name>/data.pkl record: "
                                  f"not a torch.save checkpoint")
        if len(pkls) > 1:
            raise CheckpointError(f"{path}: {len(pkls)} data.pkl records, expected one")
        self.prefix = pkls[0][:-len("data.pkl")]
        self.byteorder = "<"
        bo = self.prefix + "byteorder"
        if bo in names:
            order = self.zip.read(bo).decode("ascii", "replace").strip()
            if order not in ("little", "big"):
                raise CheckpointError(f"{path}: byteorder record says {order!r}")
            self.byteorder = "<" if order == "little" else ">"
        self.version = None
        ver = self.prefix + "version"
        if ver in names:
            self.version = self.zip.read(ver)[:16].decode("ascii", "replace").strip()
        self.infos = {i.filename: i for i in self.zip.infolist()}
        self.storages = {}
        self.globals_seen = []

    def storage(self, key, storage_type):
        if not isinstance(key, str) or "/" in key or key in (".", ".."):
            raise Refused(f"storage key {key!r} is invalid")
        if not isinstance(storage_type, StorageType):
            raise Refused(f"storage type {storage_type!r} is not a torch storage")
        if key in self.storages:
            st = self.storages[key]
            if st.np_dtype != storage_type.np_dtype and storage_type.name != "UntypedStorage":
                raise Refused(f"storage {key} used with two dtypes")
            return st
        record = f"{self.prefix}data/{key}"
        info = self.infos.get(record)
        if info is None:
            raise Refused(f"storage record data/{key} is missing from the archive")
        if info.compress_type != zipfile.ZIP_STORED:
            raise Refused(f"storage record data/{key} is compressed; torch.save "
                          f"stores records uncompressed")
        st = Storage(self, key, storage_type.np_dtype, storage_type.dtype_name, info.file_size,
                     record)
        self.storages[key] = st
        return st

    def read_record(self, record, nbytes):
        """The first nbytes of a stored record (checked against its size)."""
        info = self.infos[record]
        if nbytes > info.file_size:
            raise CheckpointError(f"{self.path}: record {record} holds {info.file_size} bytes, "
                                  f"{nbytes} needed")
        with self.zip.open(info) as f:
            data = f.read(nbytes)
        if len(data) != nbytes:
            raise CheckpointError(f"{self.path}: record {record} is truncated")
        return data


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, archive):
        super().__init__(file)
        self.archive = archive

    def find_class(self, module, name):
        self.archive.globals_seen.append(".".join(python3_name(module, name)))
        return resolve_global(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 4 and pid[0] == "storage"):
            raise Refused(f"persistent id {pid!r:.80} is not a torch storage")
        return self.archive.storage(pid[2], pid[1])


# pickle.dumps(0x1950a86a20f9469cfc6c, protocol=2): how the pre-zip torch.save format begins
LEGACY_MAGIC = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"


def sniff(path):
    """'zip', 'safetensors', 'legacy-torch', 'pickle' or 'unknown', from the first bytes."""
    with open(path, "rb") as f:
        head = f.read(16)
        if head[:4] == b"PK\x03\x04":
            return "zip"
        f.seek(257)
        tar = f.read(5)
    if len(head) >= 9 and head[8:9] == b"{":
        n = int.from_bytes(head[:8], "little")
        if 2 <= n <= 100 * 1024 * 1024:
            return "safetensors"
    if head[:14] == LEGACY_MAGIC:
        return "legacy-torch"
    if tar == b"ustar":
        return "legacy-torch"
    if head[:1] == b"\x80":
        return "pickle"
    return "unknown"


def load(path):
    """Unpickle a torch.save archive safely. Returns (object, Archive).

    Raises CheckpointError with a message naming the file and the problem: not a zip, a legacy
    (pre-1.6) or TorchScript file, a refused global, a malformed pickle or tensor."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: no such file")
    kind = sniff(path)
    if kind in ("legacy-torch", "pickle"):
        raise CheckpointError(f"{path}: a legacy torch.save file (PyTorch < 1.6 format, or a "
                              f"bare pickle); re-save it with a current torch.save, which writes "
                              f"a zip archive")
    if kind != "zip":
        raise CheckpointError(f"{path}: not a torch.save zip archive")
    archive = Archive(path)
    try:
        raw = archive.zip.read(archive.prefix + "data.pkl")
    except (zipfile.BadZipFile, OSError, RuntimeError) as e:
        raise CheckpointError(f"{path}: cannot read data.pkl ({e})") from None
    try:
        obj = _Unpickler(io.BytesIO(raw), archive).load()
    except CheckpointError:
        raise
    except Refused as e:
        raise CheckpointError(f"{path}: {e}") from None
    except Exception as e:  # a malformed pickle raises anything from EOFError to TypeError
        raise CheckpointError(f"{path}: malformed pickle in data.pkl "
                              f"({type(e).__name__}: {e})") from None
    return obj, archive
