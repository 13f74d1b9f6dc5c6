# advmed — run `make help` for the targets. `demo` and `test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= outputs/demo
PYTEST_ARGS ?=
# `make test` runs on every core: one pytest-xdist worker per core, each with its share of torch threads,
# a test module per worker at a time (its module fixtures are built once), the long modules first
# (tests/conftest.py: LONG_MODULES; xdist's own reordering, by test count, is off).
PYTEST_PARALLEL ?= -n auto --dist loadscope --no-loadscope-reorder
# SEEDS=0,1,2 on any paper-<name> target: the whole pipeline once per seed, each into <its dir>_seeds/seed_<s>/
# (seed=<s> overrides every stage), then its tables over the seeds, mean ± sd, beside them
# (advmed/studies/papers/over_seeds.py). Without SEEDS: one run with the experiments' own seed (42).
SEEDS ?=
comma := ,
SEED_LIST = $(subst $(comma), ,$(SEEDS))
PAPER_PGD_STUDY_DIR ?= outputs/paper_pgd_study
# CPU scale of `make paper-pgd-study`: 32 px tiles, ResNet18, the study on 128 test images (the experiment's own
# 64 px ResNet34 on all 270 took ~2 h 45 min for Fig. 3a-c alone, ~12 h with Fig. 3d's four retrainings), and the
# paper's eps grid 0.02 .. 0.20 led by 0.0025, 0.005, 0.01: such a model is fooled everywhere from 0.02, so only the
# smaller eps show success growing with eps. PAPER_PGD_STUDY_SCALE= (empty) runs the experiment's sizes and grid.
# Full scale and real data: experiments/pgd_study/README.md
PAPER_PGD_STUDY_SCALE ?= data.image_size=32 model.arch=resnet18 study.max_images=128 \
	'study.eps=[0.0025,0.005,0.01,0.02,0.04,0.06,0.08,0.1,0.12,0.14,0.16,0.18,0.2]'
PAPER_PGD_STUDY_ARGS ?=
PAPER_SNAP_DIR ?= outputs/paper_snap
PAPER_SNAP_AREAS ?= 0.02,0.05,0.1
PAPER_SNAP_ARGS ?=
PAPER_PERVIN_DIR ?= outputs/paper_pervin
# CPU scale of `make paper-pervin` (the paper's: 128 px, 30 epochs; see experiments/pervin/README.md)
PAPER_PERVIN_DATA ?= data.image_size=64
PAPER_PERVIN_ARGS ?= trainer.max_epochs=12
PAPER_PERVIN_EPS ?= 0,0.02,0.04,0.06,0.08,0.1,0.12,0.14,0.16,0.18,0.2
# Table 2's SEA column (the segmentation ensemble that judges a defence), empty eps: no SEA sweep. CPU scale: 3 eps and
# 30 iterations per loss (the paper's 300 over all 11 eps would take hours per model here; experiments/pervin/README.md)
PAPER_PERVIN_SEA_EPS ?= 0.02,0.06,0.1
PAPER_PERVIN_SEA_ARGS ?= attack.steps=30
PAPER_CHEN_DIR ?= outputs/paper_chen
# CPU scale of `make paper-chen` (the paper's: 2D U-Net on 150 CT volumes; see experiments/chen/README.md)
PAPER_CHEN_DATA ?= data.image_size=64
PAPER_CHEN_UNET_ARGS ?= trainer.max_epochs=12
PAPER_CHEN_ARGS ?= trainer.max_epochs=16
PAPER_CHEN_XI ?= 0.5,1.0,1.5,2.0,2.5,3.0
PAPER_CHEN_ABLATION_XI ?= 2.0
PAPER_LOCKSHIN_DIR ?= outputs/paper_lockshin
# the stage settings (experiments/lockshin/cpu.yaml; full.yaml is the paper's size) and extra pipeline arguments,
# e.g. PAPER_LOCKSHIN_ARGS='--stages advgan,adversarial' or '--force'
PAPER_LOCKSHIN_SCALE ?= cpu
PAPER_LOCKSHIN_ARGS ?=
PAPER_ROBUST_TRAINING_DIR ?= outputs/paper_robust_training
# CPU scale of `make paper-robust-training`: the tile counts (with conf/experiment/robust_training/base.yaml's 32 px,
# ResNet18, 8 epochs: about 25 min on one thread); full scale and real data: experiments/robust_training/README.md
PAPER_ROBUST_TRAINING_DATA ?= data.train_per_class=100 data.test_per_class=5
# further overrides of every stage, training and evaluation (e.g. eps=8/255 trainer.max_epochs=30)
PAPER_ROBUST_TRAINING_ARGS ?=
PAPER_ROBUST_TRAINING_METHODS ?= standard,mixed_fgsm,pgd_at,trades,mart,fgsm_rs
# the evaluations: every test tile in one batch (AutoAttack's cost is per batch of survivors), PGD with 20 steps, and
# at CPU scale AutoAttack's standard version with half its iterations (50) and a fifth of Square's queries (1,000);
# PAPER_ROBUST_TRAINING_AA_ARGS= (empty) runs it as its authors do (experiments/robust_training/README.md)
PAPER_ROBUST_TRAINING_EVAL_ARGS ?= data.batch_size=256
PAPER_ROBUST_TRAINING_PGD_ARGS ?= attack.steps=20
PAPER_ROBUST_TRAINING_AA_ARGS ?= attack.steps=50 attack.n_queries=1000

