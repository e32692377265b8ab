# The commands a newcomer runs (README): `make test` installs and runs every test.
PYTHON ?= python3

.PHONY: deps test unit ktls-smoke bench demo

deps:
	bash scripts/install-deps.sh

# Every test: the suite on this host, then the kTLS suite in a VM with a kTLS kernel.
test: deps
	$(PYTHON) -m pytest -q
	$(MAKE) ktls-smoke

unit: deps
	$(PYTHON) -m pytest -q

ktls-smoke:
	bash deploy/ktls-vm/run.sh -- $(PYTHON) -m pytest -p no:cacheprovider -q tests/ktls

demo: deps
	ktlswsgi ktlswsgi.demo:app

bench:
	$(PYTHON) -m bench
