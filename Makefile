# Two commands on a fresh clone: `make demo` (the main job on the bundled example) and `make test`.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install sshd chromium bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev]'
	# tflite-support pins protobuf<4, which TensorFlow 2.21 cannot use; its metadata writers (the android
	# export) need none of its dependencies, so it is installed without them.
	$(VENV)/bin/pip install -q --no-deps 'tflite-support==0.4.4'
	touch $(STAMP)

install: $(STAMP)

# The SSH tests run a real sshd on loopback; install it from Debian when missing and we are root.
sshd:
	@if [ ! -x /usr/sbin/sshd ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing openssh-server for the SSH tests"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openssh-server openssh-client >/dev/null; \
	  else echo "openssh-server is missing and we are not root: SSH tests will be skipped"; fi; \
	fi

# The report test renders the HTML in headless Chromium (Debian's package) when it is there.
chromium:
	@if ! command -v chromium >/dev/null; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    echo "installing chromium for the report rendering test"; \
	    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) || echo "chromium install failed: that test will be skipped"; \
	  else echo "chromium is missing and we are not root: the report rendering test will be skipped"; fi; \
	fi

demo: $(STAMP)
	$(VENV)/bin/edgekit demo --out demo-out

test: $(STAMP) sshd chromium
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python tools/bench_convert.py

clean:
	rm -rf demo-out build dist *.egg-info .pytest_cache
