#!/usr/bin/env python3
"""Forward + backward time of quartet2.nn.Linear (the Python package over the C API) against
the native layer, the official Quartet II research layer and torch's BF16 nn.Linear, at the
four `quartet2 bench layer` shapes, in one process on one GPU (issue 22's speed check).

Every layer gets the operands bench/bench_layer.cu uses: X [M, K] BF16 uniform in [-1, 1),
a float32 master W [N, K] uniform in [-1/32, 1/32), dY [M, N] BF16 uniform in [-1e-3, 1e-3);
a step is y = layer(X), y.backward(dY) with X requiring its gradient (dX and dW both computed).
Timing follows bench_layer.cu: 5 warm-ups each; 20 rounds that time one step of every layer
in turn with CUDA events (median: `ms`); 20 rounds of 10 steps in a row, unsynchronized, per
step (`ms_back_to_back`). The native layer's figures come from `quartet2 bench layer --json`
run by this script in the same call (--quartet2 PROGRAM).

Layers
  native     the CUDA layer inside the quartet2 program (bench layer's quartet2 row)
  nn         quartet2.nn.Linear(scheme="quartet2"), float32 weight, BF16 X
  official   Quartet_II_Linear(hadamard_dim=128, four_over_six=True) of IST-DASLab/Quartet-II
             (its research code: triton kernels, torch.compile'd forward and backward), in
             float32 as its training runs it (its backward multiplies dY by a float32 Hadamard
             matrix, so BF16 autocast is refused), X as [1, M, K] float32; --official DIR, a
             checkout of that repository
             (git clone https://github.com/IST-DASLab/Quartet-II; measured at 8776a90)
  torch-bf16 torch.nn.Linear under BF16 autocast (float32 weight), for scale

  QUARTET2_LIBRARY=gpu-bundle/lib/libquartet2_c.so PYTHONPATH=python \\
    python3 bench/torch_linear.py --quartet2 gpu-bundle/quartet2 [--official DIR] [--json PATH]

--profile STEPS: instead of the table, where the CPU's time goes in quartet2.nn.Linear's step at
the first shape: STEPS steps back to back under cProfile (after the warm-ups), the functions
with the most time of their own per step (a ctypes call counts in its caller: _capi's forward
and backward are the C API's time). Under the CUPTI tracer (scripts/trace) the same run shows
each CUDA call's CPU time.
"""
import argparse
import json
import statistics
import subprocess
import sys
import types

import torch

SHAPES = [(8192, 2048, 2048), (8192, 2048, 8192), (8192, 8192, 2048), (16384, 4096, 4096)]
WARMUP, REPS, BACK_TO_BACK = 5, 20, 10


def load_official(root):
    """Quartet_II_Linear from a checkout, importing only its two modules: the package's
    __init__ pulls in fast_hadamard_transform, which the layer does not use."""
    import importlib
    for name, sub in (("models", ""), ("models.quantization", "/quantization"),
                      ("models.quantization.quantizers", "/quantization/quantizers"),
                      ("models.quantization.schemes", "/quantization/schemes")):
        pkg = types.ModuleType(name)
        pkg.__path__ = [f"{root}/src/models{sub}"]
        sys.modules[name] = pkg
    try:
        import scipy.linalg  # noqa: F401
    except ImportError:  # scipy.linalg.hadamard is Sylvester's construction, all the layer needs
        def hadamard(n):
            h = torch.ones(1, 1, dtype=torch.int64)
            while h.shape[0] < n:
                h = torch.cat([torch.cat([h, h], 1), torch.cat([h, -h], 1)], 0)
            return h.numpy()
        scipy = types.ModuleType("scipy")
        scipy.linalg = types.ModuleType("scipy.linalg")
        scipy.linalg.hadamard = hadamard
        sys.modules.update({"scipy": scipy, "scipy.linalg": scipy.linalg})
    return importlib.import_module("models.quantization.schemes.quartet_2").Quartet_II_Linear


def uniform(shape, scale, dtype, gen):
    return ((torch.rand(shape, generator=gen, device="cuda") * 2 - 1) * scale).to(dtype)


def layers(m, k, n, official):
    """name -> (module, x as the module takes it)."""
    from quartet2 import nn
    gen = torch.Generator(device="cuda").manual_seed(1)
    x = uniform((m, k), 1.0, torch.bfloat16, gen)
    w = uniform((n, k), 1 / 32, torch.float32, gen)
    out = {}
    for name, make, shaped in (("nn", lambda: nn.Linear(k, n, device="cuda"), x),
                               ("torch-bf16", lambda: torch.nn.Linear(k, n, bias=False, device="cuda"), x),
                               ("official", lambda: official(k, n, bias=False, hadamard_dim=128, four_over_six=True,
                                                             device="cuda"), x.float().view(1, m, k))):
        if name == "official" and official is None:
            continue
        layer = make()
        with torch.no_grad():
            layer.weight.copy_(w)
        out[name] = (layer, shaped.detach().clone().requires_grad_(True))
    dy = uniform((m, n), 1e-3, torch.bfloat16, gen)
    return out, dy


