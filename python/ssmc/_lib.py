"""_lib.py: the ctypes binding of libssmc.so (include/ssmc.h).

Finds the shared library (SSMC_LIBRARY, else beside the package, else the
build tree of the checkout the package lives in), declares the structs and
functions of the public header, and wraps failures into ssmc.Error with the
library's diagnostic text. Nothing here knows torch: it moves pointers.

The structs mirror ssmc.h field by field; tests/python/test_abi.py checks
their sizes and offsets against a C program compiled from the header
(tests/python/abi_probe.c). The gradient functions (ssmc_forward_train,
ssmc_backward, ...) are optional: a library without them is usable for
forward runs, and `Library.has_grad` says which one was loaded.
"""
import ctypes
import os
import threading

__all__ = ["Error", "library", "find_library"]


class Error(RuntimeError):
    """An error from ssmc: the library's diagnostic text (file:line:col:
    error: ..., the source line and a caret), or the binding's own message
    for what the library is never asked (a tensor of the wrong shape, dtype
    or device). `status` is the library's status name ("source error",
    "bad argument", ...) or None."""

    def __init__(self, message, status=None):
        super().__init__(message)
        self.status = status


# ---- the structs of ssmc.h

MAX_RANK = 8

# enum ssmc_device, ssmc_algo, ssmc_dtype, ssmc_role, ssmc_status
DEVICE_INTERP, DEVICE_CPU, DEVICE_CUDA = 0, 1, 2
ALGOS = {"auto": 0, "recurrent": 1, "chunked": 2, "scan": 3}
F32, F16, BF16, F64 = 0, 1, 2, 3
ROLE_INPUT, ROLE_PARAM, ROLE_STATE, ROLE_OUTPUT = 0, 1, 2, 3
OK, ERR_SOURCE, ERR_ARG, ERR_IO, ERR_NOMEM, ERR_UNSUPPORTED, ERR_BACKEND, ERR_NUMERIC = range(8)


class Dim(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("value", ctypes.c_int64)]


class Options(ctypes.Structure):
    # `_reserved` is not in ssmc.h: zeros after the last field, so that a
    # library whose struct has grown at its end reads its defaults there
    _fields_ = [
        ("model", ctypes.c_char_p),
        ("dims", ctypes.POINTER(Dim)),
        ("ndims", ctypes.c_int),
        ("device", ctypes.c_int),
        ("algo", ctypes.c_int),
        ("threads", ctypes.c_int),
        ("cuda_arch", ctypes.c_char_p),
        ("check_finite", ctypes.c_int),
        ("grad_chunk", ctypes.c_int64),
        ("chunk", ctypes.c_int),
        ("_reserved", ctypes.c_int64 * 16),
    ]


class Arg(ctypes.Structure):
    # ssmc_arg: flags 0, or ARG_FINAL_ONLY for a state only written with its final value
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("data", ctypes.c_void_p), ("flags", ctypes.c_uint)]


ARG_FINAL_ONLY = 1


class TensorInfo(ctypes.Structure):
    _fields_ = [
        ("name", ctypes.c_char_p),
        ("role", ctypes.c_int),
        ("per_step", ctypes.c_int),
        ("rank", ctypes.c_int),
        ("shape", ctypes.c_int64 * MAX_RANK),
    ]


class GradInfo(ctypes.Structure):
    _fields_ = [
        ("chunk", ctypes.c_int64),
        ("checkpoints", ctypes.c_int64),
        ("state_bytes", ctypes.c_size_t),
        ("tape_bytes", ctypes.c_size_t),
        ("backward_bytes", ctypes.c_size_t),
    ]


_p = ctypes.c_void_p
_args = ctypes.POINTER(Arg)
_i64 = ctypes.c_int64
_int = ctypes.c_int
_status = ctypes.c_int

