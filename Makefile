# SPDX-License-Identifier: MIT
#
# shmq build.  One Makefile serves three build trees:
#   make            -> build/        (-O2 -g, jemalloc in the tool and benches)
#   make asan       -> build-asan/   (ASan + UBSan, libc malloc), runs unit + integration tests
#   make tsan       -> build-tsan/   (TSan, libc malloc), runs the thread, worker and ring-core tests as plain programs
#   make fuzz       -> build/fuzz/   (clang libFuzzer + ASan + UBSan), fuzzes the inspection code
# The sanitizer targets re-invoke make with BUILD=<dir> SAN=<asan|tsan>.
#
# Quiet by default; V=1 prints full commands.  CFLAGS/LDFLAGS from the command line are kept.

BUILD ?= build
SAN ?=

PREFIX ?= /usr/local
DESTDIR ?=
BINDIR ?= $(PREFIX)/bin
LIBDIR ?= $(PREFIX)/lib
INCLUDEDIR ?= $(PREFIX)/include
PKGCONFIGDIR ?= $(LIBDIR)/pkgconfig
MANDIR ?= $(PREFIX)/share/man
COMPLETIONDIR ?= $(PREFIX)/share/bash-completion/completions
# systemd's unit directory under PREFIX (/usr/lib/systemd/system for PREFIX=/usr; systemd also
# loads /usr/local/lib/systemd/system); the units read their options from SYSCONFDIR/shmq/NAME.env
SYSTEMDUNITDIR ?= $(PREFIX)/lib/systemd/system
SYSCONFDIR ?= /etc
SYSTEMD_UNITS := shmq-watchdog@.service shmq-work@.service

CC ?= cc
AR ?= ar
CLANG_FORMAT ?= clang-format
INSTALL ?= install

CFLAGS ?= -O2 -g
LDFLAGS ?=
override CFLAGS += -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -MMD -MP

# Sanitizer builds: flags go last so their -O1 wins; no jemalloc (it would hide heap bugs from ASan
# and is not instrumented for TSan).
ifeq ($(SAN),asan)
SAN_FLAGS := -O1 -g -fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer
else ifeq ($(SAN),tsan)
SAN_FLAGS := -O1 -g -fsanitize=thread
else ifneq ($(SAN),)
$(error SAN must be empty, asan or tsan (got '$(SAN)'))
endif
override CFLAGS += $(SAN_FLAGS)

ifeq ($(SAN),)
JEMALLOC_LIBS ?= -ljemalloc
# Catch missing libraries when linking the .so (sanitizer runtimes are not linked into .so files).
SO_LDFLAGS := -Wl,-z,defs
else
JEMALLOC_LIBS :=
SO_LDFLAGS :=
endif

# liburcu: the worker runtime's in-flight records (src/worker.c)
LIB_LIBS := -lurcu -lpthread
# libmicrohttpd: `shmq exporter`'s HTTP server (the tool only; the library never links it)
TOOL_LIBS := $(JEMALLOC_LIBS) -ljansson -lmicrohttpd -lurcu -lm -lpthread
BRIDGE_LIBS := -lnats -lurcu -lpthread
TEST_LIBS := -lcriterion -lurcu -ljansson -lpthread -lm
TSAN_LIBS := -lurcu -lpthread -lm
BENCH_LIBS := $(JEMALLOC_LIBS) -lpthread -lm

# Criterion options for test runs, e.g. CRITERION_FLAGS='--jobs 1 --verbose'.
CRITERION_FLAGS ?=

# "MAJOR.MINOR" from include/shmq.h, for the .pc file.
version_part = $(shell sed -n 's/^.define SHMQ_VERSION_$(1)[[:space:]]*\([0-9]*\).*/\1/p' include/shmq.h)
VERSION = $(call version_part,MAJOR).$(call version_part,MINOR)

# ---- sources -----------------------------------------------------------------------------------

