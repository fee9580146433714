# spikeloom: every target bootstraps the local virtual environment from pyproject.toml first.
# A second run with nothing changed skips the install (the stamp is newer than pyproject.toml
# and this Makefile, which lists the one package installed beside it).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
BUILD  ?= build
NET    ?= mlp
PES    ?= 8
SIM    ?= verilator
comma  := ,
ARGS   ?=
# pytest workers of make test / test-slow (pytest-xdist): one per core, at most 8
TEST_JOBS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); [ $$n -gt 8 ] && n=8; echo $$n)
SEEDS  ?= 3
FUZZ_N ?= 1000
FUZZ_SEED ?= 0
FUZZ_JOBS ?=
SPEC ?= flows/sweeps/digits.toml

.PHONY: all help venv sim test test-slow bench ablation prune prune-ablation formal fuzz sweep clean distclean

all: sim

## make help: this list (every target with its options)
help:
	@sed -n 's/^## \{0,1\}//p' Makefile

# SpikingJelly (tests/test_peers.py compares the golden model with it; tests/test_nir_spikingjelly.py
# exports through its NIR exchange) requires torchvision, which replaces the CPU torch with a CUDA
# build; its neuron module and NIR export import without it, and need only loguru beside it.
$(STAMP): pyproject.toml Makefile
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -e '.[dev]'
	$(PY) -m pip install -q --disable-pip-version-check --no-deps spikingjelly==2.0.0 loguru==0.7.3
	@touch $(STAMP)

venv: $(STAMP)

## make sim: the main job on the embedded default (digits): train (cached) -> quantize -> golden evaluation
## (NET=mlp|vgg|resnet, or NET=graph.nir ARGS="--dt DT" to import a NIR graph in place of training;
## NET=cifar-random: the CIFAR-size reference network with fixed random weights, generated and co-simulated
## on 20 random-valued images, no dataset needed; ARGS="--dataset cifar:PATH" for CIFAR-10 test images)
sim: $(STAMP)
	$(PY) -m spikeloom.flows.cli run --build $(BUILD) $(if $(filter %.nir,$(NET)),--nir $(NET),--arch $(NET)) \
	    --pes $(PES) --sim $(SIM) $(ARGS)

## make test: the test suite (fast tier + co-simulation), what CI runs
test: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist worksteal

## make test-slow: longer sweeps marked `slow`
test-slow: $(STAMP)
	$(PY) -m pytest -q -p no:cacheprovider -n $(TEST_JOBS) --dist worksteal -m slow

## make bench: cycles per inference vs N and vs spike count beside the bound, and the speed of verification
## (golden model, cycle model, co-simulation, build) on the digits MLP and cifar-random
## -> build/bench.json, build/bench_cycles.png, build/bench_verification.png
bench: $(STAMP)
	$(PY) -m spikeloom.flows.bench --build $(BUILD) $(ARGS)

## make ablation: the ATSNN loss ablation (every loss schedule trained and evaluated) -> build/ablation.json
ablation: $(STAMP)
	$(PY) -m spikeloom.flows.ablation --build $(BUILD) $(ARGS)

## make synth [TARGET=ecp5-25k|ecp5-85k|ice40-up5k] [PES=4 or PES=1,2,4,8,16] [NET=mlp or NET=path.slm]
##            [WEIGHTS=rom|load] [PLACE_SEEDS=1,2,3] [WORKERS=N] [SCHEDULER=tcp://HOST:PORT]:
## export -> Yosys -> nextpnr -> timing -> bitstream; build/synth.json, table, build/synth.png.
## PLACE_SEEDS: nextpnr placement seeds (default 1, ecp5-25k 5); each build keeps its fastest.
## Each (target, N) is a task on Dask (as make sweep's points): in parallel on the embedded
## LocalCluster (one worker per build, up to the CPUs; WORKERS=N), or on the cluster of SCHEDULER.
## Plain `make synth`: the default network on ecp5-25k (N = 8, weights in initialised block RAM) and
## ice40-up5k (N = 4, weights in SPRAM, streamed in after reset).
synth: $(STAMP)
	$(PY) -m spikeloom.flows.synth --build $(BUILD) \
	  $(if $(TARGET),$(foreach t,$(subst $(comma), ,$(TARGET)),--target $(t))) \
	  $(if $(filter command line environment,$(origin PES)),--pes $(PES)) \
	  $(if $(filter command line environment,$(origin NET)),--model $(NET)) \
	  $(if $(WEIGHTS),--weights $(WEIGHTS)) $(if $(WORKERS),--workers $(WORKERS)) \
	  $(if $(PLACE_SEEDS),--place-seeds $(PLACE_SEEDS)) \
	  $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(ARGS)

