#!/usr/bin/env sh
# A search space of your own, end to end: check and compile it, search it, train
# the genotype it finds, draw it. Tiny settings (a few minutes on a CPU); drop the
# --set/--epochs overrides for the sizes the space file declares.
#
#   sh examples/custom_space/run.sh [OUT_DIR]          # default OUT_DIR: runs/custom_space
set -eu
HERE=$(dirname "$0")
OUT=${1:-runs/custom_space}
NASC=${NASC:-nasc}            # e.g. NASC="python -m nasc"
mkdir -p "$OUT"

# 1. check and compile: errors point at the line; the summary counts weights, madds, architectures
$NASC check "$HERE/space.nas"
$NASC compile "$HERE/space.nas" --set C=4 --set layers=3 --input 1x8x8 -o "$OUT/space.ir.json"

# 2. search one epoch on the bundled 8x8 digits (the default dataset)
$NASC search "$HERE/space.nas" --set C=4 --set layers=3 --epochs 1 --run-dir "$OUT/search"

# 3. train the genotype from scratch: the space's `train:` block, made small here
$NASC train "$OUT/search" --set C=8 --set layers=5 --epochs 1 --run-dir "$OUT/train"

# 4. draw the cells (and, from the run's metrics, how α evolved)
$NASC viz "$OUT/search" -o "$OUT/genotype.png"