.DEFAULT_GOAL := help
.PHONY: help install imagemagick docs docs-serve demo test test-fast test-cluster test-slurm test-full slurm-up slurm-down lint bench bench-gpu paper-pgd-study paper-snap paper-pervin paper-chen paper-lockshin paper-robust-training figures clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	# MedMNIST-C's reference corruptions (advmed/corruptions/): --no-deps, as its pins (scikit-image==0.23.2,
	# medmnist==3.0.1) would downgrade what advmed uses and it needs none of them beyond advmed's own
	$(PY) -m pip install --no-deps medmnistc==0.1.0
	@$(MAKE) --no-print-directory imagemagick
	touch $(STAMP)

# ImageMagick's MagickWand library, which MedMNIST-C's motion blur calls through Wand: installed with apt where
# make runs as root on Debian / Ubuntu (CI, containers); elsewhere the line says how (the rest of advmed works without).
imagemagick:
	@if ldconfig -p 2>/dev/null | grep -q libMagickWand; then echo "ImageMagick (MagickWand): found"; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	  apt-get install -y --no-install-recommends libmagickwand-6.q16-6 >/dev/null || \
	  { apt-get update >/dev/null && apt-get install -y --no-install-recommends libmagickwand-6.q16-6 >/dev/null; }; \
	  echo "ImageMagick (MagickWand): installed with apt-get"; \
	else echo "ImageMagick (MagickWand) not found: the motion-blur corruption needs it. Install it with your system's" \
	  "package manager (apt-get install libmagickwand-6.q16-6), conda (conda install -c conda-forge imagemagick) or" \
	  "module load imagemagick, and set MAGICK_HOME if it is not on the library path"; fi

install: $(STAMP) ## create .venv and install advmed with the test extras (first run pulls torch, several GB)

demo: install ## train ResNet34 on synthetic histology, attack it with FGSM and PGD, print the table
	rm -rf $(DEMO_DIR)
	$(PY) -m advmed.train experiment=demo hydra.run.dir=$(DEMO_DIR)/train
	$(PY) -m advmed.evaluate ckpt_path=$(DEMO_DIR)/train/checkpoints/best.ckpt attack=fgsm hydra.run.dir=$(DEMO_DIR)/evaluate_fgsm
	$(PY) -m advmed.evaluate ckpt_path=$(DEMO_DIR)/train/checkpoints/best.ckpt attack=pgd hydra.run.dir=$(DEMO_DIR)/evaluate_pgd
	@$(PY) -m advmed.studies.robustness_report $(DEMO_DIR)/evaluate_fgsm $(DEMO_DIR)/evaluate_pgd

DOCS_STAMP := $(VENV)/.docs-stamp

$(DOCS_STAMP): $(STAMP)
	$(PY) -m pip install -e ".[docs]"
	touch $(DOCS_STAMP)

