#!/usr/bin/env bash
# `quartet2 export` to Hugging Face and NVFP4 folders, and the eval / generate options around it,
# through the command line on tiny CPU runs. The files are checked with plain Python (json,
# struct): the weights against the plain safetensors export, the tokenizer against the dataset's.
# Usage: scripts/cli_export_test.sh QUARTET2_BINARY
set -euo pipefail
q2=$(realpath "$1")
here=$(realpath "$(dirname "$0")")
work=$(mktemp -d "${TMPDIR:-/tmp}/q2-export.XXXXXX")
trap 'rm -rf "$work"' EXIT
cd "$work"
export OMP_NUM_THREADS=1
"$here/tiny-dataset.sh" "$q2" data
args=(--data.dir=data --model.seq_len=32 --train.batch_size=2 --log.eval_batches=1 --train.steps=3)
train() { "$q2" train "${args[@]}" "$@" >train.log 2>&1 || { cat train.log; exit 1; }; }
train --method.scheme=bf16 --out.dir=runs/bf16 --model.n_kv_heads=2
train --method.scheme=quartet2 --out.dir=runs/q2
train --method.scheme=bf16 --out.dir=runs/nano --model.mlp=relu2 --model.qk_norm=true --model.logit_softcap=15
failed=0 passed=0
check() {  # check NAME COMMAND...: the command succeeds
  local name=$1 out
  shift
  if out=$("$@" 2>&1); then passed=$((passed + 1)); else echo "FAIL: $name"; echo "$out" | tail -n 5; failed=$((failed + 1)); fi
}
expect_error() {  # expect_error MESSAGE COMMAND...: the command fails printing MESSAGE
  local want=$1 out
  shift
  if out=$("$@" 2>&1); then echo "FAIL (exit 0): $*"; failed=$((failed + 1)); return; fi
  if ! grep -qF -- "$want" <<<"$out"; then
    echo "FAIL (message): $*"; echo "  wanted: $want"; echo "  got: $(tail -n 1 <<<"$out")"; failed=$((failed + 1)); return
  fi
  passed=$((passed + 1))
}

"$q2" export --checkpoint runs/bf16/checkpoint.bin --out plain.safetensors >/dev/null
"$q2" export --checkpoint runs/bf16/checkpoint.bin --format hf --out hf >/dev/null
"$q2" export --checkpoint runs/bf16/checkpoint.bin --format hf --out sharded --max-shard-mb 0.3 >/dev/null
"$q2" export --checkpoint runs/q2/checkpoint.bin --format nvfp4 --out nvfp4 >/dev/null

cat >st.py <<'PY'
import json, struct, sys, os
def read(path):  # {name: (dtype, shape, bytes)} of one safetensors file
    b = open(path, "rb").read()
    n = struct.unpack("<Q", b[:8])[0]
    h = json.loads(b[8:8 + n])
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"], b[8 + n + v["data_offsets"][0]:8 + n + v["data_offsets"][1]]) for k, v in h.items()}
def folder(d):  # every tensor of an exported folder, through the index when sharded
    idx = os.path.join(d, "model.safetensors.index.json")
    if not os.path.exists(idx):
        return read(os.path.join(d, "model.safetensors"))
    out = {}
    for f in sorted(set(json.load(open(idx))["weight_map"].values())):
        out.update(read(os.path.join(d, f)))
    return out
def load(path):
    return json.load(open(path))
PY

# The folder holds what AutoModelForCausalLM and AutoTokenizer read, with Llama naming.
check "config.json" python3 -c '
from st import *
c = load("hf/config.json")
want = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256, "intermediate_size": 768,
        "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 64,
        "max_position_embeddings": 32, "vocab_size": 300, "tie_word_embeddings": False, "bos_token_id": 1,
        "eos_token_id": None, "torch_dtype": "float32", "hidden_act": "silu", "rms_norm_eps": 1e-5, "rope_theta": 10000.0}
bad = {k: (c.get(k), v) for k, v in want.items() if c.get(k, "absent") != v}
assert not bad, bad'
check "tokenizer files" python3 -c '
from st import *
t = load("hf/tokenizer_config.json")
assert t["tokenizer_class"] == "LlamaTokenizer" and t["add_bos_token"] and not t["add_eos_token"], t
assert not t["legacy"] and not t["add_prefix_space"] and not t["clean_up_tokenization_spaces"], t
assert t["eos_token"] is None and t["pad_token"] is None and t["bos_token"] == "<s>" and t["unk_token"] == "<unk>", t
assert load("hf/special_tokens_map.json") == {"bos_token": "<s>", "unk_token": "<unk>"}
assert load("hf/generation_config.json")["bos_token_id"] == 1'
check "tokenizer.model is the dataset's" cmp hf/tokenizer.model data/tokenizer.model
check "model card's validation is the run's last" python3 -c '
import json
val = [json.loads(l) for l in open("runs/bf16/metrics.jsonl") if "val_loss" in l][-1]
card = open("hf/README.md").read()
assert "loss %.6f nats/token" % val["val_loss"] in card, card
assert "float32 master weights" in card'
check "weights equal the plain export's" python3 -c '
from st import *
plain, hf = read("plain.safetensors"), folder("hf")
assert plain.keys() == hf.keys() and len(hf) == 9 * 4 + 3, sorted(hf)
assert all(plain[k] == hf[k] for k in hf)
assert hf["model.layers.0.self_attn.k_proj.weight"][1] == [128, 256]'
check "shards hold the same tensors, each listed in the index" python3 -c '
from st import *
import os
idx = load("sharded/model.safetensors.index.json")
files = sorted(set(idx["weight_map"].values()))
assert len(files) > 1 and not os.path.exists("sharded/model.safetensors"), files
for f in files:
    assert all(idx["weight_map"][k] == f for k in read("sharded/" + f)), f
