# kdseg - one plain Makefile.
#   make            install missing Debian packages, build the core and kdseg
#   make test       C tests, Lua suite, command line, end-to-end runs, REPL; the
#                   sanitizer build of kdseg on most of them; short fuzzing
#   make demo       build, generate a small SynthCity, run the method on it
#   make bench      performance figures as JSON lines (not a test)
#   make fuzz       every fuzzing harness for FUZZ_SECONDS each (not a test)
#   make clean      remove build/

# Compiler settings. x86-64-v3 is AVX2 + FMA: every machine this runs on has
# it, and the hot loops vectorise with it.
CC      ?= cc
ARCH    := -march=x86-64-v3
OPT     ?= -O3 $(ARCH)
WARN    := -Wall -Wextra -Wno-unused-parameter -Wshadow -Wstrict-prototypes
# -fno-trapping-math and -fno-math-errno let the compiler vectorise float
# selects and libm calls; they do not reorder arithmetic as -ffast-math would.
CFLAGS  := -std=gnu11 $(OPT) $(WARN) -fopenmp -fno-trapping-math -fno-math-errno -g
# OpenBLAS, the OpenMP build: its threads and ours are one pool.
BLAS_INC := /usr/include/x86_64-linux-gnu/openblas-openmp
BLAS_LIB := /usr/lib/x86_64-linux-gnu/openblas-openmp
# core/ holds kd.h (the one public header) and internal.h; its parts are
# folders: engine/ (tensors, allocator, autograd, generator, BLAS and threads),
# ops/ (each op family and its kernels), data/ (images, loader, augmentation,
# SynthCity, metrics, pseudo-labels), each with its private headers.
CORE_DIRS := core/engine core/ops core/data
CPPFLAGS := -Icore $(CORE_DIRS:%=-I%) -I$(BLAS_INC)
LDLIBS   := -L$(BLAS_LIB) -Wl,-rpath,$(BLAS_LIB) -lopenblas -ldnnl -lpng -ljpeg -lm -lpthread

# The sanitizer build of the C tests: no optimisation games, abort on UB.
SAN_FLAGS := -std=gnu11 -O1 -g $(ARCH) $(WARN) -fopenmp -fsanitize=address,undefined \
             -fno-sanitize-recover=undefined -fno-omit-frame-pointer

