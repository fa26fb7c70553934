# Stratum: build, install, test, demo.
#
#   make demo        boot a freshly composed Debian image in QEMU and show what Stratum did
#   make test        every test: unit, host integration, VM boots
#   make install DESTDIR=ROOT   install Stratum into an OS root (as image builders do)
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
export STRATUM_CACHE ?= $(HOME)/.cache/stratum

# Build and test dependencies (Debian 12 package names).
DEB_PACKAGES := libostree-dev ostree pkg-config qemu-system-x86 ovmf debootstrap fdisk bubblewrap \
	mtools dosfstools grub-efi-amd64-bin e2fsprogs cpio zstd kmod gnupg systemd \
	dpkg-dev apt-utils

.PHONY: all deps build build-failpoints install test test-unit test-vm demo bench clean

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
	# Machine-specific SSH host keys, made before sshd starts (the unit does nothing
	# without openssh-server).
	for w in ssh.service.wants sshd.service.wants; do \
		install -d $(DESTDIR)$(PREFIX)/lib/systemd/system/$$w; \
		ln -sf ../stratum-ssh-host-keys.service $(DESTDIR)$(PREFIX)/lib/systemd/system/$$w/; done
	for f in $$(ls dracut 2>/dev/null); do \
		install -D -m 0755 dracut/$$f $(DESTDIR)$(PREFIX)/lib/dracut/modules.d/50stratum/$$f; done

test-unit: build build-failpoints
	$(CARGO) test --release --locked -p stratum-prepare-root -p stratum -p stratum-initramfs

test-vm: build build-failpoints
	$(CARGO) test --release --locked -p stratum-vmtests -- --test-threads=1

test: test-unit test-vm

demo: build
	$(CARGO) run --release --locked -p stratum-vmtests --bin stratum-demo

# Benchmarks (not tests): ratios against the real peers, measured in one run.
bench: build
	$(MAKE) deps EXTRA_PACKAGES="$(BENCH_PACKAGES)"
	$(CARGO) bench --locked -p stratum --bench deploy
	$(CARGO) bench --locked -p stratum-initramfs --bench generic
	$(CARGO) run --release --locked -p stratum-vmtests --bin stratum-boot-bench -- --runs 3

clean:
	$(CARGO) clean
