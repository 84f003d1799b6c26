#!/usr/bin/env python3
"""Single-draw backward error of two scheme variants on a run's dumped tensors, averaged over seeds.

    python3 scripts/single_draw_error.py QUARTET2 RUN_DIR [ROWS] [SEEDS] -- ARGS_A -- ARGS_B

One `grad-error --draws 1` per tensor, variant and seed (SEEDS, default 16): one draw's rel_err
scatters by several percent on small tensors, so a single draw cannot tell a 5% change; the mean
over seeds can (its standard error is printed). ARGS_A and ARGS_B are grad-error options, e.g.
`--scheme quartet2` and `--scheme quartet2 --hadamard-rounds 2`. Prints a Markdown table of dgrad
and wgrad per (step, linear): each variant's mean, the change, and its standard error; then the
largest change. JOBS (default 1) runs that many grad-error processes at once, one OpenMP thread
each (a machine with many cores); the rows keep their order and come out as each tensor is done.
"""
import concurrent.futures
import glob
import json
import os
import statistics
import subprocess
import sys


def main():
    argv = sys.argv[1:]
    if argv.count("--") != 2:
        sys.exit(__doc__)
    first = argv.index("--")
    second = argv.index("--", first + 1)
    head, a, b = argv[:first], argv[first + 1:second], argv[second + 1:]
    if len(head) < 2:
        sys.exit(__doc__)
    q2, run = head[0], head[1]
    rows = head[2] if len(head) > 2 else "1024"
    seeds = int(head[3]) if len(head) > 3 else 16
    tensors = sorted(glob.glob(os.path.join(run, "tensors", "step*", "*")))
    if not tensors:
        sys.exit(f"single_draw_error: no dumped tensors under {run}/tensors")

    jobs = os.environ.get("JOBS", "1")
    if not jobs.isdigit() or int(jobs) < 1:
        sys.exit(f"single_draw_error: JOBS must be a positive integer, got '{jobs}'")
    jobs = int(jobs)
    env = dict(os.environ, OMP_NUM_THREADS="1") if jobs > 1 else None

    def draw(path, args, seed):
        r = subprocess.run([q2, "grad-error", "--load", path, "--rows", rows, "--draws", "1", "--seed", str(seed),
                            "--json"] + args, capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"grad-error failed on {path}: {r.stderr.strip()}")
        j = json.loads(r.stdout)
        return {p: j[p]["rel_err"] for p in ("dgrad", "wgrad")}

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=jobs)
    # Every draw is queued at once; a tensor's rows are printed when its draws are done.
    pending = [(path, [[pool.submit(draw, path, args, seed) for seed in range(seeds)] for args in (a, b)])
               for path in tensors]

    def errors(futures):
        out = {"dgrad": [], "wgrad": []}
        for f in futures:
            try:
                r = f.result()
            except RuntimeError as e:
                pool.shutdown(cancel_futures=True)
                sys.exit(f"single_draw_error: {e}")
            for p in out:
                out[p].append(r[p])
        return out

    print(f"| step | linear | product | A: mean of {seeds} | B: mean of {seeds} | change | its std error |")
    print("|---|---|---|---|---|---|---|")
    worst = None
    for path, (fa, fb) in pending:
        step = os.path.basename(os.path.dirname(path))[len("step"):]
        ea, eb = errors(fa), errors(fb)
        for p in ("dgrad", "wgrad"):
            ma, mb = statistics.mean(ea[p]), statistics.mean(eb[p])
            change = mb / ma - 1
            # Independent draws: the ratio's standard error from both means'.
            se = (mb / ma) * ((statistics.stdev(ea[p]) / ma) ** 2 / seeds + (statistics.stdev(eb[p]) / mb) ** 2 / seeds) ** 0.5
            print(f"| {step} | {os.path.basename(path)} | {p} | {ma:.4g} | {mb:.4g} | {100 * change:+.1f}% | "
                  f"{100 * se:.1f}% |", flush=True)
            if worst is None or change > worst[0]:
                worst = (change, se, step, os.path.basename(path), p)
    print()
    print(f"A = {' '.join(a)}; B = {' '.join(b)}. Largest change {100 * worst[0]:+.1f}% (std error "
          f"{100 * worst[1]:.1f}%): step {worst[2]}, {worst[3]}, {worst[4]}.")


if __name__ == "__main__":
    main()