LIB_SRCS := $(sort $(wildcard src/*.c))
TOOL_SRCS := $(sort $(wildcard tools/*.c))
# shmq-bridge, its own binary: only it links libnats, never libshmq or the shmq tool
BRIDGE_SRCS := $(sort $(wildcard tools/bridge/*.c))
UNIT_SRCS := $(sort $(wildcard tests/unit/*.c))
INTEG_SRCS := $(sort $(wildcard tests/integration/*.c))
# the thread, counter and worker tests and the ring core's unit tests (its threaded one on malloc'd memory)
# again, each as a plain program for TSan (see tests/common.h, TQ_PLAIN)
TSAN_SRCS := tests/integration/test_threads.c tests/integration/test_worker.c tests/unit/test_lane.c \
	tests/integration/test_counters.c
# bench/harness.c and bench/crash.c drive the transports of bench/peers/ (adapters, one per
# transport, plus what the two share in bench/lib/); the other bench/*.c are standalone programs.
SUITE_MAINS := bench/harness.c bench/crash.c
BENCH_SRCS := $(filter-out $(SUITE_MAINS),$(sort $(wildcard bench/*.c)))
SUITE_SRCS := $(filter $(SUITE_MAINS),$(wildcard bench/*.c))
PEER_SRCS := $(sort $(wildcard bench/peers/*.c bench/lib/*.c))
PEER_CXX_SRCS := $(sort $(wildcard bench/peers/*.cc))

OBJ := $(BUILD)/obj
STAMP := $(BUILD)/.stamp
LIB_OBJS := $(LIB_SRCS:src/%.c=$(OBJ)/static/%.o)
PIC_OBJS := $(LIB_SRCS:src/%.c=$(OBJ)/pic/%.o)
TESTLIB_OBJS := $(LIB_SRCS:src/%.c=$(OBJ)/test/%.o)
TOOL_OBJS := $(TOOL_SRCS:%.c=$(OBJ)/%.o)
BRIDGE_OBJS := $(BRIDGE_SRCS:%.c=$(OBJ)/%.o)
# the bridge of the tests: with the library's fault points (SHMQ_BRIDGE_FAULT=point:nth)
BRIDGE_TEST_OBJS := $(BRIDGE_SRCS:tools/%.c=$(OBJ)/test/%.o)
UNIT_OBJS := $(UNIT_SRCS:%.c=$(OBJ)/%.o)
INTEG_OBJS := $(INTEG_SRCS:%.c=$(OBJ)/%.o)
TSAN_OBJS := $(patsubst %.c,$(OBJ)/tsan/%.o,$(notdir $(TSAN_SRCS)))
BENCH_OBJS := $(BENCH_SRCS:%.c=$(OBJ)/%.o)
SUITE_OBJS := $(SUITE_SRCS:%.c=$(OBJ)/%.o)
PEER_OBJS := $(PEER_SRCS:%.c=$(OBJ)/%.o) $(PEER_CXX_SRCS:%.cc=$(OBJ)/%.o)
PY_OBJ := $(OBJ)/python/_shmq.o
ALL_OBJS := $(LIB_OBJS) $(PIC_OBJS) $(TESTLIB_OBJS) $(TOOL_OBJS) $(BRIDGE_OBJS) $(BRIDGE_TEST_OBJS) \
	$(UNIT_OBJS) $(INTEG_OBJS) \
	$(TSAN_OBJS) $(BENCH_OBJS) $(OBJ)/tools/demo/worker.o $(SUITE_OBJS) $(PEER_OBJS) $(PY_OBJ)

LIB_A := $(BUILD)/libshmq.a
LIB_SO := $(BUILD)/libshmq.so
# the ABI is versioned by the major number: programs record libshmq.so.MAJOR
SONAME = libshmq.so.$(call version_part,MAJOR)
TESTLIB_A := $(BUILD)/libshmq-test.a
TOOL := $(BUILD)/shmq
BRIDGE := $(BUILD)/shmq-bridge
BRIDGE_TEST := $(BUILD)/tests/shmq-bridge
DEMO_WORKER := $(BUILD)/demo-worker
UNIT_BIN := $(BUILD)/tests/unit
INTEG_BIN := $(BUILD)/tests/integration
TSAN_BINS := $(patsubst test_%.c,$(BUILD)/tests/tsan-%,$(notdir $(TSAN_SRCS)))
BENCH_BINS := $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
SUITE_BINS := $(SUITE_SRCS:bench/%.c=$(BUILD)/bench/%)
DEPS_OK := $(BUILD)/.deps-ok
# promtool for the exposition tests (see its rule below); defined here, before the rules that
# name it as a prerequisite (make expands those as it reads them)
PROMTOOL_DIR := build/promtool
PROMTOOL_OK := $(PROMTOOL_DIR)/.done
LIB_DEPS_OK := $(BUILD)/.lib-deps-ok

LIB_CFLAGS := -DSHMQ_BUILD -fvisibility=hidden -Isrc
TEST_CFLAGS := -DSHMQ_TEST -Isrc

# ---- output ------------------------------------------------------------------------------------

ifeq ($(V),1)
Q :=
msg =
else
Q := @
msg = printf '  %-5s %s\n' '$(1)' '$(2)$(if $(SAN), [$(SAN)])';
endif

MAKEFLAGS += --no-print-directory

# ---- top-level targets -------------------------------------------------------------------------

.DEFAULT_GOAL := all
.PHONY: python python-build python-test demo-python bench-python all lib tool man bridge demo-bridge bench-bridge deps test layers unit integration tests demo demo-crash bench-crash bench-run bench-crash-run asan tsan tsan-run bench bench-quick \
	fuzz format format-check install uninstall clean

# the Python package is built in the plain build only (an extension of a sanitized library would
# need the sanitizer runtime preloaded into the interpreter)
all: lib tool bridge $(if $(SAN),,python)
lib: $(LIB_A) $(LIB_SO) $(BUILD)/$(SONAME)
tool: $(TOOL)
bridge: $(BRIDGE)
# the manual pages, from `shmq help` and the public headers (tools/man/mkman.sh)
PUBLIC_HEADERS := include/shmq.h include/shmq_inspect.h include/shmq_worker.h
MAN_OUT := $(BUILD)/man
man: $(MAN_OUT)/man1/shmq.1
$(MAN_OUT)/man1/shmq.1: $(TOOL) $(PUBLIC_HEADERS) tools/man/mkman.sh
	$(Q)$(call msg,MAN,$(MAN_OUT))rm -rf $(MAN_OUT) && sh tools/man/mkman.sh $(TOOL) $(MAN_OUT) $(PUBLIC_HEADERS)
tests: $(UNIT_BIN) $(INTEG_BIN) $(BRIDGE_TEST)
deps: $(DEPS_OK)

# $(call run_tests,BINARY): run one Criterion binary, its output going both to the terminal and to
# BINARY.log.  The run fails if Criterion fails, or if a sanitizer reported anything: LeakSanitizer
# reports when a test process exits, after Criterion has already counted the test as passed.
SAN_REPORT_RE := ERROR: [A-Za-z]+Sanitizer|WARNING: ThreadSanitizer|runtime error:
# SHMQ_TOOL tells the CLI tests which shmq binary to run, SHMQ_PROMTOOL which promtool (below),
# SHMQ_BRIDGE which shmq-bridge.
run_tests = $(call msg,RUN,$(1)){ SHMQ_TOOL=$(abspath $(TOOL)) SHMQ_PROMTOOL=$(promtool) SHMQ_BRIDGE=$(abspath $(BRIDGE_TEST)) LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 $(1) $(CRITERION_FLAGS) 2>&1; echo $$? >$(1).rc; } | tee $(1).log; \
	rc=$$(cat $(1).rc); \
	if [ "$$rc" -eq 0 ] && grep -q -E '$(SAN_REPORT_RE)' $(1).log; then \
		echo "  FAIL  $(1): sanitizer report (see $(1).log)"; rc=1; \
	fi; \
	exit $$rc

# Criterion prints a "Synthesis:" line per binary; the first failing binary stops make.
# then the README's C example, built each way the README gives (not in sanitizer builds)
test: all tests layers $(PROMTOOL_OK)
	$(Q)$(call run_tests,$(UNIT_BIN))
	$(Q)$(call run_tests,$(INTEG_BIN))
	$(Q)$(if $(SAN),,$(call msg,CHECK,tests/readme_example.sh)sh tests/readme_example.sh $(BUILD) $(TOOL))
	$(Q)$(if $(SAN),,$(call msg,CHECK,tests/man_completion.sh)bash tests/man_completion.sh $(BUILD) $(TOOL))
	$(Q)$(if $(SAN),,$(call msg,CHECK,tests/systemd_units.sh)sh tests/systemd_units.sh "$(MAKE)" $(BUILD))
	$(Q)$(if $(SAN),true,$(MAKE) python-test)

# no call cycle between the library's modules (docs/design.md, "Source layout")
layers: $(LIB_OBJS)
	$(Q)$(call msg,CHECK,tests/layers.sh)sh tests/layers.sh $(LIB_OBJS)

unit: $(UNIT_BIN)
	$(Q)$(call run_tests,$(UNIT_BIN))

integration: $(INTEG_BIN) $(TOOL) $(PROMTOOL_OK) $(BRIDGE_TEST)
	$(Q)$(call run_tests,$(INTEG_BIN))

# producers and consumers in separate processes, then the crash story (demo-crash)
demo: all $(DEMO_WORKER)
	$(Q)$(call msg,DEMO,tools/demo/main.sh)bash tools/demo/main.sh $(abspath $(TOOL))
	$(Q)$(call msg,DEMO,tools/demo/crash.sh)bash tools/demo/crash.sh $(abspath $(TOOL)) $(abspath $(DEMO_WORKER))

# the crash-recovery show: a worker SIGKILLed mid-flight, the watchdog, a poison message and the DLQ
demo-crash: all $(DEMO_WORKER)
	$(Q)$(call msg,DEMO,tools/demo/crash.sh)bash tools/demo/crash.sh $(abspath $(TOOL)) $(abspath $(DEMO_WORKER))

# two queues bridged through one JetStream server, a producer, `shmq work`, the bridges killed midway
demo-bridge: all
	$(Q)$(call msg,DEMO,tools/demo/bridge.sh)bash tools/demo/bridge.sh $(abspath $(TOOL)) $(abspath $(BRIDGE))

# shm -> JetStream -> shm throughput and latency on loopback (bench/bridge.c), e.g.
# BENCH_ARGS='--rounds 3 --count 100000'
bench-bridge: all $(BUILD)/bench/bridge
	$(Q)$(call msg,RUN,$(BUILD)/bench/bridge)$(BUILD)/bench/bridge --bridge $(abspath $(BRIDGE)) \
		--server $$(command -v nats-server || echo /usr/sbin/nats-server) $(BENCH_ARGS)

asan:
	$(Q)$(MAKE) BUILD=build-asan SAN=asan test

# TSan prefers clang (gcc works too).
TSAN_CC ?= $(shell command -v clang >/dev/null 2>&1 && echo clang || echo $(CC))
tsan:
	$(Q)$(MAKE) BUILD=build-tsan SAN=tsan CC=$(TSAN_CC) tsan-run

# The TSan programs are the files of TSAN_SRCS, each built without Criterion (TQ_PLAIN), whose
# sandbox cannot start under TSan (Snaipe/Criterion#274). halt_on_error makes a race fail the run;
# a report in the log fails it too. ASLR is turned off for the run when setarch allows it, which
# keeps older TSan runtimes working on kernels with high mmap randomisation.
tsan-run: $(TSAN_BINS)
	$(Q)norand=; if setarch $$(uname -m) -R true 2>/dev/null; then norand="setarch $$(uname -m) -R"; fi; \
	for bin in $(TSAN_BINS); do \
	$(if $(Q),printf '  %-5s %s\n' RUN "$$bin [$(SAN)]";) log=$$bin.log; \
	rc=0; TSAN_OPTIONS="halt_on_error=1 $$TSAN_OPTIONS" $$norand $$bin >$$log 2>&1 || rc=$$?; \
	cat $$log; \
	if [ $$rc -eq 0 ] && grep -q -E '$(SAN_REPORT_RE)' $$log; then \
		echo "  FAIL  $$bin: sanitizer report (see $$log)"; rc=1; \
	fi; \
	[ $$rc -eq 0 ] || exit $$rc; \
	done

# ---- Python package (bindings/python) -----------------------------------------------------------
# The extension shmq/_shmq*.so links the library's PIC objects in, so build/python runs as it is
# (PYTHONPATH=build/python) and installs with no libshmq.so beside it. Debian's /usr/bin/python3,
# not whatever python3 is first on PATH: Debian's python3-pytest and python3-zmq belong to it.
PYTHON ?= /usr/bin/python3
PY_PACKAGES := python3-dev python3-pytest
py_var = $(shell $(PYTHON) -c 'import sysconfig; print(sysconfig.get_config_var("$(1)") or "")' 2>/dev/null)
PY_EXT_SUFFIX := $(call py_var,EXT_SUFFIX)
PY_INCLUDE := $(call py_var,INCLUDEPY)
PY_VERSION := $(call py_var,py_version_short)
# where make install puts the package: a directory on the interpreter's sys.path for PREFIX
PY_SITEDIR ?= $(if $(filter /usr,$(PREFIX)),/usr/lib/python3/dist-packages,$(PREFIX)/lib/python$(PY_VERSION)/dist-packages)
PY_DIR := $(BUILD)/python
PY_EXT := $(PY_DIR)/shmq/_shmq$(PY_EXT_SUFFIX)
PY_SRCS := $(sort $(wildcard bindings/python/shmq/*.py))
PY_FILES := $(PY_SRCS:bindings/python/%=$(PY_DIR)/%)
PY_DEPS_OK := $(BUILD)/.py-deps-ok
# PYTEST_ARGS: e.g. PYTEST_ARGS='-k asyncio -v'
PYTEST_ARGS ?=

# make runs itself again once the dependencies are there: the interpreter's paths and suffix are
# read when the Makefile is parsed, and a fresh machine may have had no python3 before.
python: $(PY_DEPS_OK)
	$(Q)$(MAKE) python-build

python-build: $(PY_EXT) $(PY_FILES)

python-test: python $(TOOL)
	$(Q)$(call msg,RUN,pytest bindings/python/tests)SHMQ_TOOL=$(abspath $(TOOL)) PYTHONPATH=$(abspath $(PY_DIR)) \
		PYTHONDONTWRITEBYTECODE=1 $(PYTHON) -m pytest -q -p no:cacheprovider bindings/python/tests $(PYTEST_ARGS)

# a Python producer feeding `shmq work`, then `shmq send` feeding a Python worker
demo-python: all
	$(Q)$(call msg,DEMO,tools/demo/python.sh)PYTHONPATH=$(abspath $(PY_DIR)) PYTHON=$(PYTHON) \
		bash tools/demo/python.sh $(abspath $(TOOL))

$(PY_DEPS_OK): Makefile | $(DEPS_OK)
	$(Q)if [ ! -f '$(PY_INCLUDE)/Python.h' ] || ! $(PYTHON) -c 'import pytest' >/dev/null 2>&1; then \
		echo "  DEPS  missing: Python headers or pytest for $(PYTHON)"; \
		$(call apt_install,$(PY_PACKAGES)); \
	fi; \
	mkdir -p $(@D) && touch $@

$(PY_OBJ): bindings/python/shmq/_shmq.c | $(PY_DEPS_OK)
	$(Q)$(call msg,CC,$<)mkdir -p $(@D) && $(CC) $(CFLAGS) -fPIC -fvisibility=hidden \
		-isystem $(PY_INCLUDE) -c -o $@ $<

$(PY_EXT): $(PY_OBJ) $(PIC_OBJS) $(STAMP)/pic $(STAMP)/flags
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -shared -o $@ $(PY_OBJ) $(PIC_OBJS) \
		$(LIB_LIBS)

$(PY_DIR)/shmq/%.py: bindings/python/shmq/%.py
	$(Q)mkdir -p $(@D) && cp $< $@

# ---- fuzzing -----------------------------------------------------------------------------------
# The libFuzzer target tests/fuzz/fuzz_inspect.c, built by clang against the library sources, runs
# for FUZZ_SECONDS on a scratch copy of tests/fuzz/corpus (the repo is never written; what the run
# learnt stays in build/fuzz/corpus, a crashing input in build/fuzz/crash-*). Any crash, sanitizer
# report, leak or input slower than FUZZ_TIMEOUT seconds fails it. clang and its libFuzzer runtime
# are installed like the other dependencies when the compiler cannot link a fuzzer.
FUZZ_SECONDS ?= 60
FUZZ_TIMEOUT ?= 10
FUZZ_ARGS ?=
FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_BIN := $(FUZZ_DIR)/fuzz_inspect
FUZZ_PACKAGES := clang libclang-rt-dev
FUZZ_DEPS_OK := $(FUZZ_DIR)/.deps-ok
# No comparison tracing: on the checker's loops over 1024 participant records it halved the
# executions for no coverage (the built inputs already carry the magic and the sizes it finds).
FUZZ_CFLAGS := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Iinclude -Isrc -DSHMQ_BUILD -O1 -g \
	-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer \
	-fno-sanitize-coverage=trace-cmp

fuzz: $(FUZZ_BIN)
	$(Q)$(call msg,FUZZ,$(FUZZ_BIN) for $(FUZZ_SECONDS) s)rm -rf $(FUZZ_DIR)/corpus && \
	mkdir -p $(FUZZ_DIR)/corpus && cp tests/fuzz/corpus/* $(FUZZ_DIR)/corpus/ && \
	rc=0; $(FUZZ_BIN) -max_total_time=$(FUZZ_SECONDS) -timeout=$(FUZZ_TIMEOUT) -print_final_stats=1 \
		-artifact_prefix=$(FUZZ_DIR)/ $(FUZZ_ARGS) $(FUZZ_DIR)/corpus >$(FUZZ_DIR)/fuzz.log 2>&1 || rc=$$?; \
	if [ $$rc -ne 0 ]; then cat $(FUZZ_DIR)/fuzz.log; echo "  FAIL  $(FUZZ_BIN): exit $$rc (log: $(FUZZ_DIR)/fuzz.log)"; \
	else grep -E '^#[0-9]+[[:space:]]+(INITED|DONE)|^stat::' $(FUZZ_DIR)/fuzz.log; fi; \
	exit $$rc

$(FUZZ_BIN): tests/fuzz/fuzz_inspect.c $(LIB_SRCS) $(wildcard src/*.h include/*.h) $(STAMP)/fuzz | $(FUZZ_DEPS_OK)
	$(Q)$(call msg,CC,$@)$(FUZZ_CC) $(FUZZ_CFLAGS) -o $@ tests/fuzz/fuzz_inspect.c $(LIB_SRCS) $(LIB_LIBS)

$(FUZZ_DEPS_OK):
	$(Q)mkdir -p $(@D); probe() { printf '%s\n' '#include <stddef.h>' \
		'int LLVMFuzzerTestOneInput(const unsigned char *d, size_t n) { return (int)(n && d[0]); }' | \
		$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -x c - -o $(@D)/.probe >/dev/null 2>&1; }; \
	if ! probe; then \
		echo "  DEPS  $(FUZZ_CC) cannot link a libFuzzer target"; \
		$(call apt_install,$(FUZZ_PACKAGES)); \
		probe || { echo "  DEPS  $(FUZZ_CC) still cannot link a libFuzzer target" >&2; exit 1; }; \
	fi; \
	rm -f $(@D)/.probe; touch $@

# ---- benchmarks ---------------------------------------------------------------------------------
# The peers' libraries, servers and gnuplot are installed like the other dependencies; one that
# cannot be installed is reported, and the harness then lists its transport as skipped with the
# reason. make re-runs itself after the install so that the link sees what is there now.
BENCH_PACKAGES := python3-zmq libzmq3-dev libboost-dev iceoryx libiceoryx-binding-c-dev libhiredis-dev libnats-dev \
	redis-server nats-server gnuplot-nox
BENCH_DEPS_OK := $(BUILD)/.bench-deps-ok
# -lNAME for each peer library the linker finds
have_lib = $(shell printf 'int main(void){return 0;}\n' | $(CC) -x c - -o /dev/null -l$(1) 2>/dev/null && echo -l$(1))
PEER_LIBS = $(foreach l,zmq hiredis nats iceoryx_binding_c iceoryx_posh iceoryx_hoofs iceoryx_platform,$(call have_lib,$(l))) \
	-lrt -lstdc++
CXX ?= c++
PEER_CXXFLAGS = $(filter-out -std=c11 -MMD -MP,$(CFLAGS)) -std=c++17 -MMD -MP

# BENCH_ARGS are passed to the harness, e.g. BENCH_ARGS='--only shmq,pipe --repeats 5'.
BENCH_ARGS ?=
BENCH_OUT ?= $(BUILD)/bench-results
bench: $(BENCH_DEPS_OK)
	$(Q)$(MAKE) bench-run BENCH_MODE=
	$(Q)$(MAKE) bench-python BENCH_MODE=

bench-quick: $(BENCH_DEPS_OK)
	$(Q)$(MAKE) bench-run BENCH_MODE=--quick
	$(Q)$(MAKE) bench-python BENCH_MODE=--quick

# shmq from Python against multiprocessing.Queue, multiprocessing.Pipe and pyzmq ipc:// (and the
# binding techniques' per-call cost), printed and kept in $(BENCH_OUT)/python.txt
bench-python: python $(LIB_SO)
	$(Q)$(call msg,RUN,bench/python/bench.py $(BENCH_MODE))mkdir -p $(BENCH_OUT) && \
		PYTHONPATH=$(abspath $(PY_DIR)) $(PYTHON) bench/python/bench.py $(BENCH_MODE) \
		--lib $(abspath $(LIB_SO)) | tee $(BENCH_OUT)/python.txt

bench-crash: $(BENCH_DEPS_OK)
	$(Q)$(MAKE) bench-crash-run

bench-run: $(SUITE_BINS) $(BENCH_BINS)
	$(Q)$(call msg,RUN,$(BUILD)/bench/harness $(BENCH_MODE))mkdir -p $(BENCH_OUT) && \
		$(BUILD)/bench/harness $(BENCH_MODE) --out $(BENCH_OUT) $(BENCH_ARGS)

bench-crash-run: $(SUITE_BINS)
	$(Q)$(call msg,RUN,$(BUILD)/bench/crash)mkdir -p $(BENCH_OUT) && $(BUILD)/bench/crash --out $(BENCH_OUT) $(BENCH_ARGS)

# The peers compile against whatever the bench packages provide (a missing one is skipped): once
# make bench has installed them (its stamp is then newer than peers compiled before), rebuild them.
$(PEER_OBJS): $(wildcard $(BENCH_DEPS_OK))
$(BENCH_DEPS_OK): | $(DEPS_OK)
	$(Q)missing=; \
	for p in $(BENCH_PACKAGES); do \
		dpkg-query -W -f='$${Status}' "$$p" 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "  DEPS  bench:$$missing"; \
		if [ "$$(id -u)" -eq 0 ]; then sudo=; elif command -v sudo >/dev/null 2>&1; then sudo=sudo; else sudo=none; fi; \
		if [ "$$sudo" = none ] || ! command -v apt-get >/dev/null 2>&1; then \
			echo "  DEPS  cannot install them (no apt-get, or not root): those peers will be skipped"; \
		else \
			$$sudo apt-get update -qq || true; \
			for p in $$missing; do \
				$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$$p" \
					>/dev/null 2>&1 || echo "  DEPS  could not install $$p: its peer will be skipped"; \
			done; \
		fi; \
	fi; \
	mkdir -p $(@D) && touch $@

FORMAT_FILES = $(sort $(shell find src include tools tests bench bindings -name '*.[ch]' -o -name '*.cc' 2>/dev/null))

format:
	$(Q)$(if $(FORMAT_FILES),$(CLANG_FORMAT) -i $(FORMAT_FILES),true)

format-check:
	$(Q)$(if $(FORMAT_FILES),$(CLANG_FORMAT) --dry-run --Werror $(FORMAT_FILES),true)

# shmq.pc is generated at install time so that it always matches PREFIX/LIBDIR/INCLUDEDIR.
install: $(LIB_A) $(LIB_SO) $(TOOL) $(BRIDGE) man python
	$(Q)$(call msg,INSTALL,$(DESTDIR)$(PREFIX))$(INSTALL) -d $(DESTDIR)$(BINDIR) $(DESTDIR)$(LIBDIR) \
		$(DESTDIR)$(INCLUDEDIR) $(DESTDIR)$(PKGCONFIGDIR) $(DESTDIR)$(MANDIR)/man1 $(DESTDIR)$(MANDIR)/man3 \
		$(DESTDIR)$(COMPLETIONDIR)
	$(Q)$(INSTALL) -m 644 $(MAN_OUT)/man1/shmq.1 $(DESTDIR)$(MANDIR)/man1/ && \
		$(INSTALL) -m 644 $(MAN_OUT)/man3/*.3 $(DESTDIR)$(MANDIR)/man3/
	$(Q)$(INSTALL) -m 644 tools/completion/shmq.bash $(DESTDIR)$(COMPLETIONDIR)/shmq
	$(Q)$(INSTALL) -m 644 $(LIB_A) $(DESTDIR)$(LIBDIR)/libshmq.a
	$(Q)$(INSTALL) -m 755 $(LIB_SO) $(DESTDIR)$(LIBDIR)/libshmq.so.$(VERSION) && \
		ln -sf libshmq.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME) && \
		ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libshmq.so
	$(Q)$(INSTALL) -m 644 include/shmq.h include/shmq_inspect.h include/shmq_worker.h $(DESTDIR)$(INCLUDEDIR)/
	$(Q)sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCLUDEDIR@|$(INCLUDEDIR)|g' \
		-e 's|@VERSION@|$(VERSION)|g' shmq.pc.in > $(DESTDIR)$(PKGCONFIGDIR)/shmq.pc && \
		chmod 644 $(DESTDIR)$(PKGCONFIGDIR)/shmq.pc
	$(Q)$(INSTALL) -m 755 $(TOOL) $(DESTDIR)$(BINDIR)/shmq
	$(Q)$(INSTALL) -m 755 $(BRIDGE) $(DESTDIR)$(BINDIR)/shmq-bridge
	$(Q)$(call msg,INSTALL,$(DESTDIR)$(PY_SITEDIR)/shmq)$(INSTALL) -d $(DESTDIR)$(PY_SITEDIR)/shmq && \
		$(INSTALL) -m 644 $(PY_FILES) $(DESTDIR)$(PY_SITEDIR)/shmq/ && \
		$(INSTALL) -m 644 $(PY_EXT) $(DESTDIR)$(PY_SITEDIR)/shmq/
	$(Q)$(INSTALL) -d $(DESTDIR)$(SYSTEMDUNITDIR) && for u in $(SYSTEMD_UNITS); do \
		sed -e 's|@BINDIR@|$(BINDIR)|g' -e 's|@SYSCONFDIR@|$(SYSCONFDIR)|g' tools/systemd/$$u.in \
			>$(DESTDIR)$(SYSTEMDUNITDIR)/$$u && chmod 644 $(DESTDIR)$(SYSTEMDUNITDIR)/$$u || exit 1; \
	done
	$(Q)$(ldconfig_step)

# Installed straight into the system (no DESTDIR) as root: the loader's cache learns the new
# library at once, so a program built against it runs without a manual ldconfig. A package build
# (DESTDIR set) leaves that to the package's own scripts.
ldconfig_step = if [ -z "$(DESTDIR)" ] && [ "$$(id -u)" -eq 0 ]; then \
		l=$$(command -v ldconfig || echo /sbin/ldconfig); if [ -x "$$l" ]; then "$$l"; fi; \
	fi

uninstall:
	$(Q)$(call msg,RM,$(DESTDIR)$(PREFIX))rm -f $(DESTDIR)$(LIBDIR)/libshmq.a \
		$(DESTDIR)$(LIBDIR)/libshmq.so $(DESTDIR)$(LIBDIR)/$(SONAME) \
		$(DESTDIR)$(LIBDIR)/libshmq.so.$(VERSION) $(DESTDIR)$(INCLUDEDIR)/shmq.h $(DESTDIR)$(INCLUDEDIR)/shmq_inspect.h \
		$(DESTDIR)$(INCLUDEDIR)/shmq_worker.h \
		$(DESTDIR)$(PKGCONFIGDIR)/shmq.pc $(DESTDIR)$(BINDIR)/shmq $(DESTDIR)$(BINDIR)/shmq-bridge \
		$(DESTDIR)$(MANDIR)/man1/shmq.1 $(DESTDIR)$(MANDIR)/man3/libshmq.3 $(DESTDIR)$(MANDIR)/man3/shmq_*.3 \
		$(DESTDIR)$(COMPLETIONDIR)/shmq \
		$(addprefix $(DESTDIR)$(SYSTEMDUNITDIR)/,$(SYSTEMD_UNITS))
	$(Q)rm -rf $(DESTDIR)$(PY_SITEDIR)/shmq
	$(Q)$(ldconfig_step)

clean:
	$(Q)$(call msg,CLEAN,build build-asan build-tsan)rm -rf build build-asan build-tsan

# ---- dependencies (Debian/Ubuntu) --------------------------------------------------------------

# $(call apt_install,PACKAGES): a shell step installing PACKAGES with apt-get, as root or through
# sudo; without either it says what to install by hand and fails the rule.
apt_install = if ! command -v apt-get >/dev/null 2>&1; then \
		echo "  DEPS  no apt-get: install $(1) (or equivalents) by hand" >&2; exit 1; \
	fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=; \
	elif command -v sudo >/dev/null 2>&1; then sudo=sudo; \
	else echo "  DEPS  not root and no sudo: install $(1) by hand" >&2; exit 1; fi; \
	echo "  DEPS  apt-get install $(1)"; \
	$$sudo apt-get update && \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends $(1) || exit 1

# The library needs liburcu only; the tool, the tests and the benches need the rest too.
LIB_DEB_PACKAGES := liburcu-dev
LIB_DEP_HEADERS := urcu.h
# curl: the tests scrape `shmq exporter` with it; libnats-dev and nats-server: shmq-bridge and its
# tests (a real server on 127.0.0.1)
DEB_PACKAGES := libcriterion-dev liburcu-dev libjemalloc-dev libjansson-dev libmicrohttpd-dev pkg-config curl \
	libnats-dev nats-server
DEP_HEADERS := criterion/criterion.h urcu.h jemalloc/jemalloc.h jansson.h microhttpd.h nats/nats.h
DEP_COMMANDS := pkg-config curl nats-server

# promtool, Prometheus's own reader of the exposition format, for the tests of `stat --prometheus`
# and `exporter` (they run it besides their own strict reader). Debian ships it only in the
# prometheus package, whose installation starts a Prometheus server: unless promtool is on PATH,
# the package is downloaded and unpacked into build/promtool, never installed. Without it (no
# apt-get, no network) the tests say so and rely on their own reader.
promtool = $(or $(shell command -v promtool 2>/dev/null),$(wildcard $(abspath $(PROMTOOL_DIR))/usr/bin/promtool))
$(PROMTOOL_OK):
	$(Q)mkdir -p $(@D); \
	if ! command -v promtool >/dev/null 2>&1 && [ ! -x $(@D)/usr/bin/promtool ]; then \
		echo "  DEPS  promtool (Debian's prometheus package, unpacked into $(@D), not installed)"; \
		get() { (cd $(@D) && apt-get download prometheus >/dev/null 2>&1 && \
			dpkg -x prometheus_*.deb . && rm -f prometheus_*.deb); }; \
		get || { [ "$$(id -u)" -eq 0 ] && apt-get update -qq >/dev/null 2>&1 && get; } || \
			echo "  DEPS  no promtool: the tests check the exposition with their own reader only"; \
	fi; \
	touch $@

# $(call probe_deps,HEADERS,PACKAGES,COMMANDS): a shell step that installs PACKAGES when one of
# HEADERS does not preprocess or one of COMMANDS is not on PATH. Headers are probed through the
# compiler, which also searches the multiarch include directories.
probe_deps = missing=; \
	for h in $(1); do \
		printf '\#include <%s>\n' "$$h" | $(CC) -E -x c - >/dev/null 2>&1 || missing="$$missing $$h"; \
	done; \
	for c in $(3); do command -v "$$c" >/dev/null 2>&1 || [ -x /usr/sbin/$$c ] || missing="$$missing $$c"; done; \
	if [ -n "$$missing" ]; then \
		echo "  DEPS  missing:$$missing"; \
		$(call apt_install,$(2)); \
	fi

# Probed again when the Makefile changes: it may list a new dependency.
$(LIB_DEPS_OK): Makefile
	$(Q)$(call probe_deps,$(LIB_DEP_HEADERS),$(LIB_DEB_PACKAGES)); \
	mkdir -p $(@D) && touch $@

$(DEPS_OK): Makefile
	$(Q)$(call probe_deps,$(DEP_HEADERS),$(DEB_PACKAGES),$(DEP_COMMANDS)); \
	mkdir -p $(@D) && touch $@

# ---- compile -----------------------------------------------------------------------------------

$(OBJ)/static/%.o: src/%.c | $(LIB_DEPS_OK)
	$(Q)$(call msg,CC,$<)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LIB_CFLAGS) -c -o $@ $<

$(OBJ)/pic/%.o: src/%.c | $(LIB_DEPS_OK)
	$(Q)$(call msg,CC,$< (pic))mkdir -p $(@D) && $(CC) $(CFLAGS) $(LIB_CFLAGS) -fPIC -c -o $@ $<

$(OBJ)/test/%.o: src/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$< (test))mkdir -p $(@D) && $(CC) $(CFLAGS) $(LIB_CFLAGS) -DSHMQ_TEST -c -o $@ $<

$(OBJ)/tools/%.o: tools/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$<)mkdir -p $(@D) && $(CC) $(CFLAGS) -c -o $@ $<

$(OBJ)/test/bridge/%.o: tools/bridge/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$< (test))mkdir -p $(@D) && $(CC) $(CFLAGS) $(TEST_CFLAGS) -c -o $@ $<

$(OBJ)/tests/%.o: tests/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$<)mkdir -p $(@D) && $(CC) $(CFLAGS) $(TEST_CFLAGS) -c -o $@ $<

$(OBJ)/tsan/%.o: tests/integration/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$< (plain))mkdir -p $(@D) && $(CC) $(CFLAGS) $(TEST_CFLAGS) -DTQ_PLAIN -c -o $@ $<

$(OBJ)/tsan/%.o: tests/unit/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$< (plain))mkdir -p $(@D) && $(CC) $(CFLAGS) $(TEST_CFLAGS) -DTQ_PLAIN -c -o $@ $<

# Debian's iceoryx headers include each other from a versioned directory
IOX_CFLAGS := $(addprefix -I,$(lastword $(sort $(wildcard /usr/include/iceoryx/v*))))
$(OBJ)/bench/%.o: bench/%.c | $(DEPS_OK)
	$(Q)$(call msg,CC,$<)mkdir -p $(@D) && $(CC) $(CFLAGS) -Ibench $(IOX_CFLAGS) -c -o $@ $<

$(OBJ)/bench/%.o: bench/%.cc | $(DEPS_OK)
	$(Q)$(call msg,CXX,$<)mkdir -p $(@D) && $(CXX) $(PEER_CXXFLAGS) -Ibench -c -o $@ $<

# ---- change tracking ---------------------------------------------------------------------------

# $(STAMP)/NAME holds stamp_NAME and is rewritten only when that value changes, so whatever depends
# on it is rebuilt after a change of compiler or flags, or after a source file is removed.
stamp_flags = $(CC) $(CFLAGS) $(LDFLAGS) $(JEMALLOC_LIBS)
stamp_lib = $(LIB_OBJS)
stamp_pic = $(PIC_OBJS) $(SO_LDFLAGS) $(SONAME)
stamp_testlib = $(TESTLIB_OBJS)
stamp_tool = $(TOOL_OBJS)
stamp_bridge = $(BRIDGE_OBJS)
stamp_unit = $(UNIT_OBJS)
stamp_integration = $(INTEG_OBJS)
stamp_tsan = $(TSAN_OBJS)
stamp_fuzz = $(FUZZ_CC) $(FUZZ_CFLAGS) $(LIB_SRCS)

.PHONY: FORCE
FORCE:

$(STAMP)/%: FORCE
	@mkdir -p $(@D); v='$(subst ','\'',$(stamp_$*))'; \
	printf '%s\n' "$$v" | cmp -s - $@ || printf '%s\n' "$$v" >$@

$(ALL_OBJS): $(STAMP)/flags

# ---- link --------------------------------------------------------------------------------------

$(LIB_A): $(LIB_OBJS) $(STAMP)/lib | $(LIB_DEPS_OK)
	$(Q)$(call msg,AR,$@)rm -f $@ && $(AR) rcs $@ $(LIB_OBJS)

$(TESTLIB_A): $(TESTLIB_OBJS) $(STAMP)/testlib | $(DEPS_OK)
	$(Q)$(call msg,AR,$@)rm -f $@ && $(AR) rcs $@ $(TESTLIB_OBJS)

$(LIB_SO): $(PIC_OBJS) $(STAMP)/pic $(STAMP)/flags | $(LIB_DEPS_OK)
	$(Q)$(call msg,LD,$@)$(CC) $(CFLAGS) $(LDFLAGS) -shared $(SO_LDFLAGS) -Wl,-soname,$(SONAME) -o $@ \
		$(PIC_OBJS) $(LIB_LIBS)

# the SONAME link, so that a program linked with -Lbuild -lshmq runs from the tree (with an rpath or
# LD_LIBRARY_PATH naming build/), as it would against an installed copy
$(BUILD)/$(SONAME): $(LIB_SO)
	$(Q)ln -sf $(notdir $(LIB_SO)) $@

$(TOOL): $(TOOL_OBJS) $(LIB_A) $(STAMP)/tool $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(TOOL_OBJS) $(LIB_A) $(TOOL_LIBS)

$(BRIDGE): $(BRIDGE_OBJS) $(LIB_A) $(STAMP)/bridge $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(BRIDGE_OBJS) $(LIB_A) $(BRIDGE_LIBS)

$(BRIDGE_TEST): $(BRIDGE_TEST_OBJS) $(TESTLIB_A) $(STAMP)/bridge $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(BRIDGE_TEST_OBJS) $(TESTLIB_A) \
		$(BRIDGE_LIBS)

$(UNIT_BIN): $(UNIT_OBJS) $(TESTLIB_A) $(STAMP)/unit $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(UNIT_OBJS) $(TESTLIB_A) $(TEST_LIBS)

$(INTEG_BIN): $(INTEG_OBJS) $(TESTLIB_A) $(STAMP)/integration $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(INTEG_OBJS) $(TESTLIB_A) $(TEST_LIBS)

$(BUILD)/tests/tsan-%: $(OBJ)/tsan/test_%.o $(TESTLIB_A) $(STAMP)/tsan $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(TESTLIB_A) $(TSAN_LIBS)

$(DEMO_WORKER): $(OBJ)/tools/demo/worker.o $(LIB_A) $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_A) $(TOOL_LIBS)

$(SUITE_BINS): $(BUILD)/bench/%: $(OBJ)/bench/%.o $(PEER_OBJS) $(LIB_A) $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(PEER_OBJS) $(LIB_A) \
		$(BENCH_LIBS) $(PEER_LIBS)

# the standalone benches get the suites' statistics and process helpers (no peers, no servers);
# hotpath also holds shmq against the floor and the reference rings of bench/peers/
STANDALONE_LIB_OBJS := $(OBJ)/bench/lib/stats.o $(OBJ)/bench/lib/proc.o
HOTPATH_OBJS := $(OBJ)/bench/peers/floor.o $(OBJ)/bench/peers/spsc.o $(OBJ)/bench/peers/leased.o \
	$(OBJ)/bench/lib/keyed.o
$(BUILD)/bench/hotpath: EXTRA_BENCH_OBJS = $(HOTPATH_OBJS)
$(BUILD)/bench/hotpath: $(HOTPATH_OBJS)
# the bridge bench runs its nats-server and bridges as daemons
$(BUILD)/bench/bridge: EXTRA_BENCH_OBJS = $(OBJ)/bench/lib/daemon.o
$(BUILD)/bench/bridge: $(OBJ)/bench/lib/daemon.o
$(BUILD)/bench/%: $(OBJ)/bench/%.o $(STANDALONE_LIB_OBJS) $(LIB_A) $(STAMP)/flags | $(DEPS_OK)
	$(Q)$(call msg,LD,$@)mkdir -p $(@D) && $(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(STANDALONE_LIB_OBJS) \
		$(EXTRA_BENCH_OBJS) $(LIB_A) \
		$(BENCH_LIBS)

-include $(ALL_OBJS:.o=.d)
