#!/usr/bin/env python3
"""PyTorch reference for `quartet2 bench step`: the same model and step, in BF16 autocast.

Trains the model `quartet2` builds for each preset (src/model/config.cpp, transformer.cpp,
cpu_ops.cpp) on one fixed batch of random tokens, timed the way bench/bench_step.cpp times
it, and prints the same numbers (`--json`: the same keys as `quartet2 bench step --json`).

Model (as src/model): token embedding [V, d]; per layer RMSNorm (eps 1e-5, weight, no bias) ->
fused QKV linear [3d, d] (q, k, v = columns [0,d), [d,2d), [2d,3d), head h at h*hd) -> RoPE on
q and k (theta 1e4, the NeoX half split: pairs (i, i + hd/2), position = token index in its
sequence) -> causal softmax attention, scale 1/sqrt(hd) -> output linear [d, d] -> residual add;
RMSNorm -> fused gate|up linear [2h, d] -> silu(gate) * up -> down linear [d, h] -> residual add;
final RMSNorm; untied LM head [V, d]; no biases. h = 256 * ceil((8d/3) / 256). Init: N(0, 0.02),
the two output projections N(0, 0.02 / sqrt(2 L)), norms 1 (Transformer::init).

Step (bench_step): zero grads, forward, mean cross-entropy (our summed loss x 1/tokens),
backward, clip the global gradient norm to 1.0, AdamW: lr 1e-4 (bench_step's constant),
betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the block linear weights only (TrainConfig
defaults, src/train/config.h; decoupled, w *= 1 - lr * wd, as ops/adamw.cu), bias-corrected.
Timing: `--warmup` steps, synchronize, `--steps` steps, synchronize; ms/step = elapsed / steps.

What differs, on purpose, from the native step: standard autocast precision (float32 master
weights and residual stream, BF16 matmuls and attention via F.scaled_dot_product_attention,
norms and loss in float32); torch.optim.AdamW(fused=True); clip_grad_norm_ (no host sync,
where our step reads the norm and the loss back every step); optionally torch.compile of the
model's forward + loss (the optimizer runs eagerly; fused AdamW is already few kernels).

MFU uses bench_step.cpp's FLOP count, copied from bench/bench_step.cpp (StepBenchRow,
"6 N + 12 L d seq (PaLM's model FLOPs, N without embeddings)", bench_step.h):
    flops_per_token = 6 * (non_embedding_params + vocab * d_model) + 12 * n_layers * d_model * seq
    non_embedding_params = n_layers * (4 d^2 + 3 d h + 2 d) + d          (config.cpp)
    mfu = tokens_per_s * flops_per_token / (peak_tflops * 1e12), peak 989 (H100 SXM dense BF16)

  python3 bench/torch_step.py [--presets 100m,200m] [--batch 16] [--seq 1024] [--vocab 32768]
                              [--steps 5] [--warmup 2] [--no-compile] [--device cuda] [--json]
  python3 bench/torch_step.py --device cpu --presets tiny --no-compile --batch 2 --seq 64 \
                              --vocab 512 --steps 2 --warmup 1          (smoke test)
"""
import argparse
import gc
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

# name: (n_layers, d_model, n_heads), as src/model/config.cpp's preset().
PRESETS = {"tiny": (4, 256, 4), "30m": (6, 640, 5), "50m": (7, 768, 6), "100m": (8, 1024, 8), "200m": (10, 1280, 10)}
ROPE_THETA, NORM_EPS = 10000.0, 1e-5  # ModelConfig defaults (src/model/config.h)
# TrainConfig defaults (src/train/config.h); lr is bench_step.cpp's constant 1e-4.
LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


