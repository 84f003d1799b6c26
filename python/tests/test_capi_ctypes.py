"""The ctypes binding (quartet2._capi) against the CPU entry points of libquartet2_c, with no
torch or numpy: float32 ctypes arrays. The layer's forward equals the product of its operands
quantized by the library's own Four-over-Six (checked here in float64), backward repeats bit
for bit for a seed and accumulates dw, and failures raise the exception classes with the
library's message. Runs under pytest, or as a script (CTest: capi_python_ctypes)."""
import ctypes
import math
import sys

from quartet2 import _capi

T, IN, OUT = 32, 64, 128


def floats(n, f):
    return (ctypes.c_float * n)(*[f(i) for i in range(n)])


def host(arr, rows, cols, dtype=_capi.FLOAT32, device=_capi.CPU):
    return _capi.Tensor(ctypes.addressof(arr), rows, cols, dtype, device)


def product(a, b, m, n, k):
    """a [m, k] times b [n, k]^T in float64."""
    return [sum(a[i * k + j] * b[r * k + j] for j in range(k)) for i in range(m) for r in range(n)]


def dequantized(x, rows, cols):
    """x through the library's Four-over-Six quantizer and back (float32 values)."""
    packed = (ctypes.c_uint8 * (rows * cols // 2))()
    scales = (ctypes.c_uint8 * _capi.scale_bytes(rows, cols, _capi.SCALES_ROW_MAJOR))()
    scale = ctypes.c_float()
    q = _capi.NVFP4(ctypes.addressof(packed), ctypes.addressof(scales), ctypes.addressof(scale), rows, cols,
                    _capi.SCALES_ROW_MAJOR, _capi.CPU)
    _capi.quantize(_capi.FOUR_OVER_SIX, host(x, rows, cols), q)
    out = (ctypes.c_float * (rows * cols))()
    _capi.dequantize(q, host(out, rows, cols))
    return out


def close(got, want, rel):
    norm = math.sqrt(sum(v * v for v in want))
    err = math.sqrt(sum((g - v) ** 2 for g, v in zip(got, want)))
    return err <= rel * norm


x = floats(T * IN, lambda i: math.sin(0.37 * i))
w = floats(OUT * IN, lambda i: 0.1 * math.cos(0.11 * i))
dy = floats(T * OUT, lambda i: math.sin(0.05 * i + 1.0))


def forward(scheme, keep=True):
    layer = _capi.Linear(scheme, IN, OUT, _capi.CPU)
    y = (ctypes.c_float * (T * OUT))()
    ctx = layer.forward(host(x, T, IN), host(w, OUT, IN), host(y, T, OUT), keep)
    return layer, y, ctx


def test_fp32_scheme_is_the_plain_product():
    _, y, _ = forward("fp32", keep=False)
    assert close(list(y), product(x, w, T, OUT, IN), 1e-6)


def test_quartet2_forward_multiplies_four_over_six_operands():
    layer, y, ctx = forward("quartet2")
    assert close(list(y), product(dequantized(x, T, IN), dequantized(w, OUT, IN), T, OUT, IN), 1e-6)
    assert layer.info.out_multiple == 128 and layer.info.token_multiple == 128
    # x_q of the tokens padded to 128: 4 bits per code, an E4M3 scale per 16, a float32 tensor scale.
    assert ctx.saved_bytes() == 128 * IN // 2 + 128 * IN // 16 + 4


def test_backward_repeats_for_a_seed_and_accumulates_dw():
    _, _, ctx = forward("quartet2")

    def grads(seed, dw=None):
        dw = dw or (ctypes.c_float * (OUT * IN))()
        dx = (ctypes.c_float * (T * IN))()
        ctx.backward(host(dy, T, OUT), seed, host(dx, T, IN), host(dw, OUT, IN))
        return list(dx), dw

    dx1, dw1 = grads(7)
    dx2, dw2 = grads(7)
    assert dx1 == dx2 and list(dw1) == list(dw2)
    assert grads(8)[0] != dx1
    grads(7, dw1)  # accumulates: g + g, exact
    assert list(dw1) == [2 * v for v in dw2]
    ctx.close()
    try:
        grads(7)
    except _capi.Error as e:
        assert "closed" in str(e)
    else:
        raise AssertionError("backward after close must raise")


def expect_raises(kind, words, f, *args):
    try:
        f(*args)
    except kind as e:
        assert all(word in str(e) for word in words), str(e)
    else:
        raise AssertionError(f"expected {kind.__name__} naming {words}")


def test_errors_raise_with_the_librarys_message():
    expect_raises(_capi.InvalidArgument, ["fp3", "quartet2"], _capi.Linear, "fp3", IN, OUT, _capi.CPU)
    expect_raises(ValueError, ["out_features a multiple of 128"], _capi.Linear, "quartet2", IN, 100, _capi.CPU)
    layer = _capi.Linear("quartet2", IN, OUT, _capi.CPU)
    y = (ctypes.c_float * (T * OUT))()
    expect_raises(_capi.InvalidArgument, ["x is bfloat16"], layer.forward,
                  host(x, T, IN, dtype=_capi.BFLOAT16), host(w, OUT, IN), host(y, T, OUT), False)
    expect_raises(_capi.InvalidArgument, ["w is [64, 64], expected [128, 64]"], layer.forward,
                  host(x, T, IN), host(w, IN, IN), host(y, T, OUT), False)
    expect_raises(_capi.InvalidArgument, ["x is on device 'cuda'"], layer.forward,
                  host(x, T, IN, device=_capi.CUDA), host(w, OUT, IN), host(y, T, OUT), False)
    try:
        _capi.Linear("quartet2", IN, OUT, _capi.CUDA)  # succeeds only where a GPU is present
    except _capi.Unsupported as e:
        assert "cuda" in str(e)


if __name__ == "__main__":
    tests = [f for name, f in sorted(globals().items()) if name.startswith("test_")]
    for t in tests:
        t()
        print("ok", t.__name__)
    sys.exit(0)