docs: $(DOCS_STAMP) ## the documentation site in site/ (MkDocs Material, API reference from the docstrings; every warning an error)
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs build --strict

docs-serve: $(DOCS_STAMP) ## preview the documentation site at http://127.0.0.1:8000, rebuilt on every change
	NO_MKDOCS_2_WARNING=1 $(PY) -m mkdocs serve

test: install ## the CPU test suite, in parallel (what CI runs; < 10 min on 2 cores)
	$(PY) -m pytest $(PYTEST_PARALLEL) $(PYTEST_ARGS)

test-fast: install ## unit tests only, for the inner loop (no end-to-end runs; < 2 min on 2 cores)
	$(PY) -m pytest $(PYTEST_PARALLEL) -m "not slow and not cluster and not e2e" $(PYTEST_ARGS)

test-cluster: install ## multi-process tests, one at a time (they time kills and start ranks of their own): DDP ranks, kill and resume, W&B without a network, SLURM jobs (`make slurm-up` first; CI runs it after `test`)
	$(PY) -m pytest -m cluster $(PYTEST_ARGS)

test-full: install ## every test, including those marked slow and cluster
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

test-slurm: install ## only the tests marked slurm, against the cluster of `make slurm-up` (skipped when it is down)
	$(PY) -m pytest -m slurm tests/slurm $(PYTEST_ARGS)

slurm-up: ## start a one-node SLURM on this machine (root, Debian 12): the cluster of the slurm tests; see docs/slurm.md
	bash tests/slurm/cluster.sh up

slurm-down: ## stop the SLURM of `make slurm-up`
	bash tests/slurm/cluster.sh down

lint: install ## ruff
	$(PY) -m ruff check advmed tests experiments

bench: install ## speed comparisons against the peer libraries (experiments/benchmarks)
	$(PY) experiments/benchmarks/attacks.py --arch resnet34 --image-size 64 --batch 32 --steps 10
	$(PY) experiments/benchmarks/snap.py --arch resnet50 --image-size 64 --batch 32 --steps 10
	$(PY) experiments/benchmarks/unet.py --image-size 128 --batch 16 --steps 20
	$(PY) experiments/benchmarks/stylegan2.py --device cpu --threads 1 --image-size 32 --batch 8 --channel-base 1024 --channel-max 32 --z-dim 64 --mapping-layers 2 --iterations 16 --repeats 6
	$(PY) experiments/benchmarks/srgan.py --device cpu --threads 1 --tile-size 40 --hr-size 32 --lr-size 16 --batch 8 --num-blocks 4 --channels 16 --critic-width 16 --iterations 8 --repeats 6
	$(PY) experiments/benchmarks/advgan.py --device cpu --threads 1 --image-size 48 --batch 16 --iterations 8 --repeats 6
	$(PY) experiments/benchmarks/data_pipeline.py --threads 1 --workers 0 --clock cpu
	$(PY) experiments/benchmarks/classifier.py --device cpu --threads 1 --arch resnet34 --image-size 64 --batch 16 --steps 8 --repeats 4
	$(PY) experiments/benchmarks/adversarial_training.py --device cpu --threads 1 --arch resnet34 --image-size 64 --batch 16 --steps 4 --repeats 3
	$(PY) experiments/benchmarks/strong_attacks.py --device cpu --threads 1 --batch 16 --steps 100 --only apgd-ce autoattack fab-t $(if $(wildcard $(DEMO_DIR)/train/checkpoints/best.ckpt),--ckpt $(DEMO_DIR)/train/checkpoints/best.ckpt)

bench-gpu: install ## GPU training speed: ResNet50 img/s + MFU, classifier and adversarial-training ratios (needs CUDA)
	$(PY) experiments/benchmarks/gpu_throughput.py
	$(PY) experiments/benchmarks/gpu_throughput.py --compile
	$(PY) experiments/benchmarks/classifier.py --device cuda --arch resnet50 --image-size 224 --batch 256 --steps 50 --bf16 --channels-last
	$(PY) experiments/benchmarks/adversarial_training.py --device cuda --arch resnet34 --image-size 224 --batch 64 --steps 20 --bf16 --channels-last --adv-fraction 1.0 0.5

