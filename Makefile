# advmed — run `make help` for the targets. `demo` and `test` each set everything up on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= outputs/demo
PYTEST_ARGS ?=
PAPER_SNAP_DIR ?= outputs/paper_snap
PAPER_SNAP_AREAS ?= 0.02,0.05,0.1
PAPER_SNAP_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install demo test test-full lint bench paper-pgd-study paper-snap clean

help: ## list the targets
	@grep -E '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install -e ".[dev]"
	touch $(STAMP)

install: $(STAMP) ## create .venv and install advmed with the test extras (first run pulls torch, several GB)

demo: install ## train ResNet34 on synthetic histology, attack it with FGSM and PGD, print the table
	rm -rf $(DEMO_DIR)
	$(PY) -m advmed.train experiment=demo hydra.run.dir=$(DEMO_DIR)/train
	$(PY) -m advmed.evaluate ckpt_path=$(DEMO_DIR)/train/checkpoints/best.ckpt attack=fgsm hydra.run.dir=$(DEMO_DIR)/evaluate_fgsm
	$(PY) -m advmed.evaluate ckpt_path=$(DEMO_DIR)/train/checkpoints/best.ckpt attack=pgd hydra.run.dir=$(DEMO_DIR)/evaluate_pgd
	@$(PY) -m advmed.studies.robustness_report $(DEMO_DIR)/evaluate_fgsm $(DEMO_DIR)/evaluate_pgd

test: install ## fast CPU test suite (what CI runs)
	$(PY) -m pytest $(PYTEST_ARGS)

test-full: install ## every test, including those marked slow
	$(PY) -m pytest -m "" $(PYTEST_ARGS)

lint: install ## ruff
	$(PY) -m ruff check advmed tests experiments

bench: install ## speed comparisons against the peer libraries (experiments/benchmarks)
	$(PY) experiments/benchmarks/attacks.py --arch resnet34 --image-size 64 --batch 32 --steps 10
	$(PY) experiments/benchmarks/snap.py --arch resnet50 --image-size 64 --batch 32 --steps 10

paper-pgd-study: install ## PGD attack-success study (Fig. 3a-d) on synthetic histology; see experiments/pgd_study/README.md
	$(PY) -m advmed.train experiment=pgd_study/synthetic hydra.run.dir=outputs/paper_pgd_study/train
	$(PY) -m advmed.train -m experiment=pgd_study/train_size hydra.sweep.dir=outputs/paper_pgd_study/train_size
	$(PY) experiments/pgd_study/aggregate.py outputs/paper_pgd_study/train_size

paper-snap: install ## SNAP patches on synthetic lymph nodes: ResNet50, area sweep, table; see experiments/snap/README.md
	rm -rf $(PAPER_SNAP_DIR)
	$(PY) -m advmed.train experiment=snap/synthetic_resnet50 test=false $(PAPER_SNAP_ARGS) hydra.run.dir=$(PAPER_SNAP_DIR)/train
	$(PY) -m advmed.evaluate -m experiment=snap/synthetic_resnet50 $(PAPER_SNAP_ARGS) ckpt_path=$(PAPER_SNAP_DIR)/train/checkpoints/best.ckpt attack.area_fraction=$(PAPER_SNAP_AREAS) hydra.sweep.dir=$(PAPER_SNAP_DIR)/area_sweep
	$(PY) experiments/snap/aggregate.py $(PAPER_SNAP_DIR)/area_sweep --headline 0.1 --output-dir $(PAPER_SNAP_DIR)

clean: ## remove outputs (keeps .venv)
	rm -rf outputs multirun .pytest_cache
