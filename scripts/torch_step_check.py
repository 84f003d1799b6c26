#!/usr/bin/env python3
"""Checks that bench/torch_step.py's Model is the model quartet2 builds, with shared weights.

For each case (the Llama `tiny` preset; the same with grouped-query attention; nanochat-d20's
architecture at depth 4, i.e. d_model 256, 2 heads of 128, windows "SSSL" of seq_len / 2 = 32),
on the CPU: trains a model for --steps steps with `quartet2 train --method.scheme=fp32` on the
tiny made-up dataset (scripts/tiny-dataset.sh), so that every weight, the nanochat lambdas
included, has moved from its init; reads its checkpoint here (the Q2CK layout of
src/train/checkpoint.h: magic, version, JSON header, float32 parameters in the header's order,
CRC-32) into torch_step.Model built from the header's model config; and compares the float32
validation loss on the windows `quartet2 eval` reads with `quartet2 eval --json`'s, through both
attention paths (scaled_dot_product_attention with a boolean mask, as eager torch_step; and
flex_attention with a BlockMask, as compiled torch_step, here unfused; models with windowed
layers only). Passes when each is within --rtol (relative). For the nanochat case it also prints
the loss with each nanochat option switched off (or the lambdas put back to their init) on the
same weights, to show that the check would see one implemented wrongly.

  scripts/torch_step_check.py [--quartet2 build/quartet2] [--work DIR] [--steps 40] [--rtol 1e-5]
Needs torch and numpy. Exit status 0 when every loss agrees.
"""
import argparse
import dataclasses
import json
import os
import struct
import subprocess
import sys
import tempfile
import warnings
import zlib

import numpy as np
import torch

from hf_check import val_tokens  # beside this script

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import torch_step  # noqa: E402

CASES = {
    "llama tiny": ["--model.preset=tiny"],
    "llama tiny, 2 kv heads": ["--model.preset=tiny", "--model.n_kv_heads=2"],
    "nanochat depth 4": ["--model.preset=nanochat-d20", "--model.depth=4"],
}
# The sensitivity rows: (config changes, parameters set to a constant), each on the same weights.
ABLATIONS = {"window_pattern L": ({"window_pattern": "L"}, {}), "no softcap": ({"logit_softcap": 0.0}, {}),
             "no qk_norm": ({"qk_norm": False}, {}), "no embed_norm": ({"embed_norm": False}, {}),
             "lambdas at init": ({}, {"resid_lambdas": 1.0, "x0_lambdas": 0.0})}


def read_checkpoint(path):
    """(header, {name: float32 array [rows, cols]})."""
    raw = open(path, "rb").read()
    magic, version, hlen = struct.unpack_from("<IIQ", raw, 0)
    if magic != 0x4B433251 or version != 1:
        sys.exit(f"{path}: not a version-1 quartet2 checkpoint")
    if zlib.crc32(raw[:-4]) != struct.unpack_from("<I", raw, len(raw) - 4)[0]:
        sys.exit(f"{path}: checksum mismatch")
    header = json.loads(raw[16:16 + hlen])
    params, offset = {}, 16 + hlen
    for name, rows, cols in header["params"]:
        params[name] = np.frombuffer(raw, np.float32, rows * cols, offset).reshape(rows, cols)
        offset += 4 * rows * cols
    return header, params


def load(config, params):
    model = torch_step.Model(config)
    named = dict(model.named_parameters())
    if set(named) != set(params):
        sys.exit(f"parameters differ: torch only {sorted(set(named) - set(params))}, "
                 f"quartet2 only {sorted(set(params) - set(named))}")
    with torch.no_grad():
        for name, p in named.items():
            p.copy_(torch.from_numpy(params[name].copy()).view_as(p))
    return model.eval()


