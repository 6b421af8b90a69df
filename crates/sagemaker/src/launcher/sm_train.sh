#!/bin/bash
# Switchyard's launcher for `contract: modeltrainer` jobs on SageMaker.
# The container starts it as ModelTrainer starts its own (`/bin/bash -c`
# from the sm_drivers channel), so any image with bash and Python runs the
# job. Every variable ModelTrainer's drivers give was computed by Switchyard
# when it submitted the job (sy-host-<host>.env); only the host's CPU and GPU
# counts are filled in here.
set -e
d=/opt/ml/input/data/sm_drivers
failure=/opt/ml/output/failure
fail() {
    mkdir -p /opt/ml/output
    [ -s "$failure" ] || printf '%s\n' "$1" >> "$failure"
    echo "switchyard: $1" >&2
    exit "${2:-1}"
}
# Any other command that fails leaves a failure file too, as the drivers' trap does.
trap 'fail "the launcher failed (exit $?) at line $LINENO of sm_train.sh"' ERR
PY="$(command -v python3 || command -v python)" || fail "no python3 or python on PATH in the training image"
host="$("$PY" -c 'import json; print(json.load(open("/opt/ml/input/config/resourceconfig.json"))["current_host"])')" \
    || fail "cannot read /opt/ml/input/config/resourceconfig.json"
[ -f "$d/sy-host-$host.env" ] || fail "the launcher has no environment for host $host"
# As the drivers count them: multiprocessing.cpu_count(), and nvidia-smi's GPUs.
SM_NUM_CPUS="$("$PY" -c 'import multiprocessing; print(multiprocessing.cpu_count())')"
SM_NUM_GPUS="$( (nvidia-smi --list-gpus 2>/dev/null || true) | grep -c '^GPU ' || true)"
mkdir -p "$d/distributed_drivers"  # SM_DISTRIBUTED_DRIVER_DIR names it
code=/opt/ml/input/data/code
if [ -f "$code/sourcedir.tar.gz" ]; then
    # The code travels as one content-addressed archive; unpacked, the channel
    # holds the files as ModelTrainer's upload of the folder would.
    tar -xzf "$code/sourcedir.tar.gz" -C "$code" || fail "cannot unpack the code"
    rm -f "$code/sourcedir.tar.gz"
fi
[ -d "$code" ] && cd "$code"
. "$d/sy-host-$host.env"
exec env "$@" "$PY" "$d/sy_run.py"