def step(layer, x, dy):
    layer.weight.grad = None
    x.grad = None
    with torch.autocast("cuda", dtype=torch.bfloat16, enabled=x.dtype == torch.bfloat16):
        y = layer(x)
    y.backward(dy.view(y.shape).to(y.dtype))


def event_ms(fn):
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    a.record()
    fn()
    b.record()
    b.synchronize()
    return a.elapsed_time(b)


def time_shape(m, k, n, official):
    ls, dy = layers(m, k, n, official)
    for layer, x in ls.values():
        for _ in range(WARMUP):
            step(layer, x, dy)
    single = {name: [] for name in ls}
    b2b = {name: [] for name in ls}
    for _ in range(REPS):
        for name, (layer, x) in ls.items():
            single[name].append(event_ms(lambda: step(layer, x, dy)))
    for _ in range(REPS):
        for name, (layer, x) in ls.items():
            b2b[name].append(event_ms(lambda: [step(layer, x, dy) for _ in range(BACK_TO_BACK)]) / BACK_TO_BACK)
    return {name: {"ms": statistics.median(single[name]), "ms_back_to_back": statistics.median(b2b[name])}
            for name in ls}


def profile(steps):
    import cProfile
    import pstats
    m, k, n = SHAPES[0]
    ls, dy = layers(m, k, n, None)
    layer, x = ls["nn"]
    for _ in range(WARMUP):
        step(layer, x, dy)
    torch.cuda.synchronize()
    prof = cProfile.Profile()
    prof.enable()
    for _ in range(steps):
        step(layer, x, dy)
    torch.cuda.synchronize()
    prof.disable()
    st = pstats.Stats(prof)
    total = sum(v[2] for v in st.stats.values())
    print(f"quartet2.nn.Linear {m}x{k}x{n}: {steps} steps back to back, CPU {1e3 * total / steps:.3f} ms per step "
          f"(functions' own time); the largest, ms per step:")
    rows = sorted(st.stats.items(), key=lambda kv: -kv[1][2])[:25]
    for (file, line, name), (_, calls, own, cum, _) in rows:
        where = f"{file.rsplit('/', 2)[-1]}:{line}" if line else file
        print(f"  {1e3 * own / steps:8.4f} own {1e3 * cum / steps:8.4f} cum {calls / steps:6.1f} calls  {name} ({where})")


def native_layer(program):
    r = subprocess.run([program, "bench", "layer", "--json"], check=True, capture_output=True, text=True)
    out = {}
    for s in json.loads(r.stdout)["shapes"]:
        q = next(x for x in s["schemes"] if x["scheme"] == "quartet2")
        out[(s["m"], s["k"], s["n"])] = {"ms": q["ms"], "ms_back_to_back": q["ms_back_to_back"]}
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quartet2", required=True, help="the quartet2 program (its 'bench layer' gives the native times)")
    ap.add_argument("--official", help="a checkout of IST-DASLab/Quartet-II")
    ap.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    ap.add_argument("--profile", type=int, metavar="STEPS", help="profile the CPU side of STEPS nn steps instead")
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_linear.py: needs a CUDA GPU")
    if a.profile:
        profile(a.profile)
        return
    official = load_official(a.official) if a.official else None
    native = native_layer(a.quartet2)
    rows = []
    for m, k, n in SHAPES:
        t = time_shape(m, k, n, official)
        t["native"] = native[(m, k, n)]
        rows.append({"m": m, "k": k, "n": n, "layers": t})
        print(f"[torch_linear] {m}x{k}x{n}: " + ", ".join(f"{name} {v['ms']:.3f} ms" for name, v in t.items()),
              file=sys.stderr)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__, "rows": rows}, f)
    names = ["native", "nn", "official", "torch-bf16"]
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; ms per forward + backward, one step alone "
          f"/ back to back")
    print(f"{'M x K x N':18s} " + " ".join(f"{n:>17s}" for n in names) + f" {'nn/native':>11s} {'nn/official':>11s}")
    for r in rows:
        t = r["layers"]
        cell = lambda n: f"{t[n]['ms']:7.3f} / {t[n]['ms_back_to_back']:7.3f}" if n in t else f"{'-':>17s}"
        ratio = lambda a, b: (f"{t[a]['ms'] / t[b]['ms']:5.2f}/{t[a]['ms_back_to_back'] / t[b]['ms_back_to_back']:5.2f}"
                              if b in t else f"{'-':>11s}")
        print(f"{r['m']}x{r['k']}x{r['n']:<8d} " + " ".join(f"{cell(n):>17s}" for n in names) +
              f" {ratio('nn', 'native'):>11s} {ratio('nn', 'official'):>11s}")


if __name__ == "__main__":
    main()