## make prune [NET=vgg|mlp|resnet] [PES=8] [SEEDS=3] [WORKERS=N] [SCHEDULER=tcp://HOST:PORT]:
## spatio-temporal pruning rows (dense, balanced-pruned, T=1) for SEEDS training seeds, trained
## (cached under build/prune/seed-<seed>/), golden-evaluated and co-simulated -> build/pruning.json,
## a table of each row's mean and spread over the seeds. The seeds train side by side as Dask tasks
## (one worker per seed, up to 4 per CPU; WORKERS=N, or the cluster of SCHEDULER).
## NET defaults to vgg here; ARGS="--no-cosim" stops after the golden model.
prune: $(STAMP)
	$(PY) -m spikeloom.flows.prune --build $(BUILD) \
	  --net $(if $(filter command line environment,$(origin NET)),$(NET),vgg) --pes $(PES) --sim $(SIM) \
	  --seeds $(SEEDS) $(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(ARGS)

## make prune-ablation [NET=vgg] [SEEDS=3]: the stp row with each part of its schedule changed (2 Units
## added; timestep stages, distillation, step-by-step pruning taken away), beside direct-t1 and dense-t4, over the
## seeds -> build/pruning_ablation.json and a table (what each part buys).
prune-ablation: $(STAMP)
	$(PY) -m spikeloom.flows.prune --build $(BUILD) --out $(BUILD)/pruning_ablation.json --no-cosim \
	  --net $(if $(filter command line environment,$(origin NET)),$(NET),vgg) --pes $(PES) \
	  --rows ablation \
	  --seeds $(SEEDS) $(if $(WORKERS),--workers $(WORKERS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(ARGS)

## make formal: the stream protocol of the generated core proved with SymbiYosys (YoWASP builds) on
## six small networks (dense, conv, pooling, residual; 1-3 PEs): every property by k-induction (unbounded)
## and the covers -> build/formal.json. Takes minutes (ARGS="--jobs 2": cases side by side).
formal: $(STAMP)
	$(PY) -m spikeloom.flows.formal --build $(BUILD) $(ARGS)

## make fuzz [FUZZ_N=1000] [FUZZ_SEED=0] [FUZZ_JOBS=2]: the random-network campaign: FUZZ_N random networks
## (dense, conv, pooling, residual; every neuron and storage option; N = 1..16; widths at their ends) co-simulated
## under Icarus against the golden model -> build/fuzz.json, and build/fuzz/fail-<i>/ per failing network
## (replay: python -m spikeloom.flows.fuzz --replay build/fuzz/fail-<i>). The networks are tasks on Dask (as make
## sweep's points): FUZZ_JOBS worker processes of the embedded LocalCluster (default the number of CPUs), or the
## cluster of SCHEDULER=tcp://HOST:PORT.
fuzz: $(STAMP)
	$(PY) -m spikeloom.flows.fuzz --build $(BUILD) --networks $(FUZZ_N) --seed $(FUZZ_SEED) \
	  $(if $(FUZZ_JOBS),--jobs $(FUZZ_JOBS)) $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(ARGS)

## make sweep [SPEC=flows/sweeps/digits.toml] [WORKERS=N] [SCHEDULER=tcp://HOST:PORT]: a design-space sweep on
## Dask (embedded LocalCluster, one worker per CPU, or the cluster of SCHEDULER) -> build/sweep/<name>/:
## results.jsonl (resumable: a rerun runs only the missing points), table.txt, pareto_energy.png, pareto_lut.png
sweep: $(STAMP)
	$(PY) -m spikeloom.flows.sweep $(SPEC) --build $(BUILD) $(if $(WORKERS),--workers $(WORKERS)) \
	  $(if $(SCHEDULER),--scheduler $(SCHEDULER)) $(ARGS)

clean:
	rm -rf $(BUILD) .hypothesis sim_build

distclean: clean
	rm -rf $(VENV) *.egg-info