def loss_on(model, tokens, ev, flex):
    """eval's windows: batch i is [i B S, (i + 1) B S + 1) of the validation split (hf_check.py)."""
    b, s = ev["batch_size"], ev["seq_len"]
    masks = torch_step.window_block_masks(model.c, s, "cpu") if flex else None
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(ev["batches"]):
            start = i * b * s
            if start + b * s + 1 > len(tokens):
                break
            window = torch.from_numpy(tokens[start:start + b * s + 1])
            nats += model(window[:-1].view(b, s), window[1:].view(b, s), masks).double().item() * b * s
            count += b * s
    if count != ev["tokens"]:
        sys.exit(f"{count} tokens evaluated, quartet2 evaluated {ev['tokens']}")
    return nats / count


def run(cmd):
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{' '.join(cmd)}: exit {out.returncode}\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
    return out.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quartet2", default=os.path.join(HERE, "..", "build", "quartet2"))
    ap.add_argument("--work", help="folder for the dataset and the runs (default: a new temporary one)")
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--rtol", type=float, default=1e-5)
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="torch-step-check-")
    data = os.path.join(work, "data")
    if not os.path.exists(os.path.join(data, "meta.json")):
        run([os.path.join(HERE, "tiny-dataset.sh"), a.quartet2, data])
    tokens = val_tokens(data)
    warnings.filterwarnings("ignore", message="flex_attention called without torch.compile")
    torch.manual_seed(0)
    ok, rows = True, []
    for case, overrides in CASES.items():
        out_dir = os.path.join(work, case.replace(" ", "-").replace(",", ""))
        run([a.quartet2, "train", "--config", os.path.join(HERE, "..", "configs", "tiny-demo.toml"), *overrides,
             "--device", "cpu", "--method.scheme=fp32", "--model.seq_len=64", "--train.batch_size=4",
             f"--train.steps={a.steps}", f"--log.eval_every={a.steps}", f"--log.ckpt_every={a.steps}",
             "--log.eval_batches=4", f"--data.dir={data}", f"--out.dir={out_dir}", "--overwrite"])
        ckpt = os.path.join(out_dir, "checkpoint.bin")
        ev = json.loads(run([a.quartet2, "eval", "--checkpoint", ckpt, "--data", data, "--json"]))
        header, params = read_checkpoint(ckpt)
        config = torch_step.Config.from_json(header["model"])
        model = load(config, params)
        windowed = any(config.attention_window(l) >= 0 for l in range(config.n_layers))
        for flex in (False, True) if windowed else (False,):
            loss = loss_on(model, tokens, ev, flex)
            rel = abs(loss - ev["val_loss"]) / abs(ev["val_loss"])
            ok &= rel <= a.rtol
            rows.append((case, "flex_attention" if flex else "sdpa", ev["val_loss"], loss, rel, rel <= a.rtol))
        if config.init == "nanochat":
            for what, (change, constants) in ABLATIONS.items():
                changed = {**params, **{k: np.full_like(params[k], v) for k, v in constants.items()}}
                loss = loss_on(load(dataclasses.replace(config, **change), changed), tokens, ev, False)
                rows.append((case, what, ev["val_loss"], loss, abs(loss - ev["val_loss"]) / ev["val_loss"], None))
        print(f"{case}: {json.dumps(header['model'])}; {ev['tokens']} validation tokens "
              f"({ev['batches']} x {ev['batch_size']} x {ev['seq_len']}), step {ev['step']}")
    print(f"\n{'case':24s} {'torch attention':18s} {'quartet2 fp32':>14s} {'torch fp32':>14s} {'relative':>9s}")
    for case, what, q2, t, rel, good in rows:
        verdict = "ok" if good else "FAIL" if good is not None else "(ablation: should differ)"
        print(f"{case:24s} {what:18s} {q2:14.8f} {t:14.8f} {rel:9.2e} {verdict}")
    print(f"\n{'all agree' if ok else 'MISMATCH'} within rtol {a.rtol:g}; work folder {work}")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
