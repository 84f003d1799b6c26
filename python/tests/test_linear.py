"""quartet2.nn on torch (needs torch; the CUDA tests need a GPU): the autograd layer gives the
bits of the native layer called through the C API directly, for the same inputs and seed; the
CUDA layer agrees with the CPU reference as the native layer does (src/cuda/linear/linear_test.cpp's
tolerances); it saves no input for quartet2; gradients accumulate; convert swaps the right
layers; bad input raises a clear exception. Run: QUARTET2_LIBRARY=build/libquartet2_c.so
PYTHONPATH=python pytest python/tests/test_linear.py"""
import pytest

torch = pytest.importorskip("torch")

from quartet2 import _capi, nn  # noqa: E402

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SCHEMES = ["quartet2", "nvidia", "tetrajet2", "bf16"]
T, IN, OUT = 200, 256, 384  # 200 tokens: padded inside the layer


def inputs(device, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, IN, generator=g).bfloat16()
    w = (torch.randn(OUT, IN, generator=g) * IN ** -0.5).bfloat16().float()  # BF16-exact master weights
    dy = torch.randn(T, OUT, generator=g).bfloat16()
    if device == "cpu":
        return x.float(), w, dy.float()
    return x.cuda(), w.cuda(), dy.cuda()


def native(scheme, x, w, dy, seed):
    """The C API called directly: y, dx, dw of one forward and backward."""
    dev = _capi.CUDA if x.is_cuda else _capi.CPU
    layer = _capi.Linear(scheme, IN, OUT, dev)
    y = torch.empty(T, OUT, dtype=x.dtype, device=x.device)
    ctx = layer.forward(nn._view(x), nn._view(w), nn._view(y), True)
    dx = torch.empty_like(x)
    dw = torch.zeros(OUT, IN, dtype=torch.float32, device=x.device)
    ctx.backward(nn._view(dy), seed, nn._view(dx), nn._view(dw))
    if x.is_cuda:
        torch.cuda.synchronize()
    return y, dx, dw


def module_run(scheme, x, w, dy, seed):
    m = nn.Linear(IN, OUT, scheme=scheme, device=x.device)
    with torch.no_grad():
        m.weight.copy_(w)
    m.next_seed = lambda: seed
    xr = x.clone().requires_grad_(True)
    y = m(xr)
    y.backward(dy)
    return y.detach(), xr.grad, m.weight.grad


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
@pytest.mark.parametrize("scheme", SCHEMES)
def test_module_gives_the_native_layers_bits(scheme, device):
    x, w, dy = inputs(device)
    for got, want in zip(module_run(scheme, x, w, dy, 1234), native(scheme, x, w, dy, 1234)):
        assert torch.equal(got, want)


def rel(a, b):
    return ((a.double() - b.double()).norm() / b.double().norm()).item()


@cuda
@pytest.mark.parametrize("scheme", SCHEMES)
def test_cuda_agrees_with_the_cpu_reference(scheme):
    x, w, dy = inputs("cuda")
    y, dx, dw = module_run(scheme, x, w, dy, 99)
    ry, rdx, rdw = module_run(scheme, x.float().cpu(), w.cpu(), dy.float().cpu(), 99)
    # y and dx leave the GPU in BF16; the same seed gives the same quantized operands.
    assert rel(y.float().cpu(), ry) < 3e-3
    assert rel(dx.float().cpu(), rdx) < 3e-3
    assert rel(dw.cpu(), rdw) < 1e-4


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_quartet2_saves_no_input_and_gradients_accumulate(device):
    x, w, dy = inputs(device)
    m = nn.Linear(IN, OUT, device=device)
    with torch.no_grad():
        m.weight.copy_(w)
    saved = []
    with torch.autograd.graph.saved_tensors_hooks(lambda t: saved.append(t) or t, lambda t: t):
        y = m(x)
    # Only the op's one-element handle: x_q and w_q live in the native context.
    assert [(t.numel(), t.dtype, t.device.type) for t in saved] == [(1, torch.int64, "cpu")]
    y.backward(dy)
    first = m.weight.grad.clone()
    m(x).backward(dy)
    assert m.weight.grad.dtype == torch.float32
    assert not torch.equal(m.weight.grad, 2 * first)  # a fresh seed each call
    assert rel(m.weight.grad, 2 * first) < 0.2


@cuda
def test_autocast_and_stream():
    x, w, dy = inputs("cuda")
    m = nn.Linear(IN, OUT, bias=True, device="cuda")
    s = torch.cuda.Stream()  # a non-blocking stream: the layer joins it through events
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s), torch.autocast("cuda", dtype=torch.bfloat16):
        y = m(x.float())
    s.synchronize()
    assert y.dtype == torch.bfloat16 and y.shape == (T, OUT)
    with torch.no_grad():
        ref = m(x)
    assert torch.equal(y, ref)


