#!/usr/bin/env python3
"""Checks a `quartet2 export --format hf` folder against quartet2 itself, through the Hugging Face
Auto classes. Needs torch and transformers (and sentencepiece, which LlamaTokenizer needs anyway);
runs where those are installed, e.g. the device image.

  (a) tokenizer: AutoTokenizer's ids (fast, the default, and slow) equal the dataset's own
      SentencePiece ids, BOS first, on the first --docs validation documents;
  (b) loss: AutoModelForCausalLM's validation loss on the windows `quartet2 eval` reads equals
      `quartet2 eval --json` within --rtol (relative);
  (c) greedy: --tokens greedy tokens from AutoModelForCausalLM (the context cut to the model's
      sequence length, as quartet2 does) equal `quartet2 generate --temperature 0 --ids`;
  (d) with --nvfp4 DIR: the NVFP4 folder decoded with NumPy (ModelOpt layout: low nibble first,
      E4M3 block scales, float32 tensor scale) lies within NVFP4's error of the master weights,
      and the parts of each fused matrix (q/k/v, gate/up) share one tensor scale; and it is
      bit-identical (codes, E4M3 scales, tensor scale) to quartet2's forward quantization of the
      hf folder's master weights, fused as the model fuses them, computed by the C API
      (libquartet2_c through python/quartet2/_capi.py, $QUARTET2_LIBRARY) with --scheme's
      forward quantizer, of the BF16-rounded weights for --trained-on cuda as the GPU forward
      quantizes them; each linear has a finite positive input_scale shared by its parts.

Usage:
  scripts/hf_check.py --hf DIR --data DATA_DIR --quartet2 build/quartet2 --checkpoint CKPT \
      [--nvfp4 DIR] [--docs 200] [--batches N] [--tokens 64] [--prompt TEXT] \
      [--torch-device cpu|cuda] [--q2-device cpu|cuda] [--scheme quartet2] [--trained-on cuda|cpu]
Exit status 0 when every check passes.
"""
import argparse
import json
import os
import struct
import subprocess
import sys

import numpy as np

BOS = 1


def read_shard(path):
    """Tokens of a quartet2 shard (src/data/shard.h): header v1 (24 bytes) or v2 (28), then
    uint16 or uint32 tokens."""
    with open(path, "rb") as f:
        raw = f.read()
    magic, version, _vocab, width, count = struct.unpack_from("<IIIIQ", raw, 0)
    if magic != 0x4B543251:
        raise SystemExit(f"{path}: not a quartet2 shard")
    start = 24 if version == 1 else 28
    dtype = np.uint16 if width == 2 else np.uint32
    return np.frombuffer(raw, dtype=dtype, count=count, offset=start).astype(np.int64)


def val_tokens(data_dir):
    meta = json.load(open(os.path.join(data_dir, "meta.json")))
    return read_shard(os.path.join(data_dir, meta["val_shard"]))


def quartet2(args, *cmd):
    out = subprocess.run([args.quartet2, *cmd], check=True, capture_output=True, text=True)
    return out.stdout


def check_tokenizer(args, tokens):
    """(a): each document is [BOS] + its tokens in the stream."""
    from transformers import AutoTokenizer
    starts = np.flatnonzero(tokens == BOS)
    docs = [tokens[a + 1:b] for a, b in zip(starts, list(starts[1:]) + [len(tokens)])]
    docs = [d for d in docs if len(d) > 0][:args.docs]
    try:
        import sentencepiece
        sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(args.data, "tokenizer.model"))
        decode, source = sp.decode, "sentencepiece"
    except ImportError:
        decode, source = AutoTokenizer.from_pretrained(args.hf, use_fast=False).decode, "the slow tokenizer's decode"
    rows = []
    for fast in (True, False):
        tok = AutoTokenizer.from_pretrained(args.hf, use_fast=fast)
        bad = []
        for i, d in enumerate(docs):
            want = [BOS] + [int(t) for t in d]
            got = tok(decode([int(t) for t in d]))["input_ids"]
            if got != want:
                bad.append(i)
        detail = f"{type(tok).__name__}: {len(docs) - len(bad)}/{len(docs)} documents identical (text from {source})"
        if bad:
            detail += f"; first mismatch: document {bad[0]}"
        rows.append((f"(a) tokenizer ids, {'fast' if fast else 'slow'}", not bad and len(docs) >= args.docs, detail))
    return rows


