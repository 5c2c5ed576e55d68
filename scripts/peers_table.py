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


def anchors_peers(path):
    """Per shape: this sweep's step over the anchors run's best peer (no range)."""
    best = {}
    for fw in json.load(open(path))["frameworks"].values():
        for r in fw.get("results", []):
            who = STEPS.get(r["variant"])
            if who is None:
                continue
            key = ({"float32": "f32", "float64": "f64"}[r["dtype"]], r["B"], r["I"], r["O"])
            if key not in best or r["median_s"] < best[key][0]:
                best[key] = (r["median_s"], who)

    def cells(key, layer_s):
        if key not in best:
            return None
        s, who = best[key]
        return layer_s / s, f" {fmt_time(s * 1e9)} ({who}) | {layer_s / s:.2f} |"

    return " best peer (who) | affine-blas / best peer |", "---:|---:|", cells


def rounds_peers(path):
    """Per shape: the median and range of make peers' rounds, each taken beside its peer."""
    rounds = {}
    with open(path) as f:
        for r in csv.DictReader(f):
            b, i, o = (int(v) for v in r["shape"].split("x"))
            rounds.setdefault((r["dtype"], b, i, o), []).append(r)

    def cells(key, _layer_s):
        rs = rounds.get(key)
        if not rs:
            return None
        peer = statistics.median(float(x["peer_s"]) for x in rs)
        whos = ", ".join(sorted({x["peer"] for x in rs}))
        rr = [float(x["ratio"]) for x in rs]
        ratio = statistics.median(rr)
        return ratio, f" {fmt_time(peer * 1e9)} ({whos}) | {ratio:.2f} | {min(rr):.2f}–{max(rr):.2f} |"

    return " best peer (who) | affine-blas / best peer | range |", "---:|---:|---:|", cells


def main():
    ours = steps(sys.argv[1])
    before = steps(sys.argv[3]) if len(sys.argv) > 3 else {}
    peer_head, peer_rule, peer_cells = (
        rounds_peers(sys.argv[2]) if sys.argv[2].endswith(".csv") else anchors_peers(sys.argv[2])
    )
    head = "| dtype | B×I×O | step | GFLOP/s | % of FMA peak | layer / OpenBLAS GEMMs |"
    rule = "|---|---|---:|---:|---:|---:|"
    if before:
        head += " same, engine off |"
        rule += "---:|"
    print(head + peer_head)
    print(rule + peer_rule)
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
        got = peer_cells(key, ns * 1e-9)
        if got:
            ratios.append((got[0], key))
            row += got[1]
        else:
            row += " |" * peer_head.count("|")
        print(row)
    if ratios:
        ahead = sum(1 for r, _ in ratios if r <= 0.95)
        under1 = sum(1 for r, _ in ratios if r < 1.0)
        print(f"\n{ahead} of {len(ratios)} shapes at or under 0.95× the best peer, {under1} under "
              f"1.0×; worst {max(ratios)[0]:.2f} ({max(ratios)[1]}), best {min(ratios)[0]:.2f}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
