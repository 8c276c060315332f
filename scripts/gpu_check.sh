#!/usr/bin/env bash
# The GPU check on an offline GPU server (README, "GPU check and offline GPU servers"): the wheels of
# wheelhouse/ (made with `make wheelhouse PY=3.12` where there is network) into a temporary site folder with
# pip --no-index, scrapbench from this working tree beside them, then scripts/gpu_check.py with that folder on
# PYTHONPATH.
#     scripts/gpu_check.sh [gpu_check.py's options: --budget-s 480 --device cuda:1 ...]
#     PYTHON=/path/to/python3 WHEELHOUSE=/path/to/wheelhouse KEEP_SITE=1 scripts/gpu_check.sh --quick --device cpu
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WHEELHOUSE=${WHEELHOUSE:-wheelhouse}
if [ ! -f "$WHEELHOUSE/MANIFEST.json" ]; then
    echo "gpu_check.sh: no $WHEELHOUSE/MANIFEST.json: run 'make wheelhouse PY=3.12' on a machine with network and bring wheelhouse/ along" >&2
    exit 2
fi
SITE=$(mktemp -d "${TMPDIR:-/tmp}/scrapbench-site.XXXXXX")
[ -n "${KEEP_SITE:-}" ] || trap 'rm -rf "$SITE"' EXIT
echo "installing $WHEELHOUSE and scrapbench into $SITE (pip --no-index) ..."
started=$SECONDS
installed=0
"$PYTHON" scripts/wheelhouse.py install --wheelhouse "$WHEELHOUSE" "$SITE" || installed=$?
if [ "$installed" = 4 ]; then  # installed, but requirements are missing (listed above): the check says what fails
    echo "gpu_check.sh: the requirements above are not met; the check goes on" >&2
elif [ "$installed" != 0 ]; then
    exit "$installed"
fi
echo "installed in $((SECONDS - started)) s"
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 MPLBACKEND=Agg PYTHONUNBUFFERED=1
status=0
"$PYTHON" scripts/gpu_check.py "$@" || status=$?
exit $status