def check_loss(args, tokens, model, torch):
    """(b): batch i is the window [i B S, (i + 1) B S + 1) of the split, rows of S tokens."""
    cmd = ["eval", "--checkpoint", args.checkpoint, "--data", args.data, "--json", "--device", args.q2_device]
    if args.batches:
        cmd += ["--batches", str(args.batches)]
    q2 = json.loads(quartet2(args, *cmd))
    b, s = q2["batch_size"], q2["seq_len"]
    nats, count = 0.0, 0
    with torch.no_grad():
        for i in range(q2["batches"]):
            start = i * b * s
            if start + b * s + 1 > len(tokens):
                break  # quartet2 reads each batch of a short split once
            window = torch.tensor(tokens[start:start + b * s + 1], device=args.torch_device)
            inputs, targets = window[:-1].view(b, s), window[1:].view(b, s)
            logits = model(inputs).logits.float()
            nats += torch.nn.functional.cross_entropy(logits.view(b * s, -1), targets.reshape(-1),
                                                      reduction="sum").double().item()
            count += b * s
    loss = nats / count
    rel = abs(loss - q2["val_loss"]) / abs(q2["val_loss"])
    ok = count == q2["tokens"] and rel <= args.rtol
    return [("(b) validation loss", ok, f"hf {loss:.8f}, quartet2 {q2['val_loss']:.8f} (scheme {q2['scheme']}), "
             f"relative {rel:.2e} <= {args.rtol:g}, {count} tokens (quartet2 {q2['tokens']})")]


def check_greedy(args, tok, model, torch, seq_len):
    """(c): quartet2's sampler feeds the last seq_len tokens at every step."""
    q2 = [int(t) for t in quartet2(args, "generate", "--checkpoint", args.checkpoint, "--data", args.data, "--prompt",
                                   args.prompt, "--temperature", "0", "--tokens", str(args.tokens), "--ids",
                                   "--device", args.q2_device).split()]
    prompt = tok(args.prompt)["input_ids"]
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(args.tokens):
            window = torch.tensor([ids[-seq_len:]], device=args.torch_device)
            ids.append(int(model(window).logits[0, -1].float().argmax()))
    ok = ids == q2
    detail = f"{args.tokens} tokens after a prompt of {len(prompt)}: "
    if ok:
        detail += "identical"
    else:
        at = next((i for i, (a, c) in enumerate(zip(ids, q2)) if a != c), min(len(ids), len(q2)))
        detail += f"first difference at position {at} (hf {ids[at:at + 5]}, quartet2 {q2[at:at + 5]})"
    return [("(c) greedy continuation", ok, detail)]


def safetensors(folder):
    """{name: numpy array} of an exported folder (single file or shards with an index)."""
    index = os.path.join(folder, "model.safetensors.index.json")
    files = (sorted(set(json.load(open(index))["weight_map"].values())) if os.path.exists(index)
             else ["model.safetensors"])
    dtypes = {"F32": np.float32, "U8": np.uint8, "F8_E4M3": np.uint8, "BF16": np.uint16}
    out = {}
    for name in files:
        raw = open(os.path.join(folder, name), "rb").read()
        n = struct.unpack_from("<Q", raw)[0]
        header = json.loads(raw[8:8 + n])
        header.pop("__metadata__", None)
        for key, t in header.items():
            a, b = t["data_offsets"]
            arr = np.frombuffer(raw[8 + n + a:8 + n + b], dtype=dtypes[t["dtype"]]).reshape(t["shape"])
            out[key] = (arr.astype(np.uint32) << 16).view(np.float32) if t["dtype"] == "BF16" else arr
    return out


def e4m3(codes):
    e, m = (codes >> 3) & 15, codes & 7
    v = np.where(e == 0, m / 8.0 * 2.0 ** -6, (1 + m / 8.0) * 2.0 ** (e.astype(np.float64) - 7))
    return np.where((codes & 0x7F) == 0x7F, np.nan, np.where(codes & 0x80, -v, v))


E2M1 = np.array([0, 0.5, 1, 1.5, 2, 3, 4, 6, -0.0, -0.5, -1, -1.5, -2, -3, -4, -6])


def check_nvfp4(args):
    """(d): decode with NumPy and compare with the float32 master weights of the hf folder."""
    q, w = safetensors(args.nvfp4), safetensors(args.hf)
    rows, worst, shared = [], 0.0, True
    for name in sorted(k for k in q if k.endswith(".weight_scale_2")):
        p = name[:-len(".weight_scale_2")]
        packed, scales = q[p + ".weight"], q[p + ".weight_scale"]
        codes = np.stack([packed & 0xF, packed >> 4], axis=-1).reshape(packed.shape[0], -1)  # low nibble first
        values = E2M1[codes] * np.repeat(e4m3(scales), 16, axis=1) * float(q[name])
        master = w[p + ".weight"].astype(np.float64)
        err = np.linalg.norm(values - master) / np.linalg.norm(master)
        worst = max(worst, err)
    for layer in sorted({k.split(".self_attn")[0] for k in q if ".self_attn." in k}):
        for parts in (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("mlp.gate_proj", "mlp.up_proj")):
            scales = {float(q[f"{layer}.{p}.weight_scale_2"]) for p in parts}
            shared &= len(scales) == 1
    rows.append(("(d) nvfp4 decodes near the master weights", worst < 0.2,
                 f"largest relative error {worst:.4f} (NVFP4 rounding is about 0.1)"))
    rows.append(("(d) nvfp4 fused parts share a tensor scale", shared, "q/k/v and gate/up"))
    return rows + check_nvfp4_bits(args, q, w)


