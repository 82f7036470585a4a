#!/usr/bin/env bash
# Installs what a fresh Debian machine lacks to build polyattn: m4, which the bundled
# GMP build of rug (the MPFR reference) needs. Idempotent; quiet when nothing is missing.
set -euo pipefail
if ! command -v m4 >/dev/null 2>&1; then
    echo "setup: installing m4 (needed to build GMP for the MPFR reference)" >&2
    if [ "$(id -u)" -eq 0 ]; then
        apt-get update -qq && apt-get install -y -qq m4 >/dev/null
    elif command -v sudo >/dev/null 2>&1; then
        sudo apt-get update -qq && sudo apt-get install -y -qq m4 >/dev/null
    else
        echo "setup: m4 is missing and this user cannot install it; install m4 and retry" >&2
        exit 1
    fi
fi
