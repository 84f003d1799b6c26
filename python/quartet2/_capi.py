"""ctypes binding of libquartet2_c (include/quartet2/quartet2.h). No torch here: the tensors
are q2_tensor structs over raw pointers, so this module also runs where torch is absent (the
CTest smoke test). Every failing call raises an Error subclass carrying the library's message.

The library is found at $QUARTET2_LIBRARY, else next to this file (a copy made at install),
else in the build/ folder of the source checkout this package sits in.
"""
import ctypes
import os
import pathlib

API_VERSION = 1  # Q2_API_VERSION of the header this binding follows

# q2_device, q2_dtype, q2_scale_layout, q2_quantizer
CPU, CUDA = 0, 1
FLOAT32, BFLOAT16 = 0, 1
SCALES_ROW_MAJOR, SCALES_BLOCKED = 0, 1
RTN, FOUR_OVER_SIX = 0, 1


class Error(RuntimeError):
    """A q2_status other than Q2_OK; str() is q2_last_error()."""

    def __init__(self, status, message):
        super().__init__(message)
        self.status = status


class InvalidArgument(Error, ValueError):
    """Null pointer, bad shape, dtype, enum value or alignment; unknown scheme; wrong device."""


class Unsupported(Error, NotImplementedError):
    """CUDA absent from the library or the machine, or a scheme the CUDA layer cannot run."""


class OutOfMemory(Error, MemoryError):
    pass


_ERRORS = {1: InvalidArgument, 2: InvalidArgument, 3: InvalidArgument, 4: InvalidArgument, 5: Unsupported,
           7: OutOfMemory}


class Tensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("rows", ctypes.c_int64), ("cols", ctypes.c_int64),
                ("dtype", ctypes.c_int), ("device", ctypes.c_int)]


class NVFP4(ctypes.Structure):
    _fields_ = [("packed", ctypes.c_void_p), ("scales", ctypes.c_void_p), ("tensor_scale", ctypes.c_void_p),
                ("rows", ctypes.c_int64), ("cols", ctypes.c_int64), ("layout", ctypes.c_int),
                ("device", ctypes.c_int)]


class LinearInfo(ctypes.Structure):
    _fields_ = [("in_features", ctypes.c_int64), ("out_features", ctypes.c_int64), ("device", ctypes.c_int),
                ("in_multiple", ctypes.c_int64), ("out_multiple", ctypes.c_int64),
                ("token_multiple", ctypes.c_int64), ("borrows_input", ctypes.c_int)]


def _candidates():
    env = os.environ.get("QUARTET2_LIBRARY")
    if env:
        return [pathlib.Path(env)]
    here = pathlib.Path(__file__).resolve().parent
    return [here / "libquartet2_c.so", here.parent.parent / "build" / "libquartet2_c.so"]


def _load():
    tried = _candidates()
    for path in tried:
        if path.is_file():
            lib = ctypes.CDLL(str(path))
            break
    else:
        raise OSError("libquartet2_c.so not found (tried " + ", ".join(map(str, tried)) +
                      "): build the CMake target quartet2_c and set QUARTET2_LIBRARY to it")
    P, i64, st = ctypes.POINTER, ctypes.c_int64, ctypes.c_int
    vp = ctypes.c_void_p
    sigs = {
        "q2_last_error": (ctypes.c_char_p, []),
        "q2_api_version": (ctypes.c_int, []),
        "q2_linear_create": (st, [ctypes.c_char_p, i64, i64, ctypes.c_int, P(vp)]),
        "q2_linear_destroy": (None, [vp]),
        "q2_linear_get_info": (st, [vp, P(LinearInfo)]),
        "q2_linear_forward": (st, [vp, P(Tensor), P(Tensor), P(Tensor), P(vp), vp]),
        "q2_linear_backward": (st, [vp, P(Tensor), ctypes.c_uint64, P(Tensor), P(Tensor), vp]),
        "q2_context_saved_bytes": (st, [vp, P(ctypes.c_size_t)]),
        "q2_context_destroy": (None, [vp]),
        "q2_nvfp4_scale_bytes": (st, [i64, i64, ctypes.c_int, P(ctypes.c_size_t)]),
        "q2_nvfp4_quantize": (st, [ctypes.c_int, P(Tensor), P(NVFP4), vp]),
        "q2_nvfp4_dequantize": (st, [P(NVFP4), P(Tensor), vp]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype, f.argtypes = res, args
    if lib.q2_api_version() != API_VERSION:
        raise OSError(f"{path}: C API version {lib.q2_api_version()}, this package needs {API_VERSION}")
    return lib


_lib = None


def lib():
    global _lib
    if _lib is None:
        _lib = _load()
    return _lib


def check(status):
    if status != 0:
        raise _ERRORS.get(status, Error)(status, lib().q2_last_error().decode())


def _ref(t):
    return None if t is None else ctypes.byref(t)


class Context:
    """What one forward saved for its backward (q2_context); freed by close() or when dropped."""

    def __init__(self, handle):
        self._handle = handle

    def backward(self, dy, seed, dx, dw, stream=None):
        if not self._handle:
            raise Error(0, "this context was closed (backward after its saved tensors were freed)")
        check(lib().q2_linear_backward(self._handle, ctypes.byref(dy), seed, _ref(dx), ctypes.byref(dw), stream))

    def saved_bytes(self):
        n = ctypes.c_size_t()
        check(lib().q2_context_saved_bytes(self._handle, ctypes.byref(n)))
        return n.value

    def __reduce__(self):
        raise TypeError("a quartet2 context (saved tensors of one forward) cannot be copied")

    def close(self):
        if self._handle and _lib is not None:
            _lib.q2_context_destroy(self._handle)
        self._handle = None

    __del__ = close


class Linear:
    """A q2_linear: `scheme` on `device` (CPU or CUDA) for in_features -> out_features."""

    def __init__(self, scheme, in_features, out_features, device):
        self._args = (scheme, in_features, out_features, device)
        handle = ctypes.c_void_p()
        check(lib().q2_linear_create(scheme.encode(), in_features, out_features, device, ctypes.byref(handle)))
        self._handle = handle
        self.info = LinearInfo()
        check(lib().q2_linear_get_info(handle, ctypes.byref(self.info)))

    def forward(self, x, w, y, keep, stream=None):
        """y = x w^T; returns the Context when keep, else None."""
        ctx = ctypes.c_void_p()
        check(lib().q2_linear_forward(self._handle, ctypes.byref(x), ctypes.byref(w), ctypes.byref(y),
                                      ctypes.byref(ctx) if keep else None, stream))
        return Context(ctx) if keep else None

    # A copy (copy.deepcopy, pickle) is a new layer of the same arguments, never a shared handle.
    def __reduce__(self):
        return Linear, self._args

    def __del__(self):
        if getattr(self, "_handle", None) and _lib is not None:
            _lib.q2_linear_destroy(self._handle)
        self._handle = None


def scale_bytes(rows, cols, layout):
    n = ctypes.c_size_t()
    check(lib().q2_nvfp4_scale_bytes(rows, cols, layout, ctypes.byref(n)))
    return n.value


def quantize(quantizer, x, out, stream=None):
    check(lib().q2_nvfp4_quantize(quantizer, ctypes.byref(x), ctypes.byref(out), stream))


def dequantize(q, out, stream=None):
    check(lib().q2_nvfp4_dequantize(ctypes.byref(q), ctypes.byref(out), stream))