def bf16_round(x):
    """float32 -> the nearest BF16 (ties to even), as float32."""
    u = x.astype(np.float32).view(np.uint32)
    return ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32).view(np.float32)


def check_nvfp4_bits(args, q, w):
    """(d) the folder against the C API's forward quantizer of the fused master weights."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
    from quartet2 import _capi
    # The forward's 1x16 W quantizer (src/linear/scheme.cpp); nvidia's W is in 16x16 blocks, which
    # the C API does not quantize.
    base = args.scheme[:-len("_fwd")] if args.scheme.endswith("_fwd") else args.scheme
    quantizer = {"quartet2": _capi.FOUR_OVER_SIX, "quartet2_no46": _capi.RTN, "tetrajet2": _capi.RTN}.get(base)
    if quantizer is None:
        return [("(d) nvfp4 bit-identical to the forward quantizer", False,
                 f"no C API quantizer for the forward W of scheme '{args.scheme}'")]

    def quantize(m):
        x = np.ascontiguousarray(bf16_round(m) if args.trained_on == "cuda" else m.astype(np.float32))
        rows, cols = x.shape
        packed = np.zeros((rows, cols // 2), np.uint8)
        scales = np.zeros(_capi.scale_bytes(rows, cols, _capi.SCALES_ROW_MAJOR), np.uint8)
        tensor_scale = np.zeros(1, np.float32)
        _capi.quantize(quantizer, _capi.Tensor(x.ctypes.data, rows, cols, _capi.FLOAT32, _capi.CPU),
                       _capi.NVFP4(packed.ctypes.data, scales.ctypes.data, tensor_scale.ctypes.data, rows, cols,
                                   _capi.SCALES_ROW_MAJOR, _capi.CPU))
        return packed, scales.reshape(rows, cols // 16), tensor_scale[0]

    groups = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
              ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))
    compared, differ, scaled = 0, [], True
    for layer in sorted({k.split(".self_attn")[0] for k in q if ".self_attn." in k}):
        for parts in groups:
            names = [f"{layer}.{p}" for p in parts]
            packed, scales, tensor_scale = quantize(np.concatenate([w[n + ".weight"] for n in names]))
            row = 0
            for n in names:
                rows = q[n + ".weight"].shape[0]
                same = (np.array_equal(q[n + ".weight"], packed[row:row + rows]) and
                        np.array_equal(q[n + ".weight_scale"], scales[row:row + rows]) and
                        q[n + ".weight_scale_2"].tobytes() == np.float32(tensor_scale).tobytes())
                compared += 1
                if not same:
                    differ.append(n)
                row += rows
            inputs = {float(q[n + ".input_scale"]) if n + ".input_scale" in q else float("nan") for n in names}
            scaled &= len(inputs) == 1 and all(np.isfinite(v) and v > 0 for v in inputs)
    return [("(d) nvfp4 bit-identical to the forward quantizer", compared > 0 and not differ,
             f"{compared - len(differ)} of {compared} linears ({args.scheme}, trained on {args.trained_on})" +
             (f"; differ: {', '.join(differ[:4])}" if differ else "")),
            ("(d) nvfp4 input_scales", scaled, "finite, positive, one per fused matrix")]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--hf", required=True, help="folder written by `quartet2 export --format hf`")
    ap.add_argument("--data", required=True, help="the prepared dataset the checkpoint trained on")
    ap.add_argument("--quartet2", required=True, help="the quartet2 binary")
    ap.add_argument("--checkpoint", required=True, help="the checkpoint the folder was exported from")
    ap.add_argument("--nvfp4", help="folder written by `quartet2 export --format nvfp4` (optional)")
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--batches", type=int, default=0, help="validation batches (default: the checkpoint's)")
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--prompt", default="The")
    ap.add_argument("--rtol", type=float, default=1e-4)
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--q2-device", default="cpu")
    ap.add_argument("--scheme", default="quartet2", help="(d): the scheme the checkpoint trained with")
    ap.add_argument("--trained-on", default="cuda", choices=["cuda", "cpu"],
                    help="(d): the device it trained on (cuda: the forward quantized BF16-rounded weights)")
    args = ap.parse_args()

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    tokens = val_tokens(args.data)
    rows = check_tokenizer(args, tokens)
    model = AutoModelForCausalLM.from_pretrained(args.hf, torch_dtype=torch.float32).to(args.torch_device).eval()
    rows += check_loss(args, tokens, model, torch)
    rows += check_greedy(args, AutoTokenizer.from_pretrained(args.hf), model, torch,
                         model.config.max_position_embeddings)
    if args.nvfp4:
        rows += check_nvfp4(args)

    width = max(len(r[0]) for r in rows)
    print(f"{'check':<{width}}  result  detail")
    for name, ok, detail in rows:
        print(f"{name:<{width}}  {'PASS' if ok else 'FAIL':<6}  {detail}")
    sys.exit(0 if all(r[1] for r in rows) else 1)


if __name__ == "__main__":
    main()