@cuda
def test_cuda_errors_are_clear():
    m = nn.Linear(IN, OUT, device="cuda")
    x = torch.randn(T, IN, device="cuda").bfloat16()
    with pytest.raises(ValueError, match="input is on cpu but the weight on cuda"):
        m(x.cpu())
    with pytest.raises(TypeError, match="takes torch.bfloat16 input, got torch.float32"):
        m(x.float())
    with pytest.raises(ValueError, match="not contiguous"):
        m(torch.randn(IN, T, device="cuda").bfloat16().t())
    with pytest.raises(ValueError, match="does not end in in_features"):
        m(x[:, :128].contiguous())
    y = m(x.requires_grad_(True)).sum()
    y.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward through the same graph twice"):
        y.backward()


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_torch_compile_fullgraph_gives_the_eager_bits(device):
    """The layer is an opaque custom op: no graph break, and the compiled model draws the
    same seeds and gives the same bits as the eager one, step after step."""
    def build():
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Linear(IN, OUT, bias=False), torch.nn.ReLU(),
                                    torch.nn.Linear(OUT, IN, bias=False))
        return nn.convert(model, seed=7).to(device)

    x = inputs(device)[0]
    eager, compiled = build(), build()
    run = {"eager": eager, "compiled": torch.compile(compiled, fullgraph=True,
                                                      backend="inductor" if device == "cuda" else "aot_eager")}
    got = {}
    for name, model in ((n, m) for _ in range(2) for n, m in run.items()):  # two steps, gradients accumulate
        xr = x.clone().requires_grad_(True)
        y = model(xr)
        y.float().square().sum().backward()
        got[name] = (y.detach(), xr.grad, [p.grad for p in (eager if name == "eager" else compiled).parameters()])
    (y0, dx0, g0), (y1, dx1, g1) = got["eager"], got["compiled"]
    assert torch.equal(y0, y1) and torch.equal(dx0, dx1)
    assert all(torch.equal(a, b) for a, b in zip(g0, g1))
    assert [m.calls for m in eager if isinstance(m, nn.Linear)] == [2, 2]
    assert [m.calls for m in compiled if isinstance(m, nn.Linear)] == [2, 2]


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=cuda)])
def test_check_finite_names_the_layer_and_tensor(device):
    x, w, dy = inputs(device)
    m = nn.Linear(IN, OUT, check_finite=True, device=device)
    bad = x.clone()
    bad[3, 5] = float("nan")
    with pytest.raises(FloatingPointError, match=r"Linear\(256 -> 384, 'quartet2'\): the input \(200, 256\) holds NaN"):
        m(bad)
    y = m(x.clone().requires_grad_(True))
    dy = dy.clone()
    dy[0, 0] = float("inf")
    with pytest.raises(FloatingPointError, match="the output gradient"):
        y.backward(dy)


def test_a_copy_is_a_layer_of_its_own():
    import copy
    m = nn.Linear(IN, OUT)
    c = copy.deepcopy(m)
    assert c._key != m._key and nn._MODULES[c._key] is c and c._native["cpu"] is not m._native["cpu"]
    c(torch.randn(4, IN))
    assert (c.calls, m.calls) == (1, 0)


def test_shape_errors_at_construction():
    with pytest.raises(ValueError, match="out_features a multiple of 128"):
        nn.Linear(256, 100)
    with pytest.raises(ValueError, match="fp3"):
        nn.Linear(256, 256, scheme="fp3")
    with pytest.raises(TypeError, match="takes torch.float32 input"):
        nn.Linear(IN, OUT)(torch.randn(4, IN).bfloat16())


def test_convert_keeps_the_head_and_skipped_layers():
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(512, 128)
            self.up = torch.nn.Linear(128, 256, bias=False)
            self.down = torch.nn.Linear(256, 128, bias=True)
            self.gate = torch.nn.Linear(128, 256, bias=False)
            self.lm_head = torch.nn.Linear(128, 512, bias=False)

    model = Model()
    up_weight = model.up.weight
    nn.convert(model, skip=["gate"])
    assert isinstance(model.up, nn.Linear) and isinstance(model.down, nn.Linear)
    assert model.up.weight is up_weight and model.down.bias is not None
    assert type(model.gate) is torch.nn.Linear and type(model.lm_head) is torch.nn.Linear
    with pytest.raises(ValueError, match="layer 'odd'"):
        nn.convert(torch.nn.ModuleDict({"odd": torch.nn.Linear(128, 100)}))
