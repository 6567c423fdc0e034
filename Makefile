.PHONY: env demo test bench clean

env:
	scripts/env.sh

demo:
	scripts/demo.sh

test:
	scripts/test.sh

bench:
	scripts/env.sh && .venv/bin/python benchmarks/adev_vae_grad.py

clean:
	rm -rf .venv site .pytest_cache .ruff_cache
