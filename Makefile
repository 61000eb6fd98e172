# Everything the project needs is installed into .venv by these rules.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.13.0
# where torch comes from: empty is pip's own index (PyPI's Linux wheels are CUDA builds); a CPU-only
# machine can say TORCH_INDEX=--index-url=https://download.pytorch.org/whl/cpu
TORCH_INDEX ?=
MEDIAPIPE ?= mediapipe==0.10.14

.PHONY: install demo test bench voice clean

install: $(STAMP)

$(STAMP): pyproject.toml Makefile
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade "pip>=23" "setuptools<81" wheel
	# torch first and pinned, so no later requirement resolves another (multi-GB) build
	$(BIN)/pip install -q "$(TORCH)" $(TORCH_INDEX)
	$(BIN)/pip install -q --no-deps "$(MEDIAPIPE)"
	# LPIPS v0.1 linear heads (6 KB file, read by path; the package itself is never imported)
	$(BIN)/pip install -q --no-deps lpips==0.1.4
	# gsplat: pure Python until its first CUDA use; CPU tests use its torch reference code (no deps: never a CUDA torch)
	$(BIN)/pip install -q --no-deps "gsplat>=1.5,<1.6"
	$(BIN)/pip install -q -e ".[app,serve,eval,reference,dev]"
	# Debian's chromium for the browser tests (they skip without it; never a browser download) and
	# espeak-ng for `speak --text` (offline text to speech)
	if { [ ! -x /usr/bin/chromium ] || ! command -v espeak-ng >/dev/null; } && command -v apt-get >/dev/null 2>&1; then \
	  { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium espeak-ng; } \
	  || echo "chromium / espeak-ng not installed (needs root): the browser tests and speak --text will skip"; fi
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/gagavatar demo

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: $(STAMP)
	$(BIN)/gagavatar bench all

# The bundled demonstration voice (gagavatar/assets/speech/tiny_voice.safetensors): synthetic
# espeak-ng speech, then both training stages at the tiny preset's defaults (docs/speech.md)
voice: $(STAMP)
	$(BIN)/gagavatar synth-speech --out build/voice
	$(BIN)/gagavatar train-speech --data build/voice/train.npz --eval build/voice/heldout.npz --out build/voice/run --overwrite
	$(BIN)/gagavatar eval-speech --data build/voice/heldout.npz --speech-model build/voice/run/speech_model.safetensors --out build/voice/report
	cp build/voice/run/speech_model.safetensors gagavatar/assets/speech/tiny_voice.safetensors

clean:
	rm -rf $(VENV) build *.egg-info demo
