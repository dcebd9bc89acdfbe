# Quickstart on a fresh Debian machine, as root:  make demo   |   make test
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Debian packages the tests drive for real: keepalived nodes, decoders to check ours against,
# Prometheus/Alertmanager, a headless browser; capsh and systemd-analyze for the deploy checks;
# FRR (vrrpd) and ucarp: other VRRP and CARP speakers to test against.
APT_PACKAGES := keepalived tshark tcpdump iproute2 nftables libpcap0.8 curl util-linux \
	prometheus prometheus-alertmanager chromium libcap2-bin systemd openssl procps frr ucarp

.PHONY: test lint unit system-deps venv demo bench clean

test: system-deps venv lint
	$(BIN)/pytest

unit: venv
	$(BIN)/pytest -m "not lab"

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

system-deps:
	@missing=$$(for p in $(APT_PACKAGES); do \
		dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q '^install ok installed' || echo $$p; done); \
	if [ -n "$$missing" ]; then \
		echo "installing:" $$missing; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	fi

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

bench: venv
	$(BIN)/python -m bench.decode

clean:
	rm -rf $(VENV) build dist *.egg-info .mypy_cache .ruff_cache .pytest_cache .hypothesis

# A 3-node keepalived lab (the double-master pair plus an IPv6 VRID), an exporter watching each
# namespace (the nodes' asking each other), a ka-notify per node mailing a local SMTP server,
# and Prometheus with the shipped rules; prints the URLs, the mails as they arrive, and the
# commands to cause a failover or a split-brain. Ctrl-C removes everything.
demo: system-deps venv
	$(BIN)/python -m lab demo
