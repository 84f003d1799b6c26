"""quartet2.nn: torch.nn.Linear layers whose products run through quartet2's C API
(libquartet2_c): NVFP4 under a scheme ("quartet2": Four-over-Six forward, MS-EDEN backward),
computed by the native CUDA layer on the GPU and by the CPU reference on the CPU.

On CUDA the layer takes BF16 input (cast inside torch.autocast, or by the caller) and returns
BF16; the weight stays float32 (or BF16) and its gradient is float32. On the CPU everything
is float32. Backward keeps only what the native layer saves (for quartet2 the packed NVFP4 x_q
and w_q) and draws its randomness from a per-layer seed and call counter.
"""
import contextlib
import fnmatch
import itertools
import weakref
from typing import Tuple

import torch

from . import _capi

_DTYPES = {torch.float32: _capi.FLOAT32, torch.bfloat16: _capi.BFLOAT16}
_MASK64 = (1 << 64) - 1


def _splitmix64(z):
    z = (z + 0x9E3779B97F4A7C15) & _MASK64
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & _MASK64
    return z ^ (z >> 31)


def _device(t):
    return _capi.CUDA if t.is_cuda else _capi.CPU


def _view(t):
    """A q2_tensor over a contiguous 2-D torch tensor (no copy)."""
    return _capi.Tensor(t.data_ptr(), t.shape[0], t.shape[1], _DTYPES[t.dtype], _device(t))


def _on(t):
    """The CUDA device of t current (the C API works on the current device); nothing on the CPU."""
    return torch.cuda.device(t.device) if t.is_cuda else contextlib.nullcontext()


def _stream(t):
    return ctypes_stream(t.device) if t.is_cuda else None


def ctypes_stream(device):
    """The current torch stream of `device` as the void* the C API takes."""
    return torch.cuda.current_stream(device).cuda_stream or None


def _autocast_on():
    try:
        return torch.is_autocast_enabled("cuda")
    except TypeError:  # torch < 2.4 takes no device type (and means CUDA)
        return torch.is_autocast_enabled()


def _check_input(x, weight, in_features):
    if x.device.type != weight.device.type or (x.is_cuda and x.device != weight.device):
        raise ValueError(f"quartet2.nn.Linear: input is on {x.device} but the weight on {weight.device}")
    if x.device.type not in ("cpu", "cuda"):
        raise ValueError(f"quartet2.nn.Linear: {x.device} tensors are not supported (cpu or cuda)")
    want = torch.bfloat16 if x.is_cuda else torch.float32
    if x.dtype != want:
        hint = " (run under torch.autocast('cuda', dtype=torch.bfloat16) or pass x.bfloat16())" if x.is_cuda else ""
        raise TypeError(f"quartet2.nn.Linear on {x.device.type} takes {want} input, got {x.dtype}{hint}")
    ok = (torch.float32, torch.bfloat16) if x.is_cuda else (torch.float32,)
    if weight.dtype not in ok:
        raise TypeError(f"quartet2.nn.Linear on {x.device.type}: the weight must be one of {ok}, got {weight.dtype}")
    if x.dim() < 1 or x.shape[-1] != in_features:
        raise ValueError(f"quartet2.nn.Linear: input shape {tuple(x.shape)} does not end in in_features = {in_features}")
    if x.numel() == 0:
        raise ValueError(f"quartet2.nn.Linear: input shape {tuple(x.shape)} has no tokens")
    for name, t in (("input", x), ("weight", weight)):
        if not t.is_contiguous():
            raise ValueError(f"quartet2.nn.Linear: the {name} is not contiguous (call .contiguous() first)")


def _check_finite(m, what, t):
    # One device reduction and a synchronization: opt-in (Linear(check_finite=True)).
    if not bool(torch.isfinite(t).all()):
        raise FloatingPointError(f"quartet2.nn.Linear({m.in_features} -> {m.out_features}, {m.scheme!r}): "
                                 f"the {what} {tuple(t.shape)} holds NaN or Inf")


# The layer as two opaque custom ops, so that torch.compile (fullgraph too) traces through a
# model without a graph break: forward returns y and a handle, a one-element int64 CPU tensor
# naming the native context in _SAVED; backward consumes it. The ops run the C API, draw the
# backward seed and look up the module at run time, so a compiled graph holds no seed or
# pointer as a constant.
_MODULES = weakref.WeakValueDictionary()  # module id -> Linear
_SAVED = {}  # handle -> (native context, backward seed, the module for check_finite or None)
_handles = itertools.count(1)
_keys = itertools.count(1)


def _release(handle):
    native = _SAVED.pop(handle, (None,))[0]
    if native is not None:
        native.close()