def swiglu_hidden(d):
    return 256 * ((8 * d // 3 + 255) // 256)


def shapes(preset):
    layers, d, heads = PRESETS[preset]
    return layers, d, heads, swiglu_hidden(d)


def non_embedding_params(layers, d, h):
    return layers * (4 * d * d + 3 * d * h + 2 * d) + d


def flops_per_token(preset, vocab, seq):
    layers, d, _, h = shapes(preset)
    return 6.0 * (non_embedding_params(layers, d, h) + vocab * d) + 12.0 * layers * d * seq


def rms_norm(x, w):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + NORM_EPS) * w).to(x.dtype)


def rope(x, cos, sin):
    """x [B, S, H, hd]; rotates pairs (i, i + hd/2) by pos * theta^(-2i/hd) (cpu_ops.cpp rope)."""
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


class Block(nn.Module):
    def __init__(self, d, heads, h):
        super().__init__()
        self.heads, self.hd = heads, d // heads
        self.attention_norm = nn.Parameter(torch.ones(d))
        self.wqkv = nn.Linear(d, 3 * d, bias=False)
        self.wo = nn.Linear(d, d, bias=False)
        self.ffn_norm = nn.Parameter(torch.ones(d))
        self.w12 = nn.Linear(d, 2 * h, bias=False)
        self.w3 = nn.Linear(h, d, bias=False)

    def forward(self, x, cos, sin):
        b, s, d = x.shape
        q, k, v = self.wqkv(rms_norm(x, self.attention_norm)).view(b, s, 3, self.heads, self.hd).unbind(2)
        q, k = rope(q, cos, sin), rope(k, cos, sin)
        att = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True)
        x = x + self.wo(att.transpose(1, 2).reshape(b, s, d))
        gate, up = self.w12(rms_norm(x, self.ffn_norm)).chunk(2, dim=-1)
        return x + self.w3(F.silu(gate) * up)


