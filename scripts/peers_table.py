#!/usr/bin/env python3
"""The README's performance table: affine-bench's step rows beside the best full layer of the
Python anchors (../shared/anchors/bench_affine.py) on the same shapes.

usage: scripts/peers_table.py AFFINE_RESULTS.csv PEERS [BEFORE_RESULTS.csv]

AFFINE_RESULTS.csv is the results.csv of `affine-bench` (make run). PEERS is either the --json
output of bench_affine.py (the ratio is then this sweep's step over that run's best peer) or the
rounds.csv of scripts/peers_interleaved.py (make peers): the ratio is then the median over its
rounds, each taken within half a minute of its peer, with the range beside it. A peer's full layer is any of its forward+backward variants
(numpy, PyTorch autograd, PyTorch addmm/mm, jax value_and_grad), never the bare GEMM floor.
BEFORE_RESULTS.csv, if given, adds the layer/floor ratio of another run (e.g. the engine off).
"""
import csv
import json
import statistics
import sys

STEPS = {
    "np.fwd+bwd": "numpy",
    "torch.linear.fwd+bwd": "torch autograd",
    "torch.mm.fwd+bwd": "torch explicit",
    "jax.vag(fwd+bwd)": "jax",
}


def fmt_time(ns):
    if ns < 1e6:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns / 1e6:.3f} ms"


def steps(path):
    with open(path) as f:
        return {
            (r["dtype"], int(r["batch"]), int(r["in"]), int(r["out"])): r
            for r in csv.DictReader(f)
            if r["pass"] == "step"
        }


def main():
    ours = steps(sys.argv[1])
    before = steps(sys.argv[3]) if len(sys.argv) > 3 else {}
    if sys.argv[2].endswith(".csv"):
        return interleaved(ours, before, sys.argv[2])
    anchors = json.load(open(sys.argv[2]))
    best = {}
    for fw in anchors["frameworks"].values():
        for r in fw.get("results", []):
            who = STEPS.get(r["variant"])
            if who is None:
                continue
            key = ({"float32": "f32", "float64": "f64"}[r["dtype"]], r["B"], r["I"], r["O"])
            if key not in best or r["median_s"] < best[key][0]:
                best[key] = (r["median_s"], who)
    head = "| dtype | B×I×O | step | GFLOP/s | % of FMA peak | layer / OpenBLAS GEMMs |"
    rule = "|---|---|---:|---:|---:|---:|"
    if before:
        head += " same, engine off |"
        rule += "---:|"
    head += " best peer (who) | affine-blas / best peer |"
    rule += "---:|---:|"
    print(head)
    print(rule)
    ratios = []
    for key, r in ours.items():
        dtype, b, i, o = key
        ns = float(r["layer_median_ns"])
        row = (
            f"| {dtype} | {b}×{i}×{o} | {fmt_time(ns)} | {float(r['layer_gflops']):.1f} "
            f"| {float(r['pct_peak']):.1f} | {float(r['layer_over_floor']):.3f} |"
        )
        if before:
            row += f" {float(before[key]['layer_over_floor']):.3f} |" if key in before else " |"
        if key in best:
            s, who = best[key]
            ratio = ns * 1e-9 / s
            ratios.append((ratio, key))
            row += f" {fmt_time(s * 1e9)} ({who}) | {ratio:.2f} |"
        else:
            row += " | |"
        print(row)
    if ratios:
        ahead = sum(1 for r, _ in ratios if r <= 0.95)
        print(f"\n{ahead} of {len(ratios)} shapes at or under 0.95× the best peer; "
              f"worst {max(ratios)[0]:.2f} ({max(ratios)[1]}), best {min(ratios)[0]:.2f}",
              file=sys.stderr)


def interleaved(ours, before, path):
    rounds = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            b, i, o = (int(v) for v in r["shape"].split("x"))
            rounds.setdefault((r["dtype"], b, i, o), []).append(r)
    head = "| dtype | B×I×O | step | GFLOP/s | % of FMA peak | layer / OpenBLAS GEMMs |"
    rule = "|---|---|---:|---:|---:|---:|"
    if before:
        head += " same, engine off |"
        rule += "---:|"
    head += " best peer (who) | affine-blas / best peer | range |"
    rule += "---:|---:|---:|"
    print(head)
    print(rule)
    ratios = []
    for key, r in ours.items():
        dtype, b, i, o = key
        ns = float(r["layer_median_ns"])
        row = (
            f"| {dtype} | {b}×{i}×{o} | {fmt_time(ns)} | {float(r['layer_gflops']):.1f} "
            f"| {float(r['pct_peak']):.1f} | {float(r['layer_over_floor']):.3f} |"
        )
        if before:
            row += f" {float(before[key]['layer_over_floor']):.3f} |" if key in before else " |"
        rs = rounds.get(key, [])
        if rs:
            peer = statistics.median(float(x["peer_s"]) for x in rs)
            whos = ", ".join(sorted({x["peer"] for x in rs}))
            rr = [float(x["ratio"]) for x in rs]
            ratio = statistics.median(rr)
            ratios.append((ratio, key))
            row += f" {fmt_time(peer * 1e9)} ({whos}) | {ratio:.2f} | {min(rr):.2f}–{max(rr):.2f} |"
        else:
            row += " | | |"
        print(row)
    if ratios:
        ahead = sum(1 for r, _ in ratios if r <= 0.95)
        under1 = sum(1 for r, _ in ratios if r < 1.0)
        print(f"\n{ahead} of {len(ratios)} shapes at or under 0.95× the best peer, {under1} under "
              f"1.0×; worst {max(ratios)[0]:.2f} ({max(ratios)[1]}), best {min(ratios)[0]:.2f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