paper-pgd-study: install ## PGD attack-success study (Fig. 3a-d) on synthetic histology; see experiments/pgd_study/README.md
ifneq ($(SEEDS),)
	for s in $(SEED_LIST); do $(MAKE) --no-print-directory -o install -o $(STAMP) paper-pgd-study SEEDS= PAPER_PGD_STUDY_DIR=$(PAPER_PGD_STUDY_DIR)_seeds/seed_$$s PAPER_PGD_STUDY_ARGS="$(PAPER_PGD_STUDY_ARGS) seed=$$s" || exit 1; done
	$(PY) -m advmed.studies.papers.over_seeds pgd_study $(PAPER_PGD_STUDY_DIR)_seeds --seeds $(SEEDS)
else
	$(PY) -m advmed.train experiment=pgd_study/synthetic $(PAPER_PGD_STUDY_SCALE) $(PAPER_PGD_STUDY_ARGS) hydra.run.dir=$(PAPER_PGD_STUDY_DIR)/train
	$(PY) -m advmed.train -m experiment=pgd_study/train_size $(PAPER_PGD_STUDY_SCALE) $(PAPER_PGD_STUDY_ARGS) hydra.sweep.dir=$(PAPER_PGD_STUDY_DIR)/train_size
	$(PY) experiments/pgd_study/aggregate.py $(PAPER_PGD_STUDY_DIR)/train_size --output-dir $(PAPER_PGD_STUDY_DIR)
endif

paper-snap: install ## SNAP patches on synthetic lymph nodes: ResNet50, area sweep, table; see experiments/snap/README.md
ifneq ($(SEEDS),)
	for s in $(SEED_LIST); do $(MAKE) --no-print-directory -o install -o $(STAMP) paper-snap SEEDS= PAPER_SNAP_DIR=$(PAPER_SNAP_DIR)_seeds/seed_$$s PAPER_SNAP_ARGS="$(PAPER_SNAP_ARGS) seed=$$s" || exit 1; done
	$(PY) -m advmed.studies.papers.over_seeds snap $(PAPER_SNAP_DIR)_seeds --seeds $(SEEDS)
else
	rm -rf $(PAPER_SNAP_DIR)
	$(PY) -m advmed.train experiment=snap/synthetic_resnet50 test=false $(PAPER_SNAP_ARGS) hydra.run.dir=$(PAPER_SNAP_DIR)/train
	$(PY) -m advmed.evaluate -m experiment=snap/synthetic_resnet50 $(PAPER_SNAP_ARGS) ckpt_path=$(PAPER_SNAP_DIR)/train/checkpoints/best.ckpt attack.area_fraction=$(PAPER_SNAP_AREAS) hydra.sweep.dir=$(PAPER_SNAP_DIR)/area_sweep
	$(PY) experiments/snap/aggregate.py $(PAPER_SNAP_DIR)/area_sweep --headline 0.1 --output-dir $(PAPER_SNAP_DIR)
endif

paper-pervin: install ## U-Net + FGSM / Inverse-FGSM augmentation on synthetic CT, Tables 1-2 (FGSM and SEA); see experiments/pervin/README.md
ifneq ($(SEEDS),)
	for s in $(SEED_LIST); do $(MAKE) --no-print-directory -o install -o $(STAMP) paper-pervin SEEDS= PAPER_PERVIN_DIR=$(PAPER_PERVIN_DIR)_seeds/seed_$$s PAPER_PERVIN_DATA="$(PAPER_PERVIN_DATA) seed=$$s" || exit 1; done
	$(PY) -m advmed.studies.papers.over_seeds pervin $(PAPER_PERVIN_DIR)_seeds --seeds $(SEEDS)
