# Stratum: build, install, test, demo.
#
#   make demo        boot a freshly composed Debian image in QEMU and show what Stratum did
#   make test        every test: unit, host integration, VM boots
#   make soak        power cuts at random moments of every boot-set operation, in QEMU
#   make install DESTDIR=ROOT   install Stratum into an OS root (as image builders do)
#   make deb         the Debian package, target/deb/stratum_<version>_amd64.deb
#   make fuzz        every parser of outside input under libFuzzer, 10^6 inputs each
#
# The targets install the Debian packages they need (apt-get, only when missing).

SHELL := /bin/bash
CARGO ?= cargo
PREFIX ?= /usr
DESTDIR ?=
TARGET := x86_64-unknown-linux-gnu
# Cargo's target directory: $CARGO_TARGET_DIR when set, as cargo itself does.
TARGET_DIR := $(or $(CARGO_TARGET_DIR),target)
RELEASE := $(TARGET_DIR)/release
STATIC := $(TARGET_DIR)/$(TARGET)/release
# Man pages and shell completions, laid out as $(PREFIX)/share.
SHARE := $(TARGET_DIR)/share
export STRATUM_CACHE ?= $(HOME)/.cache/stratum

# Build and test dependencies (Debian 12 package names).
DEB_PACKAGES := libostree-dev ostree pkg-config qemu-system-x86 ovmf debootstrap fdisk bubblewrap \
	mtools dosfstools grub-efi-amd64-bin e2fsprogs cpio zstd kmod gnupg systemd qemu-utils \
	dpkg-dev apt-utils groff-base mmdebstrap libcurl4-gnutls-dev systemd-boot-efi sbsigntool

.PHONY: all deps build man build-failpoints install deb test test-unit test-deb test-vm soak demo \
	bench clean fuzz fuzz-build fuzz-smoke image-roots

all: build

# dracut and Debian's ostree-boot are only the peers the benchmarks measure against.
BENCH_PACKAGES := dracut-core