@torch.library.custom_op("quartet2::linear_forward", mutates_args=())
def _forward_op(x: torch.Tensor, weight: torch.Tensor, module: int, keep: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    m = _MODULES[module]
    if m.check_finite:
        _check_finite(m, "input", x)
        _check_finite(m, "weight", weight)
    y = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
    with _on(x):
        native = m._layer(x.device).forward(_view(x), _view(weight), _view(y), keep, _stream(x))
    handle = torch.zeros(1, dtype=torch.int64)
    if native is not None:
        h = next(_handles)
        _SAVED[h] = (native, m.next_seed(), m if m.check_finite else None)
        handle[0] = h
        # A graph dropped without backward frees its context with the handle.
        weakref.finalize(handle, _release, h)
    return y, handle


@_forward_op.register_fake
def _forward_fake(x, weight, module, keep):
    return x.new_empty(x.shape[0], weight.shape[0]), torch.empty(1, dtype=torch.int64, device="cpu")


@torch.library.custom_op("quartet2::linear_backward", mutates_args=())
def _backward_op(dy: torch.Tensor, handle: torch.Tensor, in_features: int, out_features: int,
                 need_dx: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    h = int(handle[0])
    if h not in _SAVED:
        raise RuntimeError("quartet2.nn.Linear: backward through the same graph twice is not supported "
                           "(the saved NVFP4 tensors are freed after the first backward)")
    native, seed, checked = _SAVED.pop(h)
    if checked is not None:
        _check_finite(checked, "output gradient", dy)
    dx = torch.empty(dy.shape[0], in_features, dtype=dy.dtype, device=dy.device) if need_dx else dy.new_empty(0)
    dw = torch.zeros(out_features, in_features, dtype=torch.float32, device=dy.device)
    with _on(dy):
        native.backward(_view(dy), seed, _view(dx) if need_dx else None, _view(dw), _stream(dy))
    native.close()
    return dx, dw


@_backward_op.register_fake
def _backward_fake(dy, handle, in_features, out_features, need_dx):
    dx = dy.new_empty(dy.shape[0], in_features) if need_dx else dy.new_empty(0)
    return dx, dy.new_empty(out_features, in_features, dtype=torch.float32)


def _setup_context(ctx, inputs, output):
    x, weight, module, _ = inputs
    # The native layer keeps what backward needs; an x it keeps by reference must stay alive.
    borrows = _MODULES[module]._layer(x.device).info.borrows_input
    ctx.save_for_backward(output[1], x if borrows else None)
    ctx.weight_shape = tuple(weight.shape)


def _backward(ctx, dy, _dhandle):
    handle, _ = ctx.saved_tensors
    out_features, in_features = ctx.weight_shape
    dx, dw = _backward_op(dy.contiguous(), handle, in_features, out_features, ctx.needs_input_grad[0])
    return (dx if ctx.needs_input_grad[0] else None), (dw if ctx.needs_input_grad[1] else None), None, None


_forward_op.register_autograd(_backward, setup_context=_setup_context)


class Linear(torch.nn.Linear):
    """torch.nn.Linear with its products under a quartet2 scheme (C API). `seed` starts the
    layer's backward seeds; each forward draws the next one (splitmix64 of seed and count).
    check_finite: raise FloatingPointError, naming the layer and tensor, when the input, the
    weight or the output gradient holds NaN or Inf (costs a synchronization per call; the CUDA
    layer does not check otherwise, the CPU layer always does)."""

    def __init__(self, in_features, out_features, bias=False, scheme="quartet2", seed=0, check_finite=False,
                 device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scheme = scheme
        self.check_finite = check_finite
        self.seed = seed
        self.calls = 0
        self._native = {"cpu": _capi.Linear(scheme, in_features, out_features, _capi.CPU)}  # checks the shapes now
        self._register()

    def _register(self):
        self._key = next(_keys)
        _MODULES[self._key] = self

    def __setstate__(self, state):  # a copy (deepcopy, pickle) is a layer of its own
        super().__setstate__(state)
        self._register()

    def _layer(self, device):
        if device.type not in self._native:
            self._native[device.type] = _capi.Linear(self.scheme, self.in_features, self.out_features, _capi.CUDA)
        return self._native[device.type]

    def next_seed(self):
        self.calls += 1
        return _splitmix64(self.seed * 0x100000001B3 + self.calls)

    def forward(self, x):
        if x.is_cuda and _autocast_on() and x.dtype != torch.bfloat16:
            x = x.to(torch.bfloat16)
        _check_input(x, self.weight, self.in_features)
        x2 = x.reshape(-1, self.in_features)
        keep = torch.is_grad_enabled() and (x.requires_grad or self.weight.requires_grad)
        y, _ = _forward_op(x2, self.weight, self._key, keep)
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self):
        return super().extra_repr() + f", scheme={self.scheme!r}"


def _is_lm_head(name, module, vocab_sizes):
    return name.rsplit(".", 1)[-1] in ("lm_head", "output") or module.out_features in vocab_sizes


def convert(model, scheme="quartet2", skip=(), seed=0, check_finite=False):
    """Replaces every torch.nn.Linear of `model` (in place; returns it) by quartet2.nn.Linear
    sharing its parameters, except the LM head (named lm_head or output, or as wide as an
    embedding's vocabulary) and the modules whose qualified or last name matches a pattern in
    `skip` (fnmatch). A layer whose shape the scheme cannot take raises, naming it. check_finite:
    as Linear's."""
    vocab_sizes = {m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) is torch.nn.Linear and not _is_lm_head(name, m, vocab_sizes)
               and not any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit(".", 1)[-1], p) for p in skip)]
    for index, (name, old) in enumerate(targets):
        try:
            new = Linear(old.in_features, old.out_features, bias=old.bias is not None, scheme=scheme,
                         seed=_splitmix64(seed + index), check_finite=check_finite, device="meta")
        except _capi.Error as e:
            raise ValueError(f"quartet2.nn.convert: layer '{name}' ({old.in_features} -> {old.out_features}): {e} "
                             f"(add it to skip= to keep it in high precision)") from e
        new.weight = old.weight
        new.bias = old.bias
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model
