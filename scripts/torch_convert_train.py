#!/usr/bin/env python3
"""A PyTorch user's run: the Llama of bench/torch_step.py (the model `quartet2 train` builds for a
preset) with its linear layers swapped by quartet2.nn.convert, trained on a prepared dataset
the way `quartet2 train` trains it, so that its loss curve can be set beside the native
program's (issue 22: the curves should agree within seed-to-seed noise).

Same as the native run: the data stream (sequential windows of batch x seq + 1 tokens of the
train shards, inputs and targets shifted by one, as src/data/loader.cpp), the learning-rate
schedule (cosine warm-up from lr/100 over floor(warmup_frac x steps), cosine fall to
lr x min_lr_ratio: src/train/optimizer.cpp learning_rate), AdamW (betas 0.9/0.95, eps 1e-8,
weight decay 0.1 on the block linear weights only), gradient clipping at 1.0, the evaluation
(the first eval_batches windows of the validation shard, mean cross-entropy), the LM head and
embedding outside the scheme. Different on purpose: PyTorch's initialization stream (so it is
one more seed, not the native run's), BF16 autocast around everything but the quartet2 layers.

  train:   QUARTET2_LIBRARY=.../libquartet2_c.so PYTHONPATH=python python3 scripts/torch_convert_train.py \\
             --data data/gcide --preset 30m --seq 512 --batch 32 --steps 400 --lr 1e-3 --warmup-frac 0.05 \\
             --scheme quartet2 --seed 0 --out runs/torch-q2-s0.metrics.jsonl
  compare: python3 scripts/torch_convert_train.py --compare NAME=METRICS.jsonl ...
           (train loss averaged over windows of 50 steps, and every validation loss, side by side)
"""
import argparse
import json
import math
import os
import sys
import time

from hf_check import read_shard  # the shard reader (both header versions), beside this script

WINDOW = 50


class Stream:
    """src/data/loader.cpp's Loader at world 1: consecutive windows, wrapping at the end."""

    def __init__(self, tokens, batch, seq):
        self.tokens, self.rows, self.position = tokens, batch * seq, 0
        self.shape = (batch, seq)

    def next(self):
        if self.position + self.rows + 1 > self.tokens.size:
            self.position = 0
        w = self.tokens[self.position:self.position + self.rows + 1]
        self.position += self.rows
        return w[:-1].reshape(self.shape), w[1:].reshape(self.shape)


def learning_rate(a, step):
    warm, lo = math.floor(a.warmup_frac * a.steps), a.lr * a.min_lr_ratio
    if step < warm:
        return a.lr / 100 + (a.lr - a.lr / 100) * 0.5 * (1 - math.cos(math.pi * (step + 1) / warm))
    p = min(1.0, (step - warm + 1) / max(1.0, a.steps - warm))
    return lo + (a.lr - lo) * 0.5 * (1 + math.cos(math.pi * p))


def train(a):
    import torch
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "bench"))
    import torch_step
    from quartet2 import nn

    meta = json.load(open(os.path.join(a.data, "meta.json")))
    if len(meta["train_shards"]) != 1:
        sys.exit("torch_convert_train.py: reads a dataset of one train shard")
    vocab = meta["vocab_size"]
    train_tokens = read_shard(os.path.join(a.data, meta["train_shards"][0]))
    val_tokens = read_shard(os.path.join(a.data, meta["val_shard"]))
    device = torch.device("cuda")
    torch.manual_seed(a.seed)
    model = torch_step.Model(torch_step.preset(a.preset, vocab, a.seq))
    if a.scheme != "bf16":
        nn.convert(model, a.scheme, seed=a.seed)  # keeps `output`, the LM head
    model.to(device)
    opt = torch.optim.AdamW(torch_step.param_groups(model), lr=a.lr, betas=(0.9, 0.95), eps=1e-8, fused=True)
    stream, out = Stream(train_tokens, a.batch, a.seq), open(a.out, "w")

    def batch(s):
        x, y = s.next()
        return torch.from_numpy(x).to(device), torch.from_numpy(y).to(device)

    def evaluate():
        model.eval()
        s, total = Stream(val_tokens, a.batch, a.seq), 0.0
        with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
            for _ in range(a.eval_batches):
                total += model(*batch(s)).item()
        model.train()
        return total / a.eval_batches

    t0 = time.time()
    for step in range(a.steps):
        for g in opt.param_groups:
            g["lr"] = learning_rate(a, step)
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = model(*batch(stream))
        loss.backward()
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        rec = {"step": step + 1, "loss": loss.item(), "lr": learning_rate(a, step), "grad_norm": gnorm.item()}
        if not math.isfinite(rec["loss"]):
            sys.exit(f"torch_convert_train.py: non-finite loss at step {step + 1}")
        out.write(json.dumps(rec) + "\n")
        if (step + 1) % a.eval_every == 0 or step + 1 == a.steps:
            rec = {"step": step + 1, "val_loss": evaluate()}
            out.write(json.dumps(rec) + "\n")
            print(f"step {step + 1}/{a.steps} | loss {loss.item():.4f} | val loss {rec['val_loss']:.4f} | "
                  f"{time.time() - t0:.0f} s", file=sys.stderr)
        out.flush()


def compare(specs):
    runs = {}
    for spec in specs:
        name, _, path = spec.partition("=")
        train_loss, val = {}, {}
        for line in open(path):
            rec = json.loads(line)
            if "loss" in rec:
                train_loss[rec["step"]] = rec["loss"]
            if "val_loss" in rec:
                val[rec["step"]] = rec["val_loss"]
        runs[name] = (train_loss, val)
    names = list(runs)
    steps = max(max(t) for t, _ in runs.values())
    print(f"{'steps':>11s} " + " ".join(f"{n:>14s}" for n in names))
    for end in range(WINDOW, steps + 1, WINDOW):
        cells = []
        for n in names:
            vals = [runs[n][0][s] for s in range(end - WINDOW + 1, end + 1) if s in runs[n][0]]
            cells.append(f"{sum(vals) / len(vals):14.4f}" if vals else f"{'-':>14s}")
        print(f"{end - WINDOW + 1:5d}-{end:<5d} " + " ".join(cells))
    for s in sorted(set().union(*(v for _, v in runs.values()))):
        print(f"{'val ' + str(s):>11s} " + " ".join(f"{runs[n][1][s]:14.4f}" if s in runs[n][1] else f"{'-':>14s}"
                                                   for n in names))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--compare", nargs="+", metavar="NAME=METRICS.jsonl")
    ap.add_argument("--data", default="data/gcide")
    ap.add_argument("--preset", default="30m")
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--warmup-frac", type=float, default=0.05)
    ap.add_argument("--min-lr-ratio", type=float, default=0.1)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--scheme", default="quartet2")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="torch-convert.metrics.jsonl")
    a = ap.parse_args()
    if a.compare:
        compare(a.compare)
    else:
        train(a)


if __name__ == "__main__":
    main()