deps:
	@missing=$$(for p in $(DEB_PACKAGES) $(EXTRA_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "Installing Debian packages:" $$missing; \
		apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	fi

build: deps
	$(CARGO) build --release --locked -p stratum -p stratum-initramfs
	RUSTFLAGS='-C target-feature=+crt-static' $(CARGO) build --release --locked \
		-p stratum-prepare-root --target $(TARGET)
	$(MAKE) man

# Man pages (section 8: every command and subcommand; section 5: configuration files) and
# bash, zsh and fish completions, generated from the command-line definitions by
# stratum-docgen (docgen/), with the written text of docgen/man/. Needs no root and no sysroot.
man:
	rm -rf $(SHARE)
	$(CARGO) run --release --locked -q -p stratum-docgen -- $(SHARE)

# The crash tests' stratum, which honours FAILPOINTS=name=panic: the same program built with
# the failpoints feature as the example target stratum-failpoints, so that it lands in
# $(RELEASE)/examples/ and never replaces $(RELEASE)/stratum, which `make install` ships and
# which ignores failpoints. Only the stratum crate is built again; its dependencies are shared.
build-failpoints: deps
	$(CARGO) build --release --locked -p stratum --features failpoints --example stratum-failpoints

# Installs into DESTDIR at FHS paths. Does not build: run `make build` first (the
# demo and tests do), so that installing into a root needs no compiler.
install:
	install -D -m 0755 $(RELEASE)/stratum $(DESTDIR)$(PREFIX)/bin/stratum
	install -D -m 0755 $(RELEASE)/stratum-initramfs $(DESTDIR)$(PREFIX)/bin/stratum-initramfs
	install -D -m 0755 $(STATIC)/stratum-prepare-root $(DESTDIR)$(PREFIX)/lib/stratum/stratum-prepare-root
	install -D -m 0644 grub/stub.cfg.in $(DESTDIR)$(PREFIX)/lib/stratum/grub/stub.cfg.in
	install -D -m 0755 grub/10_stratum $(DESTDIR)/etc/grub.d/10_stratum
	for f in $$(ls systemd 2>/dev/null); do \
		install -D -m 0644 systemd/$$f $(DESTDIR)$(PREFIX)/lib/systemd/system/$$f; done
	# Enabled in /usr, as an image-based OS ships its essential units.
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system/multi-user.target.wants
	for u in stratum-finalize-staged.path stratum-boot-complete.service; do \
		ln -sf ../$$u $(DESTDIR)$(PREFIX)/lib/systemd/system/multi-user.target.wants/$$u; done
	# The automatic-update timer runs the policy of stratum.toml ("none" unless set).
	install -d $(DESTDIR)$(PREFIX)/lib/systemd/system/timers.target.wants
	ln -sf ../stratum-automatic-update.timer \
		$(DESTDIR)$(PREFIX)/lib/systemd/system/timers.target.wants/stratum-automatic-update.timer
	# Machine-specific SSH host keys, made before sshd starts (the unit does nothing
	# without openssh-server).
	for w in ssh.service.wants sshd.service.wants; do \
		install -d $(DESTDIR)$(PREFIX)/lib/systemd/system/$$w; \
		ln -sf ../stratum-ssh-host-keys.service $(DESTDIR)$(PREFIX)/lib/systemd/system/$$w/; done
	# dracut runs the module's scripts; its unit file must not be executable (systemd warns).
	for f in $$(ls dracut 2>/dev/null); do \
		case $$f in *.sh) mode=0755;; *) mode=0644;; esac; \
		install -D -m $$mode dracut/$$f $(DESTDIR)$(PREFIX)/lib/dracut/modules.d/50stratum/$$f; done
	# man/man5, man/man8, bash-completion/completions, zsh/vendor-completions,
	# fish/vendor_completions.d: the paths each shell's package looks in.
	test -d $(SHARE)/man || { echo "$(SHARE) is missing: run make build (or make man)" >&2; exit 1; }
	cd $(SHARE) && for f in $$(find . -type f | sort); do \
		install -D -m 0644 $$f $(DESTDIR)$(PREFIX)/share/$${f#./}; done

# The Debian package (debian/): what `make install` installs, plus /usr/share/doc/stratum
# (copyright, changelog, docs/), man pages compressed as Debian policy wants. Built with
# dpkg-buildpackage from the programs `make build` made. Its version is the workspace's
# (Cargo.toml), which the top entry of debian/changelog must name.
# In the checkout's target/ whatever CARGO_TARGET_DIR is: the manifests of images/ install
# Stratum from it by a path relative to themselves.
DEB_DIR := $(abspath target/deb)
DEB_BUILD_PACKAGES := build-essential debhelper
VERSION := $(shell sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' Cargo.toml)
DEB := $(DEB_DIR)/stratum_$(VERSION)_amd64.deb

deb: build
	$(MAKE) deps EXTRA_PACKAGES="$(DEB_BUILD_PACKAGES)"
	@changelog=$$(dpkg-parsechangelog -SVersion); [ "$$changelog" = "$(VERSION)" ] || { \
		echo "debian/changelog is at $$changelog, Cargo.toml at $(VERSION):" \
			"add an entry (dch -v $(VERSION))" >&2; exit 1; }
	# Only this build's files. debhelper's state from an earlier build goes too: what
	# `debian/rules clean` removes, without its sweep of the whole tree for editors' backups.
	rm -rf $(DEB_DIR) debian/.debhelper debian/stratum debian/files debian/*.substvars \
		debian/*.debhelper.log debian/debhelper-build-stamp
	mkdir -p $(DEB_DIR)
	STRATUM_DEB_DIR=$(DEB_DIR) dpkg-buildpackage --build=binary --no-sign --no-pre-clean \
		--buildinfo-option=-u$(DEB_DIR) --buildinfo-file=$(DEB_DIR)/stratum_$(VERSION)_amd64.buildinfo \
		--changes-option=-u$(DEB_DIR) --changes-file=$(DEB_DIR)/stratum_$(VERSION)_amd64.changes
	# A flat APT repository of the package ("deb [trusted=yes] file://$(DEB_DIR) ./"): the
	# manifests of images/ install Stratum from it like any other package.
	cd $(DEB_DIR) && dpkg-scanpackages --multiversion . /dev/null > Packages 2>/dev/null && \
		apt-ftparchive release . > Release
	@echo "built $(DEB)"

# The package's contents against `make install`, its control fields, apt and lintian.
test-deb: deb
	$(MAKE) deps EXTRA_PACKAGES=lintian
	MAKE="$(MAKE)" tests/deb.sh $(DEB)

# The roots of images/ that the tests boot or layer onto (images/build-root.sh, cached under
# $(STRATUM_CACHE)); made before the tests start so that no two tests wait for one build.
IMAGE_ROOTS := vm vm-dracut vm-trixie
image-roots: build deb
	for name in $(IMAGE_ROOTS); do \
		images/build-root.sh $(RELEASE)/stratum $(STRATUM_CACHE) $$name >/dev/null || exit; done

# Every test binary of the workspace comes from one `cargo test --no-run` (tests/run.py),
# whose features are the workspace's: no crate is built twice for the tests. The driver runs
# each host test in its own process and each VM scenario binary whole (its trials share the
# images it builds), longest first by earlier runs' times, on TEST_JOBS workers; the VM
# guests get one vCPU each (the machines that run them have two cores).
TEST_JOBS ?= 2
RUN_TESTS := STRATUM_QEMU_SMP=1 tests/run.py tests --jobs $(TEST_JOBS) --whole stratum-vmtests
TEST_CARGO_ARGS := --release --locked --workspace

# Unit and host integration tests, the fuzz smoke pass and the package's checks.
test-unit: build build-failpoints test-deb
	$(RUN_TESTS) --skip-whole -- $(TEST_CARGO_ARGS)

# The VM scenarios alone. The guests' roots are built from images/*.toml, which install
# Stratum's package (make deb).
test-vm: build build-failpoints deb image-roots
	$(RUN_TESTS) --only-whole -- $(TEST_CARGO_ARGS)

# Everything, in timed phases; ends with the table of phases and the slowest tests, saved as
# target/test-times.txt, whether the tests passed or not.
test:
	@tests/run.py begin
	@rc=0; \
	tests/run.py phase "debian packages" -- $(MAKE) -s deps && \
	tests/run.py phase build -- $(MAKE) -s build build-failpoints && \
	tests/run.py phase package -- $(MAKE) -s test-deb && \
	tests/run.py phase "image roots" -- $(MAKE) -s image-roots && \
	$(RUN_TESTS) -- $(TEST_CARGO_ARGS) || rc=$$?; \
	tests/run.py report; exit $$rc

# Power-cut soak (not part of `make test`): SOAK_CUTS cuts per operation kind (default 9),
# SOAK_SEED=N replays a run, SOAK_KINDS=upgrade,kargs,... picks kinds, SOAK_BOOTLOADER=
# systemd-boot cuts a systemd-boot disk. The report is printed
# and saved as target/soak-report.txt.
soak: build deb
	$(CARGO) run --release --locked -p stratum-vmtests --bin stratum-soak

demo: build deb
	$(CARGO) run --release --locked -p stratum-vmtests --bin stratum-demo

# Benchmarks (not tests): ratios against the real peers, measured in one run. The layering
# benchmark's table is also saved as target/bench-layering.txt; BENCH_RUNS=N sets its runs.
bench: build build-failpoints deb
	$(MAKE) deps EXTRA_PACKAGES="$(BENCH_PACKAGES)"
	$(CARGO) bench --locked -p stratum --bench deploy
	$(CARGO) bench --locked -p stratum --bench layering
	$(CARGO) bench --locked -p stratum --bench compose
	$(CARGO) bench --locked -p stratum --bench delivery
	$(CARGO) bench --locked -p stratum-initramfs --bench generic
	$(CARGO) run --release --locked -p stratum-vmtests --bin stratum-boot-bench -- --runs 3
	$(CARGO) run --release --locked -p stratum-vmtests --bin stratum-loader-bench -- --runs 3

# Fuzzing (docs/security.md, "Fuzzing"). libFuzzer, built from source by libfuzzer-sys (a C++
# compiler), drives the targets of fuzz/; rustc's sanitizer-coverage instrumentation (stable
# -C flags) guides it, with comparisons traced, debug assertions and overflow checks on. The
# instrumented build has its own target directory, and --target keeps build scripts out of it.
FUZZ_PACKAGES := g++ python3 util-linux xz-utils zstd
FUZZ_TARGET_DIR ?= target/fuzz
FUZZ_OUT ?= $(FUZZ_TARGET_DIR)/runs
# Targets to run (default: all); FUZZ_RUNS, FUZZ_TIMEOUT, FUZZ_RSS_MB, FUZZ_AS_MB: see fuzz/run.sh.
FUZZ_TARGETS ?=
FUZZ_RUSTFLAGS := -Cpasses=sancov-module -Cllvm-args=-sanitizer-coverage-level=4 \
	-Cllvm-args=-sanitizer-coverage-inline-8bit-counters -Cllvm-args=-sanitizer-coverage-pc-table \
	-Cllvm-args=-sanitizer-coverage-trace-compares --cfg fuzzing -Cdebug-assertions -Coverflow-checks

fuzz-build: deps
	$(MAKE) deps EXTRA_PACKAGES="$(FUZZ_PACKAGES)"
	RUSTFLAGS='$(FUZZ_RUSTFLAGS)' CARGO_TARGET_DIR=$(FUZZ_TARGET_DIR) $(CARGO) build --release \
		--locked -p stratum-fuzz --features libfuzzer --bin stratum-fuzz --target $(TARGET)

fuzz: fuzz-build
	fuzz/run.sh $(FUZZ_TARGET_DIR)/$(TARGET)/release/stratum-fuzz $(FUZZ_OUT) $(FUZZ_TARGETS)

# A few seconds per target, from a fixed random seed: part of `make test` (its test binary is
# among the workspace's).
fuzz-smoke:
	$(CARGO) test --release --locked -p stratum-fuzz

clean:
	$(CARGO) clean
