"""quartet2.nn: torch.nn.Linear layers whose products run through quartet2's C API
(libquartet2_c): NVFP4 under a scheme ("quartet2": Four-over-Six forward, MS-EDEN backward),
computed by the native CUDA layer on the GPU and by the CPU reference on the CPU.

On CUDA the layer takes BF16 input (cast inside torch.autocast, or by the caller) and returns
BF16; the weight stays float32 (or BF16) and its gradient is float32. On the CPU everything
is float32. Backward keeps only what the native layer saves (for quartet2 the packed NVFP4 x_q
and w_q) and draws its randomness from a per-layer seed and call counter.
"""
import fnmatch

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


class _LinearFunction(torch.autograd.Function):
    """y = x w^T through a q2_linear; x is 2-D [tokens, in]."""

    @staticmethod
    def forward(ctx, x, weight, layer, seed):
        y = torch.empty(x.shape[0], weight.shape[0], dtype=x.dtype, device=x.device)
        # Grad mode is off inside forward; needs_input_grad says whether a backward can come.
        native = layer.forward(_view(x), _view(weight), _view(y), any(ctx.needs_input_grad[:2]), _stream(x))
        ctx.native, ctx.seed, ctx.weight_shape = native, seed, weight.shape
        ctx.weight_dtype = weight.dtype
        # The native layer keeps what backward needs; an x it keeps by reference must stay alive.
        if native is not None and layer.info.borrows_input:
            ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, dy):
        native = ctx.native
        if native is None or native._handle is None:
            raise RuntimeError("quartet2.nn.Linear: backward through the same graph twice is not supported "
                               "(the saved NVFP4 tensors are freed after the first backward)")
        dy = dy.contiguous()
        dx = torch.empty(dy.shape[0], ctx.weight_shape[1], dtype=dy.dtype, device=dy.device) \
            if ctx.needs_input_grad[0] else None
        dw = torch.zeros(ctx.weight_shape, dtype=torch.float32, device=dy.device)
        native.backward(_view(dy), ctx.seed, None if dx is None else _view(dx), _view(dw), _stream(dy))
        native.close()
        return dx, (dw if ctx.needs_input_grad[1] else None), None, None


class Linear(torch.nn.Linear):
    """torch.nn.Linear with its products under a quartet2 scheme (C API). `seed` starts the
    layer's backward seeds; each forward draws the next one (splitmix64 of seed and count)."""

    def __init__(self, in_features, out_features, bias=False, scheme="quartet2", seed=0, device=None, dtype=None):
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.scheme = scheme
        self.seed = seed
        self.calls = 0
        self._native = {"cpu": _capi.Linear(scheme, in_features, out_features, _capi.CPU)}  # checks the shapes now

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
        if x.is_cuda:
            with torch.cuda.device(x.device):
                y = _LinearFunction.apply(x2, self.weight, self._layer(x.device), self.next_seed())
        else:
            y = _LinearFunction.apply(x2, self.weight, self._layer(x.device), self.next_seed())
        y = y.reshape(*x.shape[:-1], self.out_features)
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self):
        return super().extra_repr() + f", scheme={self.scheme!r}"


def _is_lm_head(name, module, vocab_sizes):
    return name.rsplit(".", 1)[-1] in ("lm_head", "output") or module.out_features in vocab_sizes


def convert(model, scheme="quartet2", skip=(), seed=0):
    """Replaces every torch.nn.Linear of `model` (in place; returns it) by quartet2.nn.Linear
    sharing its parameters, except the LM head (named lm_head or output, or as wide as an
    embedding's vocabulary) and the modules whose qualified or last name matches a pattern in
    `skip` (fnmatch). A layer whose shape the scheme cannot take raises, naming it."""
    vocab_sizes = {m.num_embeddings for m in model.modules() if isinstance(m, torch.nn.Embedding)}
    targets = [(name, m) for name, m in model.named_modules()
               if type(m) is torch.nn.Linear and not _is_lm_head(name, m, vocab_sizes)
               and not any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(name.rsplit(".", 1)[-1], p) for p in skip)]
    for index, (name, old) in enumerate(targets):
        try:
            new = Linear(old.in_features, old.out_features, bias=old.bias is not None, scheme=scheme,
                         seed=_splitmix64(seed + index), device="meta")
        except _capi.Error as e:
            raise ValueError(f"quartet2.nn.convert: layer '{name}' ({old.in_features} -> {old.out_features}): {e} "
                             f"(add it to skip= to keep it in high precision)") from e
        new.weight = old.weight
        new.bias = old.bias
        parent_name, _, child = name.rpartition(".")
        setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return model
