#!/usr/bin/env python3
"""Where a program's device memory went, from a cupti_trace.csv recorded with Q2_TRACE_MEMORY=1:
the memory outside the stream-ordered pools (the libraries' cudaMalloc; a stream-ordered record
is a pool's), the pools' sizes against the bytes their allocations held (what a plan can
predict), and every time a pool grew, with the request that made it grow and the kernel
launched last before it.

cudaMemGetInfo's used memory is the CUDA context, plus the memory outside the pools, plus the
pools' sizes (they keep what they reserved: cuda/runtime/device.h), so a pool's size less its
peak of utilized bytes is the memory that the allocation pattern costs beyond the plan.

  memory.py TRACE.csv [GROWTHS]   (GROWTHS: how many growth events to list, default 30)
"""
import bisect
import csv
import sys

GIB = 1 << 30


def load(path):
    mem, launches, kernels = [], [], {}
    with open(path, newline="") as f:
        for r in csv.reader(f):
            if len(r) >= 13 and r[0] == "M":
                mem.append({"alloc": r[1] == "alloc", "t": int(r[3]), "bytes": int(r[6]), "address": int(r[7]),
                            "pool_size": int(r[8]), "pool": int(r[10]), "pooled": r[11] == "1",
                            "source": r[12]})
            elif len(r) >= 7 and r[0] == "R":
                launches.append((int(r[3]), int(r[5])))
            elif len(r) >= 7 and r[0] == "K":
                kernels[int(r[5])] = r[1]
    mem.sort(key=lambda m: m["t"])
    launches = sorted((t, kernels[c]) for t, c in launches if c in kernels)
    return mem, launches


def last_kernel(launches, t):
    i = bisect.bisect_right(launches, (t, "\uffff")) - 1
    return launches[i][1].split("(")[0][-60:] if i >= 0 else "(none yet)"


def analyze(mem, launches):
    """Outside the pools: live bytes at their peak, and by source at that peak. Each pool (by
    base address, in order of first use): its largest size, the peak of bytes its allocations
    held (tracked here from the records), and each allocation that grew it past its largest
    size so far."""
    live, outside, peak_out, at_peak, by_source = {}, 0, 0, {}, {}
    pools = {}
    for m in mem:
        if m["pooled"]:
            p = pools.setdefault(m["pool"], {"max": 0, "held": 0, "held_peak": 0, "growths": []})
            if m["alloc"]:
                live[m["address"]] = m["bytes"]
                p["held"] += m["bytes"]
                p["held_peak"] = max(p["held_peak"], p["held"])
                if m["pool_size"] > p["max"]:
                    p["growths"].append({"t": m["t"], "bytes": m["bytes"], "before": p["max"],
                                         "after": m["pool_size"], "held": p["held"],
                                         "kernel": last_kernel(launches, m["t"])})
            else:
                p["held"] -= live.pop(m["address"], 0)
            p["max"] = max(p["max"], m["pool_size"])
            continue
        key = (m["address"], m["source"])
        if m["alloc"]:
            by_source[key] = m["bytes"]
            outside += m["bytes"]
            if outside > peak_out:
                peak_out, at_peak = outside, dict(by_source)
        else:
            outside -= by_source.pop(key, 0)
    sources = {}
    for (_, src), b in at_peak.items():
        sources[src or "(unknown)"] = sources.get(src or "(unknown)", 0) + b
    return {"outside_peak": peak_out, "outside_by_source": sources, "pools": list(pools.values())}


def main():
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    mem, launches = load(sys.argv[1])
    if not mem:
        sys.exit(f"memory.py: {sys.argv[1]} has no M rows (record it with Q2_TRACE_MEMORY=1)")
    a = analyze(mem, launches)
    t0 = mem[0]["t"]
    print(f"memory outside the pools at its peak: {a['outside_peak'] / GIB:.3f} GiB")
    for src, b in sorted(a["outside_by_source"].items(), key=lambda x: -x[1]):
        print(f"  {b / GIB:8.3f} GiB  {src}")
    n = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    for i, p in enumerate(a["pools"]):
        print(f"pool {i}: largest size {p['max'] / GIB:.3f} GiB, its allocations held at most "
              f"{p['held_peak'] / GIB:.3f} GiB, slack {(p['max'] - p['held_peak']) / GIB:.3f} GiB")
    for i, p in enumerate(a["pools"]):
        gs = p["growths"]
        print(f"pool {i} growths ({len(gs)}; the {min(n, len(gs))} largest, in time order):")
        for g in sorted(sorted(gs, key=lambda g: g["before"] - g["after"])[:n], key=lambda g: g["t"]):
            print(f"  {(g['t'] - t0) / 1e6:10.2f} ms  request {g['bytes'] / (1 << 20):9.1f} MiB  pool "
                  f"{g['before'] / GIB:7.3f} -> {g['after'] / GIB:7.3f} GiB  held {g['held'] / GIB:7.3f} GiB  "
                  f"after {g['kernel']}")


if __name__ == "__main__":
    main()
