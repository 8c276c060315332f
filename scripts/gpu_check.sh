#!/usr/bin/env bash
# The GPU check on an offline GPU server (README, "Offline GPU server"): the wheels of wheelhouse/ (made with
# `make wheelhouse PY=3.12` where there is network) into a temporary site folder with pip --no-index, scrapbench
# from this working tree beside them, then scripts/gpu_check.py with that folder on PYTHONPATH.
#     scripts/gpu_check.sh [gpu_check.py's options: --budget-s 480 --device cuda:1 ...]
#     PYTHON=/path/to/python3 KEEP_SITE=1 scripts/gpu_check.sh      # another Python; keep the site folder
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -f wheelhouse/MANIFEST.json ]; then
    echo "gpu_check.sh: no wheelhouse/MANIFEST.json here: run 'make wheelhouse PY=3.12' on a machine with network and bring wheelhouse/ along" >&2
    exit 2
fi
SITE=$(mktemp -d "${TMPDIR:-/tmp}/scrapbench-site.XXXXXX")
[ -n "${KEEP_SITE:-}" ] || trap 'rm -rf "$SITE"' EXIT
echo "installing wheelhouse/ and scrapbench into $SITE (pip --no-index) ..."
started=$SECONDS
"$PYTHON" scripts/wheelhouse.py install "$SITE" || echo "gpu_check.sh: the requirements above are not met; the check goes on" >&2
echo "installed in $((SECONDS - started)) s"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
status=0
"$PYTHON" scripts/gpu_check.py "$@" || status=$?
exit $status
