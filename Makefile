# The project's commands. Every target that builds first makes sure the system OpenBLAS is there
# (scripts/setup.sh installs it with apt-get where it may, or prints the one command to run).

CARGO ?= cargo
# Where `make report` writes bench.json, results.csv, table.md, report.txt and plot.svg.
OUT ?= target/affine-bench
REPORT = $(CARGO) run --release --features report --bin affine-bench --

.PHONY: setup setup-mpi run test lint bench bench-quick report-full gate dp peers

## Installs the system OpenBLAS and pkg-config if they are missing.
setup:
	@bash scripts/setup.sh

## The same, and OpenMPI and libclang for the `mpi` feature.
setup-mpi:
	@bash scripts/setup.sh --mpi

## The main job: the quick benchmark sweep, its table, JSON, CSV and plot (about a minute).
run: setup
	$(REPORT) --out $(OUT)

## The tests: unit, integration, property, gate, MPI (2 and 4 ranks) and doc tests, then the
## examples once.
test: setup-mpi
	$(CARGO) test --features report,mpi
	# the engine's paths at every batch, whatever cutoffs this CPU gets
	AFFINE_BLAS_XSMM_VECTORS=engine-wider $(CARGO) test --features report,mpi --test xsmm --test alloc
	# the f32 large-batch regime (taken on AMD Zen 4 only)
	AFFINE_BLAS_XSMM_F32_LARGE_BATCH=1 $(CARGO) test --features report,mpi --test xsmm --test alloc
	# the batch-1 paths of both one-row-GEMM regimes, whichever OpenBLAS core this CPU gets
	AFFINE_BLAS_ONE_ROW_GEMM=small $(CARGO) test --features report,mpi --test blas_single_row --test props
	AFFINE_BLAS_ONE_ROW_GEMM=packed $(CARGO) test --features report,mpi --test blas_single_row --test props --test alloc
	$(CARGO) run --example notebook > /dev/null
	$(CARGO) run --example train_mlp -- --epochs 30

## Formatting and lints, as CI checks them.
lint: setup-mpi
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --features report,mpi --all-targets -- -D warnings

## The criterion suite: the full grid (about 12 minutes) or the quick one (about 2).
bench: setup
	$(CARGO) bench --bench affine
bench-quick: setup
	AFFINE_BENCH_QUICK=1 $(CARGO) bench --bench affine

## The report over the full grid.
report-full: setup
	$(REPORT) --full --out $(OUT)

## The regression gate: make gate BASE=baseline/bench.json [CUR=target/affine-bench/bench.json]
CUR ?= $(OUT)/bench.json
gate: setup
	$(REPORT) gate $(BASE) $(CUR)

## The step beside the Python anchors, shape by shape and round by round (about 20 minutes):
## make peers PY=path/to/anchors/venv/bin/python [ANCHORS=path/to/bench_affine.py] [ROUNDS=2]
ANCHORS ?= ../shared/anchors/bench_affine.py
PY ?= python3
ROUNDS ?= 2
peers: setup
	$(CARGO) build --release --features report --bin affine-bench
	python3 scripts/peers_interleaved.py --anchors $(ANCHORS) --python $(PY) --rounds $(ROUNDS) \
	  --out target/peers

## Data-parallel training of the example MLP over MPI: make dp RANKS=4 [ARGS="--epochs 50"]
RANKS ?= 2
ARGS ?=
dp: setup-mpi
	$(CARGO) build --release --features mpi --bin affine-dp
	OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 \
	  mpirun --oversubscribe -np $(RANKS) target/release/affine-dp train $(ARGS)
