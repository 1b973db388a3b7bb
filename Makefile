# The verbs people expect. Every target goes through the same scripts as the README.
.PHONY: up test lint fmt bench

up:
	./cairn up

test:
	scripts/test

lint:
	. scripts/env.sh && cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

bench:
	scripts/bench
