# The README's two commands: `make demo` and `make test`. `make` builds build/structmat.
BUILD ?= build
JOBS ?= $(shell nproc 2>/dev/null || echo 2)
DEB_BUILD = build-essential cmake pkg-config libopenblas-dev liblapacke-dev libcjson-dev libpcre2-dev
DEB_TEST = python3-numpy
# The GGUF and tokenizer tests check against llama.cpp's gguf package and Hugging Face's
# tokenizers (PyPI), installed into the python3 on PATH.
PY_TEST = gguf==0.19.0 tokenizers==0.23.3 numpy==2.4.6
DEB_FUZZ = clang-14 libclang-rt-14-dev libomp-14-dev
MODEL = models/shakespeare-llama-3m

.PHONY: all deps test-deps test-deps-py configure demo test test-fast asan fuzz fuzz-build bench install clean

all: $(BUILD)/structmat

deps:
	@tools/deps.sh $(DEB_BUILD)

test-deps: deps test-deps-py
	@tools/deps.sh $(DEB_TEST)

# Debian's own python3 refuses pip installs (PEP 668) unless told to break system packages.
test-deps-py:
	@PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q $(PY_TEST) 2>/dev/null || \
		PIP_ROOT_USER_ACTION=ignore python3 -m pip install -q --break-system-packages $(PY_TEST)

$(BUILD)/Makefile: CMakeLists.txt | deps
	cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=Release >/dev/null

$(BUILD)/structmat: deps $(BUILD)/Makefile FORCE
	@cmake --build $(BUILD) -j $(JOBS)

# The model compressed to 4 and 2.5 bits per weight, side by side with the dense one (tools/demo.sh);
# only the program is built, not the tests.
demo: deps $(BUILD)/Makefile
	@cmake --build $(BUILD) -j $(JOBS) --target structmat_cli
	tools/demo.sh $(BUILD)/structmat $(BUILD)/demo

test: test-deps $(BUILD)/structmat
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS)

test-fast: $(BUILD)/structmat
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) -L fast

# The fast tests under AddressSanitizer + UndefinedBehaviorSanitizer, in their own build dir.
asan: deps
	cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=Debug -DSM_SANITIZE=ON >/dev/null
	cmake --build build-asan -j $(JOBS)
	cd build-asan && ASAN_OPTIONS=detect_leaks=1 ctest --output-on-failure -j $(JOBS) -L fast

# libFuzzer harnesses (fuzz/README.md), each run FUZZ_SECONDS after the other, built with clang,
# ASan and UBSan in build-fuzz; fails on any finding (left in build-fuzz/findings/).
FUZZ_SECONDS ?= 30
FUZZ_BUILD ?= build-fuzz
FUZZ_TARGETS ?= $(patsubst fuzz/fuzz_%.c,%,$(wildcard fuzz/fuzz_*.c))

fuzz-build: deps
	@tools/deps.sh $(DEB_FUZZ)
	CC=clang-14 cmake -S . -B $(FUZZ_BUILD) -DCMAKE_BUILD_TYPE=Release -DSM_FUZZ=ON >/dev/null
	cmake --build $(FUZZ_BUILD) -j $(JOBS) --target make_corpus $(addprefix fuzz_,$(FUZZ_TARGETS))
	$(FUZZ_BUILD)/make_corpus $(FUZZ_BUILD)/seeds >/dev/null

fuzz: fuzz-build
	fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_TARGETS)

bench: $(BUILD)/structmat
	$(BUILD)/structmat bench

install: $(BUILD)/structmat
	cmake --install $(BUILD)

clean:
	rm -rf $(BUILD) build-asan $(FUZZ_BUILD)

FORCE:
