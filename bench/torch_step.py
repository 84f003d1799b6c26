#!/usr/bin/env python3
"""PyTorch reference for `quartet2 bench step`: the same model and step, in BF16 autocast.

Trains the model `quartet2` builds for each preset (src/model/config.cpp, transformer.cpp,
cpu_ops.cpp) on one fixed batch of random tokens, timed the way bench/bench_step.cpp times
it, and prints the same numbers (`--json`: the same keys as `quartet2 bench step --json`).

Model: `Config` is src/model/config.h's ModelConfig (same fields and defaults), `preset()` is
config.cpp's preset() (the Llama presets; nanochat-d20/d32: nanochat_architecture at depth 20/32,
d_model 64 depth, heads of 128), and one `Model` implements every option, with
Transformer::param_shapes' parameter names and shapes (norm gains and lambdas 1-D here):
  token embedding [V, d] -> (embed_norm: RMSNorm without gain) = x0 -> per layer l:
  (resid_x0_lambdas: x = resid_lambdas[l] x + x0_lambdas[l] x0) -> RMSNorm (gain unless
  norm_weights = false; eps norm_eps: 1e-5, nanochat 2^-23) -> fused QKV [d + 2 kv_dim, d]
  (q | k | v columns, head h at h hd, n_kv_heads key/value heads) -> RoPE on q and k (theta 1e4,
  the NeoX half split: pairs (i, i + hd/2), position = token index in its sequence) ->
  (qk_norm: RMSNorm without gain of each q and k head, after RoPE) -> causal softmax attention,
  scale 1/sqrt(hd), a query at i seeing keys i - w <= j <= i in a windowed layer (window_pattern
  tiled over the layers, "S" = w = seq_len / 2, the last layer always full) -> output linear ->
  residual add; RMSNorm -> MLP: SwiGLU (fused gate|up [2h, d], silu(gate) up) or ReLU^2
  (up [h, d], relu(up)^2; h = 4d) -> down [d, h] -> residual add; final RMSNorm; LM head [V, d]
  (untied unless tie_embeddings) -> (logit_softcap c > 0: c tanh(logits / c)) -> cross-entropy.
  No biases. Init as Transformer::init: llama: N(0, 0.02), the two output projections
  N(0, 0.02 / sqrt(2 L)), gains 1; nanochat: embedding N(0, 1), head N(0, 0.001), output
  projections 0, the other block matrices U(-sqrt(3/d), sqrt(3/d)); resid_lambdas 1, x0_lambdas 0.
Windowed attention: compiled, through flex_attention with a sliding-window causal BlockMask
(block-sparse: only the blocks a window touches run, as quartet2's kernel); eager
(`--no-compile`), F.scaled_dot_product_attention with a boolean mask (no FlashAttention with a
mask: every score is computed). Full-attention layers: F.scaled_dot_product_attention with
is_causal (FlashAttention) either way. scripts/torch_step_check.py checks both against quartet2.

Step (bench_step): zero grads, forward, mean cross-entropy (our summed loss x 1/tokens),
backward, clip the global gradient norm to 1.0, AdamW: lr 1e-4 (bench_step's constant),
betas (0.9, 0.95), eps 1e-8, weight decay 0.1 on the block linear weights only (TrainConfig
defaults, src/train/config.h; decoupled, w *= 1 - lr * wd, as ops/adamw.cu), bias-corrected.
AdamW for every preset, nanochat's too: `bench step`'s default. Its `--optimizer muon`
(nanochat's Muon with a factored second moment and cautious weight decay, AdamW groups at their
own rates) has no counterpart here; torch.optim.Muon is a different update, so timing it would
compare other work.
Timing: `--warmup` steps, synchronize, `--steps` steps, synchronize; ms/step = elapsed / steps.

What differs, on purpose, from the native step: standard autocast precision (float32 master
weights and residual stream, BF16 matmuls and attention, norms, RoPE, softcap and loss in
float32); torch.optim.AdamW(fused=True); clip_grad_norm_ (no host sync, where our step reads
the norm and the loss back every step); optionally torch.compile of the model's forward + loss
(the optimizer runs eagerly; fused AdamW is already few kernels).

MFU uses bench_step.cpp's FLOP count (StepBenchRow, "6 N + 12 L d seq (PaLM's model FLOPs, N
without embeddings)", bench_step.h), N = ModelConfig::non_embedding_params:
    flops_per_token = 6 * (non_embedding_params + vocab * d_model) + 12 * n_layers * d_model * seq
    non_embedding_params = n_layers * ((qkv_rows + d) d + (mlp_in_rows + d_ff) d + 2 gains d)
                           + gains d + (2 n_layers with the lambdas)
    mfu = tokens_per_s * flops_per_token / (peak_tflops * 1e12), peak 989 (H100 SXM dense BF16)
The attention term is PaLM's, every query against all seq keys: neither the causal mask nor
the windows are discounted, in bench_step as here.

  python3 bench/torch_step.py [--presets 100m,200m] [--batch 16] [--seq 1024] [--vocab 32768]
                              [--steps 5] [--warmup 2] [--no-compile] [--device cuda] [--json]
  python3 bench/torch_step.py --device cpu --presets tiny --no-compile --batch 2 --seq 64 \
                              --vocab 512 --steps 2 --warmup 1          (smoke test)
  python3 bench/torch_step.py --device cpu --presets nanochat-d20 --no-compile --batch 1 --seq 64 \
                              --vocab 512 --steps 1 --warmup 1          (nanochat: 9 GB, half a minute)
"""
import argparse
import dataclasses
import gc
import json
import math
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.attention.flex_attention import create_block_mask, flex_attention


