#!/usr/bin/env python3
"""The layer against its peers, shape by shape, each comparison made within half a minute.

usage: scripts/peers_interleaved.py --anchors BENCH_AFFINE.py [--python PY] [--rounds N]
                                    [--out DIR] [--affine-bench PATH] [--shapes 'BxIxO;...']

For each shape, N rounds (default 2) of: affine-bench on it (both dtypes), then the Python
anchors (numpy, PyTorch, jax) on it. Each round gives one ratio, the layer's step over the best
peer's full layer of that round; the table gives the median over rounds and the range.

Why: a sweep of every shape followed by the anchors of every shape puts ten minutes between the
two figures of a shape, and the speed of a shared VM drifts by 10-20 % over minutes (the same
OpenBLAS GEMM measured 7.2 ms and 9.6 ms a minute apart); the ratio then says more about the
drift than about the code. Adjacent runs share the drift, and the median over rounds damps what
is left.

Writes to DIR (default target/peers): rounds.csv (every round: the layer's step and floor, the
best peer and who) and table.md. Build affine-bench first
(`cargo build --release --features report --bin affine-bench`); the anchors' Python needs
numpy, torch and jax (../shared/anchors/setup.sh).
"""
import argparse
import csv
import json
import os
import statistics
import subprocess
import sys

# The quick grid of affine-bench (src/workload.rs `quick_grid`).
QUICK = [(b, n, n) for n in (64, 256, 1024) for b in (1, 8, 32, 128, 512, 2048)] + [
    (128, 1024, 4096),
    (128, 4096, 1024),
]
# A peer's full layer: any of its forward+backward variants, never the bare GEMM floor
# (as in scripts/peers_table.py).
STEPS = {
    "np.fwd+bwd": "numpy",
    "torch.linear.fwd+bwd": "torch autograd",
    "torch.mm.fwd+bwd": "torch explicit",
    "jax.vag(fwd+bwd)": "jax",
}
DTYPE = {"float32": "f32", "float64": "f64"}


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def fmt_time(s):
    return f"{s * 1e6:.2f} µs" if s < 1e-3 else f"{s * 1e3:.3f} ms"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--anchors", required=True, help="path to bench_affine.py")
    ap.add_argument("--python", default=sys.executable, help="the anchors' Python")
    ap.add_argument("--affine-bench", default="target/release/affine-bench")
    ap.add_argument("--out", default="target/peers")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--shapes", default=None, help="e.g. '32x1024x1024;1x64x64'")
    ap.add_argument("--min-time", default="0.25", help="the anchors' --min-time")
    args = ap.parse_args()
    shapes = (
        [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(";") if s]
        if args.shapes
        else QUICK
    )
    parts = os.path.join(args.out, "parts")
    os.makedirs(parts, exist_ok=True)
    rounds = []
    for b, i, o in shapes:
        spec = f"{b}x{i}x{o}"
        for k in range(args.rounds):
            ours_dir = os.path.join(parts, f"ours-{spec}-{k}")
            run([args.affine_bench, "--shape", spec, "--out", ours_dir])
            peers_json = os.path.abspath(os.path.join(parts, f"anchors-{spec}-{k}.json"))
            run([args.python, args.anchors, "--frameworks", "numpy,torch,jax", "--shapes", spec,
                 "--peak-sizes", "", "--min-time", args.min_time, "--min-reps", "5",
                 "--wait-idle", "0", "--json", peers_json,
                 "--md", os.path.abspath(os.path.join(parts, f"anchors-{spec}-{k}.md"))])
            best = {}
            for fw in json.load(open(peers_json))["frameworks"].values():
                for r in fw.get("results", []):
                    who = STEPS.get(r["variant"])
                    dtype = DTYPE[r["dtype"]]
                    if who and (dtype not in best or r["median_s"] < best[dtype][0]):
                        best[dtype] = (r["median_s"], who)
            with open(os.path.join(ours_dir, "results.csv")) as f:
                for r in csv.DictReader(f):
                    if r["pass"] != "step" or r["dtype"] not in best:
                        continue
                    layer = float(r["layer_median_ns"]) * 1e-9
                    peer, who = best[r["dtype"]]
                    rounds.append({
                        "dtype": r["dtype"], "shape": spec, "round": k,
                        "layer_s": layer, "floor_s": float(r["floor_median_ns"]) * 1e-9,
                        "peer_s": peer, "peer": who, "ratio": layer / peer,
                    })
        print(f"{spec}: done", file=sys.stderr, flush=True)
    with open(os.path.join(args.out, "rounds.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rounds[0].keys()))
        w.writeheader()
        w.writerows(rounds)
    lines = [
        "| dtype | B×I×O | step (median) | layer / floor | best peer (median, who) "
        "| affine-blas / best peer: median | range |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    medians = []
    for dtype in ("f32", "f64"):
        for b, i, o in shapes:
            spec = f"{b}x{i}x{o}"
            rs = [r for r in rounds if r["dtype"] == dtype and r["shape"] == spec]
            if not rs:
                continue
            ratio = statistics.median(r["ratio"] for r in rs)
            medians.append((ratio, f"{dtype} {spec}"))
            whos = sorted({r["peer"] for r in rs})
            lines.append(
                f"| {dtype} | {b}×{i}×{o} | {fmt_time(statistics.median(r['layer_s'] for r in rs))} "
                f"| {statistics.median(r['layer_s'] / r['floor_s'] for r in rs):.3f} "
                f"| {fmt_time(statistics.median(r['peer_s'] for r in rs))} ({', '.join(whos)}) "
                f"| {ratio:.2f} | {min(r['ratio'] for r in rs):.2f}–{max(r['ratio'] for r in rs):.2f} |"
            )
    ahead = sum(1 for r, _ in medians if r <= 0.95)
    under1 = sum(1 for r, _ in medians if r < 1.0)
    worst = max(medians)
    lines.append("")
    lines.append(
        f"{ahead} of {len(medians)} at or under 0.95× the best peer (median of {args.rounds} "
        f"rounds), {under1} under 1.0×; worst {worst[0]:.2f} ({worst[1]})"
    )
    table = "\n".join(lines) + "\n"
    open(os.path.join(args.out, "table.md"), "w").write(table)
    print(table)


if __name__ == "__main__":
    main()
