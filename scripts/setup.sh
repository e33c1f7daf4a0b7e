#!/usr/bin/env bash
# Installs what a fresh machine lacks to build and test cloudlake. Idempotent and quick when
# everything is present (no apt-get update unless a package is missing).
#
# Needs: Rust >= 1.95 (rustup, preinstalled here), a C toolchain and cmake (rdkafka builds
# librdkafka from source), Java 17 and Maven (Cassandra and Kafka come as jars from Maven Central).
set -euo pipefail

need_apt=()
# `setup.sh --test` adds what only the tests and benchmarks need: chromium (the dashboard test
# drives it headless), wrk (scripts/load-test.sh) and python3-venv (scripts/s3.sh installs its
# S3-compatible test server, moto, from PyPI into a virtualenv).
packages=(build-essential cmake pkg-config zlib1g-dev libcurl4-openssl-dev python3)
[ "${1:-}" = "--test" ] && packages+=(chromium wrk python3-venv)
for pkg in "${packages[@]}"; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need_apt+=("$pkg")
done
# Cassandra and Kafka run from Maven Central jars on Java 17.
java_major() { "$1" -version 2>&1 | sed -nE 's/.*version "([0-9]+).*/\1/p' | head -n1; }
if ! { command -v java >/dev/null 2>&1 && [ "$(java_major java)" = 17 ]; } && ! ls /usr/lib/jvm/java-17-openjdk-*/bin/java >/dev/null 2>&1; then
  need_apt+=(openjdk-17-jre-headless)
fi
command -v mvn >/dev/null 2>&1 || need_apt+=(maven)
if [ ${#need_apt[@]} -gt 0 ]; then
  echo "setup: installing ${need_apt[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_apt[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "setup: cargo not found; install Rust 1.95 or newer (https://rustup.rs) and re-run" >&2
  exit 1
fi
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
if [ "$rustc_minor" -lt 95 ]; then
  echo "setup: rustc $(rustc --version) is too old; cloudlake needs 1.95 or newer (deltalake 1.1's MSRV)" >&2
  exit 1
fi
for c in rustfmt clippy; do
  if ! cargo "$c" --version >/dev/null 2>&1; then
    rustup component add "$c" >/dev/null 2>&1 || echo "setup: warning: cargo $c is missing" >&2
  fi
done