else
	rm -rf $(PAPER_PERVIN_DIR)
	$(PY) -m advmed.train experiment=pervin/unet $(PAPER_PERVIN_DATA) $(PAPER_PERVIN_ARGS) hydra.run.dir=$(PAPER_PERVIN_DIR)/unet
	$(PY) -m advmed.augment experiment=pervin/unet $(PAPER_PERVIN_DATA) ckpt_path=$(PAPER_PERVIN_DIR)/unet/checkpoints/best.ckpt attack=fgsm attack.eps=0.1 output_dir=$(PAPER_PERVIN_DIR)/augment_fgsm hydra.run.dir=$(PAPER_PERVIN_DIR)/augment_fgsm_log
	$(PY) -m advmed.augment experiment=pervin/unet $(PAPER_PERVIN_DATA) ckpt_path=$(PAPER_PERVIN_DIR)/unet/checkpoints/best.ckpt attack=inverse_fgsm attack.eps=0.1 output_dir=$(PAPER_PERVIN_DIR)/augment_invfgsm hydra.run.dir=$(PAPER_PERVIN_DIR)/augment_invfgsm_log
	$(PY) -m advmed.train experiment=pervin/unet_fgsm augmented_root=$(PAPER_PERVIN_DIR)/augment_fgsm $(PAPER_PERVIN_DATA) $(PAPER_PERVIN_ARGS) hydra.run.dir=$(PAPER_PERVIN_DIR)/unet_fgsm
	$(PY) -m advmed.train experiment=pervin/unet_invfgsm augmented_root=$(PAPER_PERVIN_DIR)/augment_invfgsm $(PAPER_PERVIN_DATA) $(PAPER_PERVIN_ARGS) hydra.run.dir=$(PAPER_PERVIN_DIR)/unet_invfgsm
	for model in unet unet_fgsm unet_invfgsm; do \
	  $(PY) -m advmed.evaluate -m experiment=pervin/unet $(PAPER_PERVIN_DATA) ckpt_path=$(PAPER_PERVIN_DIR)/$$model/checkpoints/best.ckpt \
	    attack=fgsm attack.eps=$(PAPER_PERVIN_EPS) callbacks.adversarial_examples.num_images=4 hydra.sweep.dir=$(PAPER_PERVIN_DIR)/eps_sweep/$$model || exit 1; \
	done
	if [ -n "$(PAPER_PERVIN_SEA_EPS)" ]; then for model in unet unet_fgsm unet_invfgsm; do \
	  $(PY) -m advmed.evaluate -m experiment=pervin/unet $(PAPER_PERVIN_DATA) ckpt_path=$(PAPER_PERVIN_DIR)/$$model/checkpoints/best.ckpt \
	    attack=sea attack.eps=$(PAPER_PERVIN_SEA_EPS) $(PAPER_PERVIN_SEA_ARGS) callbacks.adversarial_examples.num_images=4 \
	    hydra.sweep.dir=$(PAPER_PERVIN_DIR)/eps_sweep_sea/$$model || exit 1; \
	done; fi
	$(PY) experiments/pervin/aggregate.py $(PAPER_PERVIN_DIR)
endif

paper-chen: install ## U-Net, deformation attacker xi sweep + D / V ablations on synthetic CT, Table 1; see experiments/chen/README.md
ifneq ($(SEEDS),)
	for s in $(SEED_LIST); do $(MAKE) --no-print-directory -o install -o $(STAMP) paper-chen SEEDS= PAPER_CHEN_DIR=$(PAPER_CHEN_DIR)_seeds/seed_$$s PAPER_CHEN_DATA="$(PAPER_CHEN_DATA) seed=$$s" || exit 1; done
	$(PY) -m advmed.studies.papers.over_seeds chen $(PAPER_CHEN_DIR)_seeds --seeds $(SEEDS)
else
	rm -rf $(PAPER_CHEN_DIR)
	$(PY) -m advmed.train experiment=chen/unet $(PAPER_CHEN_DATA) $(PAPER_CHEN_UNET_ARGS) hydra.run.dir=$(PAPER_CHEN_DIR)/unet
	$(PY) -m advmed.train -m experiment=chen/deformation $(PAPER_CHEN_DATA) $(PAPER_CHEN_ARGS) \
	  model.unet_ckpt=$(PAPER_CHEN_DIR)/unet/checkpoints/best.ckpt model.xi=$(PAPER_CHEN_XI) \
	  hydra.sweep.dir=$(PAPER_CHEN_DIR)/xi_sweep 'hydra.sweep.subdir=xi_$${model.xi}'
	$(PY) -m advmed.train -m experiment=chen/deformation $(PAPER_CHEN_DATA) $(PAPER_CHEN_ARGS) \
	  model.unet_ckpt=$(PAPER_CHEN_DIR)/unet/checkpoints/best.ckpt model.xi=$(PAPER_CHEN_ABLATION_XI) model.components=d,v \
	  hydra.sweep.dir=$(PAPER_CHEN_DIR)/ablations 'hydra.sweep.subdir=$${model.components}_xi_$${model.xi}'
	$(PY) experiments/chen/aggregate.py $(PAPER_CHEN_DIR)
