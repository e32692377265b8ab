# The commands a newcomer runs (README): `make test` installs and runs every test.
PYTHON ?= python3

.PHONY: deps test unit fuzz ktls-smoke bench demo

deps:
	bash scripts/install-deps.sh

# Every test: the suite on this host, a bounded fuzz run of the request path's C
# (ktlswsgi._native), then the kTLS suite in a VM with a kTLS kernel.
test: deps
	$(PYTHON) -m pytest -q
	$(MAKE) fuzz
	$(MAKE) ktls-smoke

# ktlswsgi._native against its references (the parser against h11, the rest
# against their Python paths), coverage-guided, under AddressSanitizer
# (scripts/fuzz.sh; FUZZ_SECONDS, default 60).
fuzz:
	PYTHON=$(PYTHON) bash scripts/fuzz.sh $(FUZZ_SECONDS)

unit: deps
	$(PYTHON) -m pytest -q

ktls-smoke:
	@# The kTLS suite in a QEMU VM with Debian's kTLS kernel (deploy/ktls-vm): first
	@# the normal boot (tests/ktls, and tests/tls which asserts the VM's answers too),
	@# then a boot with tls.ko blacklisted for tests/ktls/test_fallback.py. Both always
	@# run; the target fails if either does. The two VM timeouts add up to 12 min.
	@start=$$(date +%s); \
	bash deploy/ktls-vm/run.sh --timeout 560 -- \
	    env KTLSWSGI_IN_VM=1 KTLSWSGI_EXPECT_KTLS=available \
	    $(PYTHON) -m pytest -p no:cacheprovider -q -rfEs \
	    tests/ktls --ignore=tests/ktls/test_fallback.py tests/tls; ktls=$$?; \
	echo "ktls-smoke: kTLS boot exit $$ktls after $$(( $$(date +%s) - start ))s"; \
	bash deploy/ktls-vm/run.sh --blacklist-tls --timeout 160 -- \
	    env KTLSWSGI_IN_VM=1 KTLSWSGI_EXPECT_KTLS=unavailable \
	    $(PYTHON) -m pytest -p no:cacheprovider -q -rfEs tests/ktls/test_fallback.py; \
	fallback=$$?; \
	echo "ktls-smoke: kTLS boot exit $$ktls, fallback boot (tls blacklisted) exit $$fallback," \
	    "$$(( $$(date +%s) - start ))s in all"; \
	[ $$ktls = 0 ] && [ $$fallback = 0 ]

demo: deps
	ktlswsgi ktlswsgi.demo:app

# Installs the peers (bench/install.sh), then runs them all side by side.
bench:
	bash bench/install.sh
	$(PYTHON) -m bench
