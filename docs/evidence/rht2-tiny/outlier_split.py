"""Issue 24 experiment (docs/RESULTS.md, "MS-EDEN's bias on real tensors: the 30m preset"): wgrad
with the largest element of each token chunk whose outlier share exceeds TAU taken out of both
quantized operands (X^T, dY^T) and its products added exactly. Prints wgrad's single-draw
rel_err against the whole exact product and the DRAWS-draw ratio (quartet2 grad-error --curve)
for plain quartet2, two rotation rounds, the split, and the split with two rounds.

    python3 outlier_split.py QUARTET2_BINARY DUMP_DIR ROWS DRAWS [TAU]

The split's error is that of the quantized rest (its exact correction adds none), rescaled from
the rest's product to the whole one."""
import json, os, subprocess, sys, tempfile
import numpy as np

q2, d, rows, draws = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
tau = float(sys.argv[5]) if len(sys.argv) > 5 else 0.9
X = np.load(os.path.join(d, "x.npy"))[:rows]
dY = np.load(os.path.join(d, "dy.npy"))[:rows]
W = np.load(os.path.join(d, "w.npy"))

def split(M):
    R = M.copy()
    n = 0
    for k in range(0, M.shape[0], 128):
        b = M[k:k + 128].astype(np.float64) ** 2
        e, mx, am = b.sum(0), b.max(0), b.argmax(0)
        idx = np.nonzero((e > 0) & (mx > tau * e))[0]
        R[k + am[idx], idx] = 0
        n += len(idx)
    return R, n

Xr, nx = split(X)
dYr, ny = split(dY)

def run(dirpath, *args):
    out = subprocess.run([q2, "grad-error", "--load", dirpath, "--rows", "0", "--json", "--draws", str(draws),
                          "--curve", *args], capture_output=True, text=True, check=True).stdout
    w = json.loads(out)["wgrad"]
    c = w["curve"]
    return w["rel_err"], c[-1]["rel_err_mean"] * c[-1]["draws"] / c[0]["rel_err_mean"]

with tempfile.TemporaryDirectory() as t:
    full, rest = os.path.join(t, "full"), os.path.join(t, "rest")
    for p, x, dy in ((full, X, dY), (rest, Xr, dYr)):
        os.makedirs(p)
        np.save(os.path.join(p, "x.npy"), x)
        np.save(os.path.join(p, "dy.npy"), dy)
        np.save(os.path.join(p, "w.npy"), W)
    e_full = dY.astype(np.float64).T @ X.astype(np.float64)
    e_rest = dYr.astype(np.float64).T @ Xr.astype(np.float64)
    scale = (e_rest ** 2).sum() / (e_full ** 2).sum()
    plain = run(full, "--scheme", "quartet2")
    two = run(full, "--scheme", "quartet2", "--hadamard-rounds", "2")
    sp = run(rest, "--scheme", "quartet2")
    sp2 = run(rest, "--scheme", "quartet2", "--hadamard-rounds", "2")
    print(json.dumps({"dir": d, "extracted_x": nx, "extracted_dy": ny, "rest_energy_share": scale,
                      "plain": plain, "two_rounds": two, "split": [sp[0] * scale, sp[1]], "split_two_rounds": [sp2[0] * scale, sp2[1]]}))
