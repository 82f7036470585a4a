#!/usr/bin/env bash
# Installs what a fresh Debian machine with only Rust lacks to build polyattn: m4, make
# and a C compiler, which the bundled GMP/MPFR build of rug (the MPFR reference of the
# tools crate and the tests) needs. The engine crate alone needs none of them.
# Idempotent; quiet when nothing is missing.
set -euo pipefail
missing=()
command -v m4 >/dev/null 2>&1 || missing+=(m4)
command -v make >/dev/null 2>&1 || missing+=(make)
command -v cc >/dev/null 2>&1 || missing+=(gcc)
if [ ${#missing[@]} -gt 0 ]; then
    echo "setup: installing ${missing[*]} (needed to build GMP and MPFR for the MPFR reference)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq "${missing[@]}" >/dev/null
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo apt-get install -y -qq "${missing[@]}" >/dev/null
    else
        echo "setup: ${missing[*]} missing and this user cannot install them; install them and retry" >&2
        exit 1
    fi
fi
