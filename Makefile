# The two front-door commands (see README):
#   make demo   install, then run the embedded demo pipeline (snakemake --cores all, config/config.yaml)
#   make test   install, then run the test suite (what .ci/run calls)
VENV ?= .venv
EXTRAS ?= cpu
STAMP := $(VENV)/.rlmec-installed-$(EXTRAS)

.PHONY: demo test install lint clean-results

demo: $(STAMP)
	$(VENV)/bin/snakemake --cores all --configfile config/config.yaml

test: $(STAMP)
	$(VENV)/bin/python -m pytest

lint: $(STAMP)
	$(VENV)/bin/snakemake --lint --configfile config/config.yaml

install: $(STAMP)

$(STAMP): pyproject.toml scripts/install.sh
	VENV=$(VENV) EXTRAS=$(EXTRAS) scripts/install.sh
	touch $@

clean-results:
	rm -rf results .snakemake