@dataclasses.dataclass
class Config:
    """src/model/config.h's ModelConfig."""
    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    d_ff: int = 768
    vocab: int = 8192
    seq_len: int = 256
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    n_kv_heads: int = 0  # 0: n_heads
    mlp: str = "swiglu"  # or "relu2"
    qk_norm: bool = False
    tie_embeddings: bool = False
    norm_weights: bool = True
    embed_norm: bool = False
    resid_x0_lambdas: bool = False
    logit_softcap: float = 0.0
    window_pattern: str = "L"
    init: str = "llama"  # or "nanochat"

    @classmethod
    def from_json(cls, j):
        """A checkpoint header's "model" (config.cpp to_json)."""
        return cls(**{f.name: j[f.name] for f in dataclasses.fields(cls) if f.name in j})

    def head_dim(self):
        return self.d_model // self.n_heads

    def kv_heads(self):
        return self.n_kv_heads or self.n_heads

    def qkv_rows(self):
        return self.d_model + 2 * self.kv_heads() * self.head_dim()

    def mlp_in_rows(self):
        return 2 * self.d_ff if self.mlp == "swiglu" else self.d_ff

    def attention_window(self, layer):
        """-1: every earlier position; else how many positions back (config.cpp)."""
        if layer == self.n_layers - 1:
            return -1
        return self.seq_len // 2 if self.window_pattern[layer % len(self.window_pattern)] == "S" else -1

    def non_embedding_params(self):
        d, gains = self.d_model, int(self.norm_weights)
        per_layer = (self.qkv_rows() + d) * d + (self.mlp_in_rows() + self.d_ff) * d + 2 * gains * d
        return self.n_layers * per_layer + gains * d + (2 * self.n_layers if self.resid_x0_lambdas else 0)

    def total_params(self):
        return self.non_embedding_params() + (1 if self.tie_embeddings else 2) * self.vocab * self.d_model


# name: (n_layers, d_model, n_heads), as config.cpp's preset(); nanochat: depth.
LLAMA = {"tiny": (4, 256, 4), "30m": (6, 640, 5), "50m": (7, 768, 6), "100m": (8, 1024, 8), "200m": (10, 1280, 10)}
NANOCHAT = {"nanochat-d20": 20, "nanochat-d32": 32}
PRESETS = [*LLAMA, *NANOCHAT]
# TrainConfig defaults (src/train/config.h); lr is bench_step.cpp's constant 1e-4.
LR, BETAS, EPS, WEIGHT_DECAY, CLIP = 1e-4, (0.9, 0.95), 1e-8, 0.1, 1.0