endif

paper-lockshin: install ## StyleGAN2 -> SRGAN -> AdvGAN augmentation, three ResNet34s, Table 1 (resumes after a kill); see experiments/lockshin/README.md
ifneq ($(SEEDS),)
	for s in $(SEED_LIST); do $(MAKE) --no-print-directory -o install -o $(STAMP) paper-lockshin SEEDS= PAPER_LOCKSHIN_DIR=$(PAPER_LOCKSHIN_DIR)_seeds/seed_$$s PAPER_LOCKSHIN_ARGS="$(PAPER_LOCKSHIN_ARGS) seed=$$s" || exit 1; done
	$(PY) -m advmed.studies.papers.over_seeds lockshin $(PAPER_LOCKSHIN_DIR)_seeds --seeds $(SEEDS)
else
	$(PY) experiments/lockshin/pipeline.py --scale $(PAPER_LOCKSHIN_SCALE) --out $(PAPER_LOCKSHIN_DIR) $(PAPER_LOCKSHIN_ARGS)
endif

paper-robust-training: install ## standard, mixed FGSM, PGD-AT, TRADES, MART, FGSM-RS at one eps, each under FGSM, PGD-20, AutoAttack; see experiments/robust_training/README.md
ifneq ($(SEEDS),)
	for s in $(SEED_LIST); do $(MAKE) --no-print-directory -o install -o $(STAMP) paper-robust-training SEEDS= PAPER_ROBUST_TRAINING_DIR=$(PAPER_ROBUST_TRAINING_DIR)_seeds/seed_$$s PAPER_ROBUST_TRAINING_ARGS="$(PAPER_ROBUST_TRAINING_ARGS) seed=$$s" || exit 1; done
	$(PY) -m advmed.studies.papers.over_seeds robust_training $(PAPER_ROBUST_TRAINING_DIR)_seeds --seeds $(SEEDS)
else
	rm -rf $(PAPER_ROBUST_TRAINING_DIR)
	for method in $(subst $(comma), ,$(PAPER_ROBUST_TRAINING_METHODS)); do \
	  $(PY) -m advmed.train experiment=robust_training/$$method $(PAPER_ROBUST_TRAINING_DATA) $(PAPER_ROBUST_TRAINING_ARGS) \
	    hydra.run.dir=$(PAPER_ROBUST_TRAINING_DIR)/train/$$method || exit 1; \
	done
	for attack in fgsm pgd autoattack; do \
	  case $$attack in pgd) args="$(PAPER_ROBUST_TRAINING_PGD_ARGS)";; autoattack) args="$(PAPER_ROBUST_TRAINING_AA_ARGS)";; *) args=;; esac; \
	  $(PY) -m advmed.evaluate -m experiment=robust_training/base $(PAPER_ROBUST_TRAINING_DATA) $(PAPER_ROBUST_TRAINING_ARGS) method=$(PAPER_ROBUST_TRAINING_METHODS) \
	    'ckpt_path=$(PAPER_ROBUST_TRAINING_DIR)/train/$${method}/checkpoints/best.ckpt' attack=$$attack $(PAPER_ROBUST_TRAINING_EVAL_ARGS) $$args \
	    hydra.sweep.dir=$(PAPER_ROBUST_TRAINING_DIR)/$$attack 'hydra.sweep.subdir=$${method}' || exit 1; \
	done
	$(PY) experiments/robust_training/aggregate.py $(PAPER_ROBUST_TRAINING_DIR)
endif

figures: install ## render the measured tables in the papers' READMEs from experiments/<paper>/measured/ (record a run first: python -m advmed.studies.papers.readme_figures record ...)
	$(PY) -m advmed.studies.papers.readme_figures render

clean: ## remove outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache site
