#!/usr/bin/env bash
# The hash lock of each image and venv (requirements/*.txt) from pyproject.toml, with uv's
# universal resolution: one file holds for every Python the project supports (>=3.11), with
# markers where a release differs. dev.txt is resolved first; every other file is constrained
# by it, so CI tests exactly the versions the images ship.
#   requirements/lock.sh            rewrite the lock (make lock); existing pins are kept
#   requirements/lock.sh --upgrade  move every pin to the newest allowed release
#   requirements/lock.sh --check    fail if the lock does not match pyproject.toml (make lock-check)
set -euo pipefail
cd "$(dirname "$0")/.."
UV=${UV:-.venv/bin/uv}
case $UV in /*) ;; */*) UV=$PWD/$UV ;; esac  # a relative path, from inside the scratch copy
mode=${1-}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Relative paths in a scratch copy: the files' `# via` lines are then the same wherever it runs.
mkdir "$work/requirements"
cp pyproject.toml "$work/"
cp requirements/*.txt "$work/requirements/" 2>/dev/null || true
compile() {
    local file=$1
    shift
    (cd "$work" && "$UV" pip compile --quiet --universal --python-version 3.11 \
        --generate-hashes --custom-compile-command "make lock" \
        $([ "$mode" = --upgrade ] && echo --upgrade) pyproject.toml "$@" -o "requirements/$file")
}
compile dev.txt --extra dev                                  # make .venv/.stamp-dev, CI
compile service.txt --extra cluster -c requirements/dev.txt  # storage, ingest, api, operator image
compile compile.txt --extra compile -c requirements/dev.txt  # compile Job image
compile embedded.txt --extra embedded -c requirements/dev.txt # make run (tapedeck up)
if [ "$mode" = --check ]; then
    diff -ru requirements "$work/requirements" --exclude=lock.sh \
        || { echo "requirements/ is stale for pyproject.toml: run make lock" >&2; exit 1; }
else
    cp "$work"/requirements/*.txt requirements/
fi
