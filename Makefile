# Two commands on a fresh clone: `make demo` (the main job on the bundled example) and `make test`.
VENV ?= .venv
PYTHON ?= python3
STAMP := $(VENV)/.installed-stamp

.PHONY: demo test install sshd chromium bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -e '.[dev,ray]'
	# tflite-support pins protobuf<4, which TensorFlow 2.21 cannot use; its metadata writers (the android
	# export) need none of its dependencies, so it is installed without them.
	$(VENV)/bin/pip install -q --no-deps 'tflite-support==0.4.4'
	touch $(STAMP)

install: $(STAMP)

# The SSH tests run a real sshd on loopback; install it from Debian when missing and we are root.
# tflite-support's native metadata module (the android export) links libusb-1.0, which slim images lack.
# The emulated Raspberry Pi board (tools/aarch64_userland.py) needs debootstrap and qemu-user-static.
sshd:
	@missing=""; [ -x /usr/sbin/sshd ] || missing="openssh-server openssh-client"; \
	  ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0 ' || missing="$$missing libusb-1.0-0"; \
	  [ -x /usr/sbin/debootstrap ] || missing="$$missing debootstrap"; \
	  command -v qemu-aarch64-static >/dev/null || missing="$$missing qemu-user-static"; \
	  if [ -n "$$missing" ]; then \
	    if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	      echo "installing from Debian: $$missing (SSH tests, android export, emulated Pi)"; \
	      apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	    else echo "missing $$missing and we are not root: SSH tests / the android export test will be skipped"; fi; \
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

# Lint and types first (config in pyproject.toml; zero findings), then the suite.
test: $(STAMP) sshd chromium
	$(VENV)/bin/ruff check edgekit tools tests
	$(VENV)/bin/mypy
	$(VENV)/bin/python -m pytest -q

bench: $(STAMP)
	$(VENV)/bin/python tools/bench_convert.py

clean:
	rm -rf demo-out build dist *.egg-info .pytest_cache