class Model(nn.Module):
    def __init__(self, preset, vocab, seq):
        super().__init__()
        layers, d, heads, h = shapes(preset)
        self.tok_embeddings = nn.Embedding(vocab, d)
        self.layers = nn.ModuleList(Block(d, heads, h) for _ in range(layers))
        self.norm = nn.Parameter(torch.ones(d))
        self.output = nn.Linear(d, vocab, bias=False)
        hd = d // heads
        inv_freq = ROPE_THETA ** (-2.0 * torch.arange(hd // 2, dtype=torch.float64) / hd)
        angle = torch.arange(seq, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [S, hd/2]
        self.register_buffer("cos", angle.cos().float()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angle.sin().float()[None, :, None, :], persistent=False)
        out_std = 0.02 / math.sqrt(2.0 * layers)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue  # norms stay 1
            nn.init.normal_(p, 0.0, out_std if name.endswith(("wo.weight", "w3.weight")) else 0.02)

    def forward(self, inputs, targets):
        x = self.tok_embeddings(inputs)
        for layer in self.layers:
            x = layer(x, self.cos, self.sin)
        logits = self.output(rms_norm(x, self.norm))
        return F.cross_entropy(logits.view(-1, logits.shape[-1]).float(), targets.view(-1))


def param_groups(model):
    decay = [p for n, p in model.named_parameters() if n.startswith("layers.") and n.endswith(".weight")]
    ids = {id(p) for p in decay}
    return [{"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in model.parameters() if id(p) not in ids], "weight_decay": 0.0}]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_preset(preset, a, device):
    torch.manual_seed(1)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    model = Model(preset, a.vocab, a.seq).to(device)
    layers, d, _, h = shapes(preset)
    params = sum(p.numel() for p in model.parameters())
    expect = non_embedding_params(layers, d, h) + 2 * a.vocab * d  # ModelConfig::total_params
    assert params == expect, f"{preset}: {params} parameters, quartet2 has {expect}"
    fused = device.type == "cuda"  # fused AdamW on the GPU; foreach on the CPU smoke test
    opt = torch.optim.AdamW(param_groups(model), lr=LR, betas=BETAS, eps=EPS, fused=fused, foreach=not fused)
    loss_fn = model if a.no_compile else torch.compile(model)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g).to(device)
    targets = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), CLIP, foreach=True)
        opt.step()
        return loss

    for _ in range(a.warmup):
        loss = step()
    sync(device)
    t0 = time.perf_counter()
    for _ in range(a.steps):
        loss = step()
    sync(device)
    s = (time.perf_counter() - t0) / a.steps
    if not math.isfinite(loss.item()):
        raise SystemExit(f"torch_step: {preset}: non-finite loss")

    tokens = a.batch * a.seq
    row = {"preset": preset, "scheme": "torch_bf16" + ("" if a.no_compile else "_compile"), "params": params,
           "flops_per_token": flops_per_token(preset, a.vocab, a.seq), "step_ms": s * 1e3,
           "tokens_per_s": tokens / s, "mfu": 0.0, "memory_gib": None, "saved_linear_mib": None,
           "loss": loss.item()}
    row["mfu"] = row["tokens_per_s"] * row["flops_per_token"] / (a.peak_tflops * 1e12)
    if device.type == "cuda":
        row["memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["memory_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    mem = f"memory {row['memory_gib']:.2f} GiB" if row["memory_gib"] is not None else "memory n/a"
    print(f"[torch step] {preset} {row['scheme']}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
          f"MFU {100 * row['mfu']:.1f}%, {mem}, loss {row['loss']:.4f}", file=sys.stderr)
    del model, opt, loss_fn
    if not a.no_compile:
        torch._dynamo.reset()
    return row


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--presets", default="100m,200m", help="comma-separated: " + ",".join(PRESETS))
    p.add_argument("--batch", type=int, default=16, help="sequences per step")
    p.add_argument("--seq", type=int, default=1024, help="sequence length")
    p.add_argument("--vocab", type=int, default=32768, help="vocabulary size")
    p.add_argument("--steps", type=int, default=5, help="timed steps")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (torch.compile compiles in the first)")
    p.add_argument("--peak-tflops", type=float, default=989.0, help="the device's dense BF16 peak, for MFU")
    p.add_argument("--no-compile", action="store_true", help="eager PyTorch, no torch.compile")
    p.add_argument("--device", default="cuda")
    p.add_argument("--json", action="store_true", help="print one JSON object (the table goes to stderr)")
    a = p.parse_args()
    presets = [x for x in a.presets.replace(" ", ",").split(",") if x]
    for x in presets:
        if x not in PRESETS:
            p.error(f"unknown preset '{x}' (known: {', '.join(PRESETS)})")
    if min(a.batch, a.seq, a.vocab, a.steps) < 1 or a.warmup < 0:
        p.error("--batch, --seq, --vocab and --steps must be positive, --warmup not negative")
    device = torch.device(a.device)

    rows = [bench_preset(x, a, device) for x in presets]

    t = sys.stderr if a.json else sys.stdout
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    print(f"device {a.device} ({name}), torch {torch.__version__}, batch {a.batch} x seq {a.seq}, vocab {a.vocab}, "
          f"{a.steps} timed steps after {a.warmup} warm-up, MFU vs {a.peak_tflops:.0f} TFLOP/s", file=t)
    print(f"{'preset':6s} {'scheme':18s} {'ms/step':>10s} {'tokens/s':>12s} {'MFU':>7s} {'memory':>10s}", file=t)
    for r in rows:
        mem = f"{r['memory_gib']:8.2f}GiB" if r["memory_gib"] is not None else f"{'n/a':>10s}"
        print(f"{r['preset']:6s} {r['scheme']:18s} {r['step_ms']:10.1f} {r['tokens_per_s']:12.0f} "
              f"{100 * r['mfu']:6.1f}% {mem}", file=t)
    if a.json:
        config = {"device": a.device, "batch": a.batch, "seq": a.seq, "vocab": a.vocab, "warmup": a.warmup,
                  "steps": a.steps, "peak_tflops": a.peak_tflops, "compile": not a.no_compile,
                  "torch": torch.__version__, "device_name": name}
        print(json.dumps({"config": config, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
