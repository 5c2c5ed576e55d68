#!/usr/bin/env bash
# The three GEMMs of each shape on the system OpenBLAS and on NEWLIB, each alone in its own
# process, alternating, ROUNDS times: one CSV line per run (threads,dtype,shape,round,lib,ms).
#   NEWLIB=/path/to/libscipy_openblas64_-....so [ROUNDS=3] [THREADS="1 2"] bash run.sh [SHAPES...]
# SHAPES as dtype:BxIxO (default: the shapes of the README's comparison).
set -euo pipefail
cd "$(dirname "$0")"
: "${NEWLIB:?set NEWLIB to the other OpenBLAS}"
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-"1 2"}
bin=${TMPDIR:-/tmp}/openblas-compare
cc -O2 -Wall compare.c -o "$bin" -ldl
shapes=("$@")
[ ${#shapes[@]} -gt 0 ] || shapes=(f32:32x1024x1024 f64:32x1024x1024 f32:128x1024x1024
  f64:128x1024x1024 f32:512x256x256 f32:2048x256x256 f64:2048x256x256 f32:512x1024x1024
  f64:512x1024x1024)
echo "threads,dtype,shape,round,lib,ms"
for nt in $THREADS; do
  for s in "${shapes[@]}"; do
    dtype=${s%%:*} dims=${s#*:}
    IFS=x read -r b i o <<<"$dims"
    # about a second of GEMMs per run (at 2 threads and 30 GFLOP/s f32)
    wide=$([ "$dtype" = f64 ] && echo 1 || echo 2)
    reps=$(( 2000000000 * nt * wide / (6 * b * i * o) ))
    reps=$(( reps < 3 ? 3 : reps ))
    for r in $(seq 1 "$ROUNDS"); do
      for lib in 0 1; do
        ms=$(NT=$nt ONLY=$lib "$bin" "$dtype" "$b" "$i" "$o" "$reps" | awk '/sum/ {print $2}')
        echo "$nt,$dtype,$dims,$r,$([ $lib = 0 ] && echo system || echo other),$ms"
      done
    done
  done
done