assert folder("sharded") == folder("hf")
assert idx["metadata"]["total_size"] == sum(len(v[2]) for v in folder("hf").values())'
check "nvfp4: ModelOpt tensors and config" python3 -c '
from st import *
t = folder("nvfp4")
q = load("nvfp4/hf_quant_config.json")["quantization"]
assert q["quant_algo"] == "NVFP4" and q["group_size"] == 16 and q["exclude_modules"] == ["lm_head"], q
assert load("nvfp4/config.json")["quantization_config"]["quant_method"] == "modelopt"
p = "model.layers.3.mlp.down_proj."
assert (t[p + "weight"][0], t[p + "weight"][1]) == ("U8", [256, 384]), t[p + "weight"][:2]
assert (t[p + "weight_scale"][0], t[p + "weight_scale"][1]) == ("F8_E4M3", [256, 48])
assert (t[p + "weight_scale_2"][0], t[p + "weight_scale_2"][1]) == ("F32", [])
a = "model.layers.0.self_attn."
assert t[a + "q_proj.weight_scale_2"][2] == t[a + "k_proj.weight_scale_2"][2] == t[a + "v_proj.weight_scale_2"][2]
assert t[a + "q_proj.input_scale"][:2] == ("F32", []) and t[p + "input_scale"][:2] == ("F32", [])
assert t[a + "q_proj.input_scale"][2] == t[a + "k_proj.input_scale"][2] == t[a + "v_proj.input_scale"][2]
assert all(t[k][0] == "BF16" for k in ("lm_head.weight", "model.embed_tokens.weight", "model.norm.weight"))'

expect_error "already holds files" "$q2" export --checkpoint runs/bf16/checkpoint.bin --format hf --out hf
expect_error "is a file; --format hf and nvfp4 write a folder" "$q2" export --checkpoint runs/bf16/checkpoint.bin \
  --format hf --out plain.safetensors
expect_error "scheme 'bf16' keeps W in bf16 in its forward pass" "$q2" export --checkpoint runs/bf16/checkpoint.bin \
  --format nvfp4 --out nv2
expect_error "keeps the tensors it does not quantize in bf16" "$q2" export --checkpoint runs/q2/checkpoint.bin \
  --format nvfp4 --dtype f32 --out nv3
expect_error "apply to --format hf and nvfp4" "$q2" export --checkpoint runs/bf16/checkpoint.bin --out x.safetensors \
  --max-shard-mb 1
expect_error "--calib-windows and --device apply to --format nvfp4 only" "$q2" export \
  --checkpoint runs/q2/checkpoint.bin --format hf --out hf-calib --calib-windows 4
expect_error "--calib-windows" "$q2" export --checkpoint runs/q2/checkpoint.bin --format nvfp4 --out nv4 --calib-windows -1
expect_error 'cannot express model.mlp = "relu2", model.qk_norm = true, model.logit_softcap = 15' \
  "$q2" export --checkpoint runs/nano/checkpoint.bin --format hf --out nano

# eval: --json at full precision, the same figures as the line.
check "eval --json" python3 -c '
import json, subprocess, sys
j = json.loads(subprocess.check_output([sys.argv[1], "eval", "--checkpoint", "runs/bf16/checkpoint.bin", "--json"]))
line = subprocess.check_output([sys.argv[1], "eval", "--checkpoint", "runs/bf16/checkpoint.bin"], text=True)
assert line.startswith("val loss %.6f | val bpb %.6f | %d tokens" % (j["val_loss"], j["val_bpb"], j["tokens"])), (line, j)' "$q2"
# The checkpoint's relative data.dir is found from another folder; when it cannot be, --data is named.
mkdir -p elsewhere moved
cp runs/bf16/checkpoint.bin moved/
check "eval from another folder" bash -c "cd elsewhere && '$q2' eval --checkpoint ../runs/bf16/checkpoint.bin"
expect_error "pass --data DIR" bash -c "cd elsewhere && '$q2' eval --checkpoint ../moved/checkpoint.bin"
check "eval --data" bash -c "cd elsewhere && '$q2' eval --checkpoint ../moved/checkpoint.bin --data ../data"
# generate: --ids (BOS, the prompt, then the new tokens); a stop at BOS ends on it; generated BOS
# tokens show as <s> in the text.
check "generate --ids, --stop-at-bos, <s>" python3 -c '
import subprocess, sys
def gen(seed, *a):
    return subprocess.check_output([sys.argv[1], "generate", "--checkpoint", "runs/bf16/checkpoint.bin", "--prompt", "the",
                                    "--tokens", "200", "--temperature", "3", "--top-k", "0", "--seed", str(seed), *a],
                                   text=True)
for seed in range(20):  # the first seed whose sample holds a BOS
    ids = [int(t) for t in gen(seed, "--ids").split()]
    assert ids[0] == 1 and len(ids) > 200, ids
    new = ids[-200:]
    if 1 in new:
        break
assert 1 in new, "no seed generated a BOS"
stopped = [int(t) for t in gen(seed, "--ids", "--stop-at-bos").split()]
assert stopped == ids[:len(ids) - 200 + new.index(1) + 1], (stopped, ids)
assert gen(seed).count("<s>") == new.count(1)' "$q2"

echo "cli_export: $passed passed, $failed failed"
((failed == 0))
