#!/usr/bin/env bash
# Installs what tests/example/test_slurm.py needs when it is missing: Debian's Slurm (slurmctld,
# slurmd, the client commands; slurm-wlm without its recommends) and munge. The test configures
# and starts its own one-node Slurm on localhost in a temporary folder; nothing is configured or
# started here. Idempotent and quiet (about 30 s when installing); never fails: it prints one line
# saying whether Slurm is available, and where it is not the test skips itself with one line.
set -uo pipefail
PATH="$PATH:/usr/sbin:/sbin"
programs=(munged mungekey slurmctld slurmd sbatch scontrol scancel)
packages=(slurmctld slurmd slurm-client munge)

installed() {
  local p
  for p in "${programs[@]}"; do command -v "$p" >/dev/null || return 1; done
}

if ! installed; then
  if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "slurm: unavailable (not installed; installing needs root and apt-get): the slurm test will be skipped"
    exit 0
  fi
  log=$(mktemp)
  export DEBIAN_FRONTEND=noninteractive
  install=(apt-get install -y -qq --no-install-recommends "${packages[@]}")
  # Without package lists (a fresh image) the first try fails: update them and try again.
  if ! "${install[@]}" >"$log" 2>&1 && ! { apt-get update -qq && "${install[@]}"; } >>"$log" 2>&1; then
    echo "slurm: unavailable (apt-get install ${packages[*]} failed: $(tail -n 1 "$log")): the slurm test will be skipped"
    rm -f "$log"
    exit 0
  fi
  rm -f "$log"
fi
if installed && [ "$(id -u)" != 0 ]; then
  echo "slurm: installed, but starting slurmd needs root: the slurm test will be skipped"
elif installed; then
  echo "slurm: $(slurmd -V) and munge $(munged -V 2>&1 | awk '{print $1}' | sed 's/munge-//') installed"
else
  echo "slurm: unavailable (installed, but some of ${programs[*]} are missing): the slurm test will be skipped"
fi
