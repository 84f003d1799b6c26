#!/usr/bin/env bash
# Two-GPU checks of issue 7 (run on nvidia-h200-x2 from the repo root with gpu-bundle/ carried).
set -u
export NCCL_NVLS_ENABLE=0
tar -xJf gpu-bundle/lib.tar.xz -C gpu-bundle; mkdir -p data; tar -xJf gpu-bundle/gcide.data.tar.xz -C data
export LD_LIBRARY_PATH=gpu-bundle/lib:/usr/local/cuda/lib64
Q=gpu-bundle/quartet2
C="--config configs/gcide-30m.toml --device cuda --train.steps=50 --log.eval_every=1000 --log.ckpt_every=1000 --log.log_every=10"
nvidia-smi -L
# 1 GPU at global batch 32 against 2 GPUs x 16
$Q train $C --train.batch_size=32 --out.dir=runs/w1 > $OUT/w1.log 2>&1; echo "w1 exit $?"
rm -rf /tmp/rdv; $Q train $C --train.batch_size=16 --world-size 2 --rank 0 --rendezvous /tmp/rdv --out.dir=runs/w2 > $OUT/w2r0.log 2>&1 &
$Q train $C --train.batch_size=16 --world-size 2 --rank 1 --rendezvous /tmp/rdv --out.dir=runs/w2 > $OUT/w2r1.log 2>&1; echo "w2 rank1 exit $?"; wait; echo "w2 rank0 done"
python3 - <<'PY'
import json
def losses(p): return {json.loads(l)['step']: json.loads(l)['loss'] for l in open(p) if '"loss"' in l and 'val' not in l}
a, b = losses('runs/w1/metrics.jsonl'), losses('runs/w2/metrics.jsonl')
print('step  1-GPU  2-GPU')
for s in [1,2,5,10,20,30,40,50]: print(s, round(a.get(s,float('nan')),4), round(b.get(s,float('nan')),4))
PY
# throughput: 100m quartet2, 16 x 1024 per GPU, 20 steps
T="--config configs/gcide-30m.toml --device cuda --model.preset=100m --model.seq_len=1024 --train.batch_size=16 --train.steps=20 --log.eval_every=1000 --log.ckpt_every=1000 --log.log_every=20"
$Q train $T --out.dir=runs/t1 2>&1 | grep "step     20" | sed 's/^/1 GPU: /'
rm -rf /tmp/rdv3; $Q train $T --world-size 2 --rank 1 --rendezvous /tmp/rdv3 --out.dir=runs/t2 > /dev/null 2>&1 &
$Q train $T --world-size 2 --rank 0 --rendezvous /tmp/rdv3 --out.dir=runs/t2 2>&1 | grep "step     20" | sed 's/^/2 GPUs: /'; wait
# kill rank 1 mid-run; rank 0 must exit with an error (timeout 30 s); then resume on 1 GPU
K="--config configs/gcide-30m.toml --device cuda --train.steps=3000 --log.eval_every=100000 --log.ckpt_every=100 --log.log_every=500 --dist-timeout 30"
rm -rf /tmp/rdv2; $Q train $K --world-size 2 --rank 0 --rendezvous /tmp/rdv2 --out.dir=runs/k > $OUT/k0.log 2>&1 & P0=$!
$Q train $K --world-size 2 --rank 1 --rendezvous /tmp/rdv2 --out.dir=runs/k > $OUT/k1.log 2>&1 & P1=$!
sleep 12; kill -9 $P1; t0=$SECONDS; wait $P0; echo "rank 0 exit $? $((SECONDS - t0)) s after the kill"; tail -n 2 $OUT/k0.log
ck=$(python3 -c "import json;print(max(json.loads(l)['step'] for l in open('runs/k/metrics.jsonl'))//100*100)")
$Q train $K --resume --out.dir=runs/k --train.stop_at=$((ck + 20)) > $OUT/resume.log 2>&1; echo "resume on 1 GPU from step $ck: exit $?"
grep -E "resumed|step " $OUT/resume.log | tail -n 3