def swiglu_hidden(d):
    return 256 * ((8 * d // 3 + 255) // 256)


def nanochat_heads(d, target_head_dim):
    """config.cpp: the head count dividing d whose head dimension is nearest the target."""
    ideal = max(1, round(d / target_head_dim))  # halves to even, as std::nearbyint
    for offset in range(d):
        for candidate in (ideal + offset, ideal - offset):
            if candidate > 0 and d % candidate == 0:
                return candidate
    return 1


def nanochat_architecture(c):
    """config.cpp's nanochat_architecture: karpathy/nanochat's GPT at f5425245, c's shape."""
    return dataclasses.replace(c, mlp="relu2", d_ff=4 * c.d_model, qk_norm=True, tie_embeddings=False,
                               norm_weights=False, embed_norm=True, resid_x0_lambdas=True, logit_softcap=15.0,
                               window_pattern="SSSL", init="nanochat", norm_eps=2.0**-23)


def preset(name, vocab, seq_len):
    if name in NANOCHAT:
        depth = NANOCHAT[name]
        d = 64 * depth
        return nanochat_architecture(Config(n_layers=depth, d_model=d, n_heads=nanochat_heads(d, 128), vocab=vocab,
                                            seq_len=seq_len))
    layers, d, heads = LLAMA[name]
    return Config(n_layers=layers, d_model=d, n_heads=heads, d_ff=swiglu_hidden(d), vocab=vocab, seq_len=seq_len)


def flops_per_token(c, seq):
    return 6.0 * (c.non_embedding_params() + c.vocab * c.d_model) + 12.0 * c.n_layers * c.d_model * seq


def rms_norm(x, w, eps):
    xf = x.float()
    y = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (y if w is None else y * w).to(x.dtype)


def rope(x, cos, sin):
    """x [B, S, H, hd]; rotates pairs (i, i + hd/2) by pos * theta^(-2i/hd) (cpu_ops.cpp rope)."""
    half = x.shape[-1] // 2
    xf = x.float()
    x1, x2 = xf[..., :half], xf[..., half:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).to(x.dtype)


def window_block_masks(c, seq, device):
    """{window: flex BlockMask} for the model's windowed layers at sequence length seq."""
    def sliding(w):
        return lambda b, h, q, kv: (kv <= q) & (q - kv <= w)
    return {w: create_block_mask(sliding(w), None, None, seq, seq, device=device)
            for w in {c.attention_window(l) for l in range(c.n_layers)} - {-1}}


class RMSNorm(nn.Module):
    def __init__(self, d, eps, gain):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(d)) if gain else None

    def forward(self, x):
        return rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        self.heads, self.kv_heads, self.hd, self.d = c.n_heads, c.kv_heads(), c.head_dim(), c.d_model
        self.qk_norm, self.eps, self.window = c.qk_norm, c.norm_eps, c.attention_window(layer)
        self.wqkv = nn.Linear(c.d_model, c.qkv_rows(), bias=False)
        self.wo = nn.Linear(c.d_model, c.d_model, bias=False)

    def forward(self, x, cos, sin, block_masks):
        b, s, _ = x.shape
        kv = self.kv_heads * self.hd
        q, k, v = self.wqkv(x).split([self.d, kv, kv], dim=-1)
        q, k = rope(q.view(b, s, self.heads, self.hd), cos, sin), rope(k.view(b, s, self.kv_heads, self.hd), cos, sin)
        if self.qk_norm:
            q, k = rms_norm(q, None, self.eps), rms_norm(k, None, self.eps)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.view(b, s, self.kv_heads, self.hd).transpose(1, 2)
        gqa = self.kv_heads != self.heads
        if self.window < 0:
            att = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=gqa)
        elif block_masks is not None:
            att = flex_attention(q, k, v, block_mask=block_masks[self.window], enable_gqa=gqa)
        else:
            i = torch.arange(s, device=x.device)
            mask = (i[None, :] <= i[:, None]) & (i[:, None] - i[None, :] <= self.window)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=gqa)
        return self.wo(att.transpose(1, 2).reshape(b, s, self.d))


