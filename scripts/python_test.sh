#!/usr/bin/env bash
# Builds the Python package (python/, PyO3 + maturin) into a virtual environment and
# runs its tests. Usage: scripts/python_test.sh [VENV]   (default: .venv-py in the
# repository root). Exits non-zero if the venv, the build or any test fails, or if
# pytest collects no test. Set CARGO_TARGET_DIR to share a build directory.
set -euo pipefail
start=$(date +%s)
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-$root/.venv-py}
py=${PYTHON:-python3}

if [ ! -x "$venv/bin/python" ]; then
    if ! "$py" -m venv "$venv" 2>/dev/null; then
        # Debian's python3 lacks ensurepip without python3-venv.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            rm -rf "$venv"
            apt-get update -qq && apt-get install -y -qq python3-venv
            "$py" -m venv "$venv"
        else
            echo "python_test.sh: '$py -m venv' failed; install python3-venv" >&2
            exit 1
        fi
    fi
fi
vpy=$venv/bin/python
missing=()
for pkg in maturin numpy pytest ml_dtypes; do
    "$vpy" -m pip show -q "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    "$vpy" -m pip install -q "${missing[@]}"
fi

echo "== building and installing python/ (release)"
(cd "$root/python" && VIRTUAL_ENV=$venv PATH=$venv/bin:$PATH "$venv/bin/maturin" develop --release --locked -q)

echo "== pytest python/tests"
set +e
(cd "$root/python" && "$vpy" -m pytest -q tests)
rc=$?
set -e
end=$(date +%s)
echo "== scripts/python_test.sh: $((end - start)) s"
if [ $rc -eq 5 ]; then
    echo "python_test.sh: pytest collected no tests" >&2
    exit 1
fi
exit $rc
