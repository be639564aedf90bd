#!/usr/bin/env bash
# Make sure the Debian packages behind the given commands are installed (`make setup` / `make test`).
# Usage: scripts/system_packages.sh COMMAND=PACKAGE[,PACKAGE] ...
# As root with apt-get, missing ones are installed; otherwise this fails with the command to run.
# A missing tool is never a silent skip. NORTUNE_BROWSER_CHECK=off leaves out chromium (see README).
set -euo pipefail
missing=()
for spec in "$@"; do
    command_name=${spec%%=*}
    packages=${spec#*=}
    if [[ $command_name == chromium* && ${NORTUNE_BROWSER_CHECK:-on} == off ]]; then
        continue
    fi
    command -v "$command_name" >/dev/null || missing+=(${packages//,/ })
done
[[ ${#missing[@]} -eq 0 ]] && exit 0
if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null; then
    echo "installing Debian packages: ${missing[*]}"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
else
    echo "nortune: missing Debian packages: sudo apt-get install ${missing[*]}" >&2
    exit 2
fi