BUILD := build
CORE_SRC := $(wildcard $(CORE_DIRS:%=%/*.c))
CORE_OBJ := $(CORE_SRC:core/%.c=$(BUILD)/core/%.o)
SAN_OBJ  := $(CORE_SRC:core/%.c=$(BUILD)/san/%.o)
CTEST_SRC := $(wildcard tests/c/test_*.c)
CTESTS    := $(CTEST_SRC:tests/c/%.c=$(BUILD)/tests/%)
SANTESTS  := $(CTEST_SRC:tests/c/%.c=$(BUILD)/san-tests/%)
CORE_HDR := $(wildcard core/*.h $(CORE_DIRS:%=%/*.h))
BIND_SRC := $(wildcard bindings/*.c)
BIND_OBJ := $(BIND_SRC:bindings/%.c=$(BUILD)/bindings/%.o)
LUA_INC  := /usr/include/luajit-2.1
# The host links LuaJIT, libedit and libyaml (configs); the core brings libpng.
HOST_LIBS := -lluajit-5.1 -ledit -lyaml

.PHONY: bench-accuracy all deps test test-builds demo bench clean fuzz

all: deps $(BUILD)/libkdcore.a $(BUILD)/kdseg $(BUILD)/kdseg-mpi.so

# Every compile waits for the packages (order-only: `make -j2` on a fresh
# machine would otherwise compile before dnnl.h is there).
deps:
	@vendor/install-deps

$(BUILD)/core/%.o: core/%.c $(CORE_HDR) Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) -c $< -o $@

$(BUILD)/libkdcore.a: $(CORE_OBJ)
	ar rcs $@ $^

$(BUILD)/bindings/%.o: bindings/%.c bindings/lkd.h core/kd.h Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(LUA_INC) $(CFLAGS) -c $< -o $@

# -E exports the Lua C API so that C modules (cjson) load into the host.
$(BUILD)/kdseg: $(BIND_OBJ) $(BUILD)/libkdcore.a
	$(CC) $(CFLAGS) -Wl,-E $(BIND_OBJ) $(BUILD)/libkdcore.a $(HOST_LIBS) $(LDLIBS) -o $@

# The MPI plugin that kdseg loads when mpirun or srun starts it (data-parallel
# training, kd.dist); Open MPI's flags are asked at build time, since deps
# may have just installed it.
$(BUILD)/kdseg-mpi.so: bindings/mpi/kdseg_mpi.c bindings/dist_backend.h Makefile | deps
	$(CC) -shared -fPIC -std=gnu11 -O2 -g $(WARN) $$(mpicc --showme:compile) $< $$(mpicc --showme:link) -o $@

$(BUILD)/san/%.o: core/%.c $(CORE_HDR) Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/libkdcore-san.a: $(SAN_OBJ)
	ar rcs $@ $^

# kdseg itself under ASan + UBSan: make test runs the Lua suite, the command
# line and the tiny end-to-end runs with it too.
SAN_BIND_OBJ := $(BIND_SRC:bindings/%.c=$(BUILD)/san/bindings/%.o)

$(BUILD)/san/bindings/%.o: bindings/%.c bindings/lkd.h core/kd.h Makefile | deps
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -I$(LUA_INC) $(SAN_FLAGS) -c $< -o $@

$(BUILD)/san/kdseg: $(SAN_BIND_OBJ) $(BUILD)/libkdcore-san.a
	$(CC) $(SAN_FLAGS) -Wl,-E $(SAN_BIND_OBJ) $(BUILD)/libkdcore-san.a $(HOST_LIBS) $(LDLIBS) -o $@

$(BUILD)/tests/%: tests/c/%.c tests/c/check.h $(BUILD)/libkdcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/c $(CFLAGS) $< $(BUILD)/libkdcore.a $(LDLIBS) $(TEST_LDFLAGS) -o $@

$(BUILD)/san-tests/%: tests/c/%.c tests/c/check.h $(BUILD)/libkdcore-san.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) -Itests/c $(SAN_FLAGS) $< $(BUILD)/libkdcore-san.a $(LDLIBS) $(TEST_LDFLAGS) -o $@

# test_faults makes allocations fail: the core's allocation functions are
# wrapped at link time for it alone (the shared libraries keep theirs).
$(BUILD)/tests/test_faults $(BUILD)/san-tests/test_faults: \
    TEST_LDFLAGS := -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=aligned_alloc

# Fuzzing with clang's libFuzzer under ASan + UBSan (tests/fuzz/): the C
# decoders (PNG and JPEG from memory, and through the loader with augmentation) and
# the parsers reached through Lua, one harness per target of
# tests/fuzz/targets.lua. The core and bindings are built again with
# coverage instrumentation; OpenMP is GCC's (as OpenBLAS's), not clang's
# (which takes the variables of an omp if() clause for unused ones).
FUZZ_CC    := clang
FUZZ_FLAGS := -std=gnu11 -O1 -g $(ARCH) $(WARN) -Wno-unused-variable -fopenmp=libgomp -fno-omit-frame-pointer \
              -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined
FUZZ_LINK  := -fsanitize=fuzzer,address,undefined
FUZZ_LUA_TARGETS := safetensors yaml config override split classes sweep ledger
FUZZ_CORE_OBJ := $(CORE_SRC:core/%.c=$(BUILD)/fuzz/core/%.o)
FUZZ_BIND_OBJ := $(filter-out %/main.o,$(BIND_SRC:bindings/%.c=$(BUILD)/fuzz/bindings/%.o))
FUZZ_C   := $(BUILD)/fuzz/fuzz_image $(BUILD)/fuzz/fuzz_loader
FUZZ_LUA := $(FUZZ_LUA_TARGETS:%=$(BUILD)/fuzz/fuzz_%)
FUZZERS  := $(FUZZ_C) $(FUZZ_LUA)
FUZZ_SECONDS ?= 120

$(BUILD)/fuzz/core/%.o: core/%.c $(CORE_HDR) Makefile | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) -c $< -o $@

$(BUILD)/fuzz/bindings/%.o: bindings/%.c bindings/lkd.h core/kd.h Makefile | deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(CPPFLAGS) -I$(LUA_INC) $(FUZZ_FLAGS) -c $< -o $@

$(FUZZ_C): $(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_%.c $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) $(CPPFLAGS) $(FUZZ_FLAGS) $(FUZZ_LINK) $< $(FUZZ_CORE_OBJ) $(LDLIBS) -o $@

$(FUZZ_LUA): $(BUILD)/fuzz/fuzz_%: tests/fuzz/fuzz_lua.c $(FUZZ_BIND_OBJ) $(FUZZ_CORE_OBJ)
	$(FUZZ_CC) $(CPPFLAGS) -I$(LUA_INC) -Ibindings $(FUZZ_FLAGS) -DTARGET='"$*"' -DKDSEG_SCRIPTS='"$(CURDIR)/scripts"' \
	    $(FUZZ_LINK) -Wl,-E $< $(FUZZ_BIND_OBJ) $(FUZZ_CORE_OBJ) $(HOST_LIBS) $(LDLIBS) -o $@

fuzz: all $(FUZZERS)
	tests/fuzz/run.sh $(FUZZ_SECONDS) $(FUZZERS)

# (after the fuzzing variables: prerequisites are expanded where they are read)
# Every suite prints its own "N passed, N failed" line and tests/run-all the
# total: C tests, the same under ASan + UBSan, the Lua suite run by kdseg,
# the command line, the REPL driven through tmux, kdseg built with ASan +
# UBSan through the Lua suite, the command line and tiny end-to-end runs,
# and a short run of every fuzzer. The builds run one job per core even
# under a plain `make test` (what CI runs): the four builds (kdseg, its
# sanitizer twin, the C tests, the fuzzers) took 97 s one after the other
# from a clean clone on a 2-core Zen 5, 47 s with two jobs. (Under
# `make -jN test` the sub-make shares make's own jobs instead.)
test:
	@$(MAKE) --no-print-directory $(if $(findstring jobserver,$(MAKEFLAGS)),,-j$$(nproc)) test-builds
	@tests/run-all $(CTESTS) -- $(SANTESTS) -- $(FUZZERS)

test-builds: all $(CTESTS) $(SANTESTS) $(BUILD)/san/kdseg $(FUZZERS)

$(BUILD)/bench/%: tests/bench/%.c $(BUILD)/libkdcore.a
	@mkdir -p $(dir $@)
	$(CC) $(CPPFLAGS) $(CFLAGS) $< $(BUILD)/libkdcore.a $(LDLIBS) -o $@

# As JSON lines: the conv layer (C), the dilated layers of the benchmark
# networks direct against Winograd on sub-images, the measured FMA peak, the two benchmark
# networks of ../shared/bench/NETS.md on 2 and 1 threads alternating with
# PyTorch's (ratios kdseg / PyTorch; skipped with a line without
# python3-torch), the training step with the blocked layout against NCHW,
# DeepLabV3+-R101 evaluated at 1024 x 2048, and data-parallel
# steps on 1 and 2 ranks with estimates for 8 and 64 nodes.
bench: all $(BUILD)/bench/bench_conv $(BUILD)/bench/bench_peak
	$(BUILD)/bench/bench_conv
	$(BUILD)/kdseg tests/bench/bench_dilated.lua
	$(BUILD)/kdseg tests/bench/bench_winograd.lua
	$(BUILD)/kdseg tests/bench/compare_torch.lua
	$(BUILD)/kdseg tests/bench/bench_layout.lua
	$(BUILD)/kdseg tests/bench/bench_full_res.lua
	tests/bench/bench_dist.sh

# The accuracy benchmark of the method against every baseline on one
# documented SynthCity, 3 seeds, reported on its test split (about 35 minutes
# per seed on 2 cores with AVX-512; not a test).
bench-accuracy: all
	$(BUILD)/kdseg experiments/accuracy_benchmark.lua

# The whole method on a freshly generated small SynthCity (under 15 minutes
# on 2 cores): teacher, pseudo-label cycles, students, baselines, the table.
demo: all
	$(BUILD)/kdseg experiments/demo.lua

clean:
	rm -rf $(BUILD)
