#!/bin/sh
# Container entrypoint: load CANN's environment when the image has it, then run `vms` (default: `vms serve`).
# As PID 1 (no --init) it runs under tini, so that SIGTERM reaches vms serve and orphans are reaped.
set -e
for env_script in /usr/local/Ascend/ascend-toolkit/set_env.sh /usr/local/Ascend/nnal/atb/set_env.sh; do
    if [ -f "$env_script" ]; then
        # shellcheck disable=SC1090
        . "$env_script"
    fi
done
if [ "$$" = 1 ] && command -v tini > /dev/null 2>&1; then
    exec tini -- vms "$@"
fi
exec vms "$@"