class FeedForward(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.swiglu = c.mlp == "swiglu"
        self.up = "w12" if self.swiglu else "w1"  # quartet2's names (linear_schemes.cpp)
        self.add_module(self.up, nn.Linear(c.d_model, c.mlp_in_rows(), bias=False))
        self.w3 = nn.Linear(c.d_ff, c.d_model, bias=False)

    def forward(self, x):
        h = getattr(self, self.up)(x)
        if self.swiglu:
            gate, up = h.chunk(2, dim=-1)
            return self.w3(F.silu(gate) * up)
        return self.w3(F.relu(h).square())


class Block(nn.Module):
    def __init__(self, c, layer):
        super().__init__()
        self.attention_norm = RMSNorm(c.d_model, c.norm_eps, c.norm_weights)
        self.attention = Attention(c, layer)
        self.ffn_norm = RMSNorm(c.d_model, c.norm_eps, c.norm_weights)
        self.feed_forward = FeedForward(c)

    def forward(self, x, cos, sin, block_masks):
        x = x + self.attention(self.attention_norm(x), cos, sin, block_masks)
        return x + self.feed_forward(self.ffn_norm(x))


class Model(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c
        self.tok_embeddings = nn.Embedding(c.vocab, c.d_model)
        self.layers = nn.ModuleList(Block(c, l) for l in range(c.n_layers))
        if c.resid_x0_lambdas:
            self.resid_lambdas = nn.Parameter(torch.ones(c.n_layers))
            self.x0_lambdas = nn.Parameter(torch.zeros(c.n_layers))
        self.norm = RMSNorm(c.d_model, c.norm_eps, c.norm_weights)
        self.output = None if c.tie_embeddings else nn.Linear(c.d_model, c.vocab, bias=False)
        hd = c.head_dim()
        inv_freq = c.rope_theta ** (-2.0 * torch.arange(hd // 2, dtype=torch.float64) / hd)
        angle = torch.arange(c.seq_len, dtype=torch.float64)[:, None] * inv_freq[None, :]  # [S, hd/2]
        self.register_buffer("cos", angle.cos().float()[None, :, None, :], persistent=False)
        self.register_buffer("sin", angle.sin().float()[None, :, None, :], persistent=False)
        self.init_weights()

    @torch.no_grad()
    def init_weights(self):
        c = self.c
        nanochat, bound = c.init == "nanochat", math.sqrt(3.0 / c.d_model)
        for name, p in self.named_parameters():
            if p.dim() == 1:
                continue  # gains and resid_lambdas 1, x0_lambdas 0, as constructed
            out_proj = name.endswith(("attention.wo.weight", "w3.weight"))
            if not nanochat:
                nn.init.normal_(p, 0.0, 0.02 / math.sqrt(2.0 * c.n_layers) if out_proj else 0.02)
            elif name == "tok_embeddings.weight":
                nn.init.normal_(p, 0.0, 1.0)
            elif name == "output.weight":
                nn.init.normal_(p, 0.0, 0.001)
            elif out_proj:
                nn.init.zeros_(p)
            else:
                nn.init.uniform_(p, -bound, bound)

    def forward(self, inputs, targets, block_masks=None):
        """Mean cross-entropy. block_masks (window_block_masks): windowed layers through flex_attention;
        None: through scaled_dot_product_attention with a boolean mask."""
        c, s = self.c, inputs.shape[1]
        cos, sin = self.cos[:, :s], self.sin[:, :s]
        x = self.tok_embeddings(inputs)
        if c.embed_norm:
            x = rms_norm(x, None, c.norm_eps)
        x0 = x
        for l, layer in enumerate(self.layers):
            if c.resid_x0_lambdas:
                x = self.resid_lambdas[l] * x + self.x0_lambdas[l] * x0
            x = layer(x, cos, sin, block_masks)
        x = self.norm(x)
        logits = (F.linear(x, self.tok_embeddings.weight) if self.output is None else self.output(x)).float()
        if c.logit_softcap > 0:
            logits = c.logit_softcap * torch.tanh(logits / c.logit_softcap)
        return F.cross_entropy(logits.view(-1, logits.shape[-1]), targets.reshape(-1))


def param_groups(model):
    """Weight decay on the block linears only (Transformer::param_shapes' decay flags)."""
    decay = [p for n, p in model.named_parameters() if n.startswith("layers.") and p.dim() == 2]
    ids = {id(p) for p in decay}
    return [{"params": decay, "weight_decay": WEIGHT_DECAY},
            {"params": [p for p in model.parameters() if id(p) not in ids], "weight_decay": 0.0}]


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_preset(name, a, device):
    torch.manual_seed(1)
    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    c = preset(name, a.vocab, a.seq)
    model = Model(c).to(device)
    params = sum(p.numel() for p in model.parameters())
    assert params == c.total_params(), f"{name}: {params} parameters, quartet2 has {c.total_params()}"
    fused = device.type == "cuda"  # fused AdamW on the GPU; foreach on the CPU smoke test
    opt = torch.optim.AdamW(param_groups(model), lr=LR, betas=BETAS, eps=EPS, fused=fused, foreach=not fused)
    loss_fn = model if a.no_compile else torch.compile(model)
    block_masks = None if a.no_compile else window_block_masks(c, a.seq, device)
    g = torch.Generator().manual_seed(0)
    inputs = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g).to(device)
    targets = torch.randint(0, a.vocab, (a.batch, a.seq), generator=g).to(device)

    def step():
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = loss_fn(inputs, targets, block_masks)
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
        raise SystemExit(f"torch_step: {name}: non-finite loss")

    tokens = a.batch * a.seq
    row = {"preset": name, "scheme": "torch_bf16" + ("" if a.no_compile else "_compile"), "params": params,
           "flops_per_token": flops_per_token(c, a.seq), "step_ms": s * 1e3,
           "tokens_per_s": tokens / s, "mfu": 0.0, "memory_gib": None, "saved_linear_mib": None,
           "loss": loss.item()}
    row["mfu"] = row["tokens_per_s"] * row["flops_per_token"] / (a.peak_tflops * 1e12)
    if device.type == "cuda":
        row["memory_gib"] = torch.cuda.max_memory_allocated(device) / 2**30
        row["memory_reserved_gib"] = torch.cuda.max_memory_reserved(device) / 2**30
    mem = f"memory {row['memory_gib']:.2f} GiB" if row["memory_gib"] is not None else "memory n/a"
    print(f"[torch step] {name} {row['scheme']}: {row['step_ms']:.1f} ms/step, {row['tokens_per_s']:.0f} tokens/s, "
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
          f"adamw, {a.steps} timed steps after {a.warmup} warm-up, MFU vs {a.peak_tflops:.0f} TFLOP/s", file=t)
    print(f"{'preset':14s} {'scheme':18s} {'ms/step':>10s} {'tokens/s':>12s} {'MFU':>7s} {'memory':>10s}", file=t)
    for r in rows:
        mem = f"{r['memory_gib']:8.2f}GiB" if r["memory_gib"] is not None else f"{'n/a':>10s}"
        print(f"{r['preset']:14s} {r['scheme']:18s} {r['step_ms']:10.1f} {r['tokens_per_s']:12.0f} "
              f"{100 * r['mfu']:6.1f}% {mem}", file=t)
    if a.json:
        config = {"device": a.device, "batch": a.batch, "seq": a.seq, "vocab": a.vocab, "optimizer": "adamw",
                  "warmup": a.warmup, "steps": a.steps, "peak_tflops": a.peak_tflops, "compile": not a.no_compile,
                  "torch": torch.__version__, "device_name": name}
        print(json.dumps({"config": config, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