# name: (restype, argtypes); the gradient functions are optional
_FUNCTIONS = {
    "ssmc_ctx_new": (_p, []),
    "ssmc_ctx_free": (None, [_p]),
    "ssmc_ctx_error": (ctypes.c_char_p, [_p]),
    "ssmc_status_name": (ctypes.c_char_p, [_status]),
    "ssmc_compile": (_status, [_p, ctypes.c_char_p, ctypes.c_char_p, ctypes.c_size_t,
                               ctypes.POINTER(Options), ctypes.POINTER(_p)]),
    "ssmc_model_free": (None, [_p]),
    "ssmc_model_name": (ctypes.c_char_p, [_p]),
    "ssmc_model_num_tensors": (_int, [_p]),
    "ssmc_model_tensor": (_status, [_p, _int, ctypes.POINTER(TensorInfo)]),
    "ssmc_run": (_status, [_p, _i64, _i64, _args, _int]),
    "ssmc_run_device": (_status, [_p, _i64, _i64, _args, _int, _p]),
}
_GRAD_FUNCTIONS = {
    "ssmc_grad_info_of": (_status, [_p, _i64, ctypes.POINTER(GradInfo)]),
    "ssmc_forward_train": (_status, [_p, _i64, _i64, _args, _int, ctypes.POINTER(_p)]),
    "ssmc_backward": (_status, [_p, _p, _args, _int, _args, _int, _args, _int]),
    "ssmc_forward_train_device": (_status, [_p, _i64, _i64, _args, _int, ctypes.POINTER(_p), _p]),
    "ssmc_backward_device": (_status, [_p, _p, _args, _int, _args, _int, _args, _int, _p]),
    "ssmc_tape_bytes": (ctypes.c_size_t, [_p]),
    "ssmc_tape_free": (None, [_p]),
}


def _candidates():
    """Where the library may be, in order (SPEC §6)."""
    env = os.environ.get("SSMC_LIBRARY")
    if env:
        return [env], True
    here = os.path.dirname(os.path.abspath(__file__))
    repo = os.path.dirname(os.path.dirname(here))  # python/ssmc -> the checkout
    return [os.path.join(here, "libssmc.so"), os.path.join(repo, "build", "libssmc.so")], False


def find_library():
    """The path of the libssmc.so this package loads."""
    paths, from_env = _candidates()
    for p in paths:
        if os.path.isfile(p):
            return p
    if from_env:
        raise Error(f"SSMC_LIBRARY is {paths[0]!r}, which is not a file")
    raise Error("cannot find libssmc.so: set SSMC_LIBRARY to its path, install the package "
                "(pip install ./python), or build the checkout (cmake -S . -B build && cmake --build build); "
                "looked in " + ", ".join(paths))


class Library:
    """The loaded library: its functions as attributes, plus a few helpers."""

    def __init__(self, path):
        self.path = path
        try:
            self.dll = ctypes.CDLL(path)
        except OSError as e:
            raise Error(f"cannot load {path}: {e}") from None
        for name, (res, args) in _FUNCTIONS.items():
            try:
                fn = getattr(self.dll, name)
            except AttributeError:
                raise Error(f"{path} has no function {name}: not a libssmc.so of this version") from None
            fn.restype, fn.argtypes = res, args
            setattr(self, name[5:], fn)
        self.has_grad = all(hasattr(self.dll, n) for n in _GRAD_FUNCTIONS)
        if self.has_grad:
            for name, (res, args) in _GRAD_FUNCTIONS.items():
                fn = getattr(self.dll, name)
                fn.restype, fn.argtypes = res, args
                setattr(self, name[5:], fn)

    def status_text(self, status):
        return self.status_name(status).decode()


_lock = threading.Lock()
_library = None


def library():
    """The library, loaded on first use (so that importing ssmc never fails)."""
    global _library
    with _lock:
        if _library is None:
            _library = Library(find_library())
        return _library


def make_args(pairs):
    """An ssmc_arg array from (name bytes, dtype code, address[, flags])
    tuples (flags 0 when left out)."""
    arr = (Arg * max(len(pairs), 1))()
    for i, pair in enumerate(pairs):
        name, dtype, ptr = pair[:3]
        arr[i].name, arr[i].dtype, arr[i].data = name, dtype, ptr
        arr[i].flags = pair[3] if len(pair) > 3 else 0
    return arr, len(pairs)
