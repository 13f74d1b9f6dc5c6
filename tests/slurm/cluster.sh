#!/usr/bin/env bash
# A real one-node SLURM cluster on this host, for the tests marked `slurm` and for trying a
# SLURM multirun on a workstation (`make slurm-up`, then `python -m advmed.train -m hydra/launcher=slurm ...`).
#
#   bash tests/slurm/cluster.sh up       install (Debian 12, root), configure and start munged, slurmctld, slurmd;
#                                        wait until `srun -N1 hostname` answers. Running it twice is fine.
#   bash tests/slurm/cluster.sh down     stop the three daemons (the configuration and job state stay)
#   bash tests/slurm/cluster.sh status   what is running, `sinfo` and the queue
#
# Why a script and not systemd units: the machines this runs on (CI, developers' containers) have no
# systemd, so the daemons are started directly and tracked by their pid files.
# What it writes: /etc/munge/munge.key (only when absent), /etc/slurm/slurm.conf (always, for this host),
# state under /var/spool/slurm*, logs under /var/log/slurm. Environment knobs:
#   SLURM_UP_TIMEOUT   seconds to wait for `srun hostname` (default 60)
set -euo pipefail

CONF_DIR=/etc/slurm
CONF=$CONF_DIR/slurm.conf
LOG_DIR=/var/log/slurm
CTLD_STATE=/var/spool/slurmctld
SLURMD_SPOOL=/var/spool/slurmd
RUN_DIR=/run/slurm
MUNGE_KEY=/etc/munge/munge.key
MUNGE_RUN=/run/munge
PACKAGES=(slurmctld slurmd slurm-client munge)
UP_TIMEOUT=${SLURM_UP_TIMEOUT:-60}
HOST=$(hostname -s)
CONF_CHANGED=0

say() { echo "[cluster.sh] $*"; }
die() { echo "[cluster.sh] ERROR: $*" >&2; exit 1; }

# Is the daemon whose pid file is $1 alive? (The name check skips a stale pid file whose pid was reused.)
alive() { [[ -s $1 ]] && [[ $(cat "/proc/$(cat "$1")/comm" 2>/dev/null) == "$(basename "$1" .pid)" ]]; }

install_packages() {
    local missing=()
    for package in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        say "packages present: ${PACKAGES[*]}"
        return
    fi
    [[ $(id -u) == 0 ]] || die "installing ${missing[*]} needs root (run: sudo bash $0 up)"
    command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} with this system's package manager"
    say "installing ${missing[*]} (apt-get, Debian's packages)"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >/dev/null || die "apt-get update failed: is the Debian registry reachable?"
    # policy-rc.d 101: the packages' postinst must not try to start services (no init system here);
    # this script starts them below with its own configuration.
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [[ ! -e $policy ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod +x "$policy" && created_policy=1
    fi
    local installed=0
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null && installed=1
    if ((created_policy)); then rm -f "$policy"; fi
    ((installed)) || die "apt-get install ${missing[*]} failed (output above)"
    say "installed: $(dpkg-query -W -f='${Package} ${Version}, ' "${PACKAGES[@]}")"
}

write_munge_key() {
    if [[ -s $MUNGE_KEY ]]; then
        say "munge key present: $MUNGE_KEY"
    else
        mkdir -p "$(dirname "$MUNGE_KEY")"
        dd if=/dev/urandom of="$MUNGE_KEY" bs=1024 count=1 status=none
        say "wrote a new munge key: $MUNGE_KEY"
    fi
    chown munge:munge "$MUNGE_KEY"
    chmod 400 "$MUNGE_KEY"
}

write_slurm_conf() {
    local cpus mem_mb
    cpus=$(nproc)
    mem_mb=$(awk '/^MemTotal:/ {print int($2 / 1024)}' /proc/meminfo)
    mkdir -p "$CONF_DIR" "$LOG_DIR" "$CTLD_STATE" "$SLURMD_SPOOL" "$RUN_DIR"
    # Written to a temporary name and renamed, so a running daemon never reads half a file.
    cat >"$CONF.tmp" <<EOF
# Written by tests/slurm/cluster.sh for host $HOST: a one-node test cluster (slurm-wlm 22.05, Debian 12).
ClusterName=advmed-test
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CryptoType=crypto/munge
# A requeued job waits cred_expire seconds before it may start again (default 120 s): 10 s here, and
# the schedulers look at pending jobs every 2 s (defaults 30 / 60 s), so a requeue costs seconds.
AuthInfo=cred_expire=10
SchedulerParameters=bf_interval=2,sched_interval=2
MpiDefault=none
# No cgroups in containers: track processes through /proc, bind nothing.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SwitchType=switch/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
# A node that comes back with a valid configuration (after 'down' / 'up') returns to service by itself.
ReturnToService=2
JobRequeue=1
# Seconds between SIGTERM and SIGKILL on cancel / requeue: short, so a requeue takes seconds.
KillWait=5
# Finished jobs stay visible to 'scontrol show job' for 30 min (no accounting database here: sacct is off).
MinJobAge=1800
SlurmctldTimeout=30
SlurmdTimeout=60
InactiveLimit=0
Waittime=0
StateSaveLocation=$CTLD_STATE
SlurmdSpoolDir=$SLURMD_SPOOL
SlurmctldPidFile=$RUN_DIR/slurmctld.pid
SlurmdPidFile=$RUN_DIR/slurmd.pid
SlurmctldLogFile=$LOG_DIR/slurmctld.log
SlurmdLogFile=$LOG_DIR/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
# One line per finished (or requeued) job, kept after MinJobAge: the tests' record of what ran.
JobCompType=jobcomp/filetxt
JobCompLoc=$LOG_DIR/jobcomp.log
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
    if cmp -s "$CONF.tmp" "$CONF"; then
        rm "$CONF.tmp"
        say "$CONF up to date (node $HOST: CPUs=$cpus RealMemory=${mem_mb}M, partition debug)"
    else
        mv "$CONF.tmp" "$CONF"
        CONF_CHANGED=1
        say "wrote $CONF (node $HOST: CPUs=$cpus RealMemory=${mem_mb}M, partition debug)"
    fi
}

start_munged() {
    mkdir -p "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chown munge:munge "$MUNGE_RUN" /var/lib/munge /var/log/munge
    chmod 755 "$MUNGE_RUN"
    if alive "$MUNGE_RUN/munged.pid"; then
        say "munged already running (pid $(cat "$MUNGE_RUN/munged.pid"))"
        return
    fi
    runuser -u munge -- /usr/sbin/munged
    say "started munged"
    munge -n | unmunge >/dev/null || die "munge does not answer (see /var/log/munge/munged.log)"
}

start_daemon() {  # $1 = slurmctld | slurmd
    local name=$1 pid_file=$RUN_DIR/$1.pid
    if alive "$pid_file" && ((CONF_CHANGED)); then
        # Some keys (AuthInfo, node definitions) are read only at start: a changed slurm.conf means a restart.
        stop "$pid_file" "$name"
    fi
    if alive "$pid_file"; then
        say "$name already running (pid $(cat "$pid_file"))"
        return
    fi
    "/usr/sbin/$name" || die "$name did not start (see $LOG_DIR/$name.log)"
    say "started $name"
}

wait_for_srun() {
    local deadline=$((SECONDS + UP_TIMEOUT))
    until timeout 20 srun -N1 -t 1 hostname >/dev/null 2>&1; do
        # A node left DOWN/DRAINED by an earlier run (killed daemons) is put back in service.
        scontrol update NodeName="$HOST" State=RESUME >/dev/null 2>&1 || true
        if ((SECONDS >= deadline)); then
            sinfo 2>&1 || true
            tail -n 20 "$LOG_DIR/slurmctld.log" "$LOG_DIR/slurmd.log" 2>&1 || true
            die "'srun -N1 hostname' did not answer within ${UP_TIMEOUT}s (logs above, in $LOG_DIR)"
        fi
        sleep 2
    done
    say "srun -N1 hostname -> $(srun -N1 -t 1 hostname 2>/dev/null) ($(sinfo -V))"
}

up() {
    [[ $(id -u) == 0 ]] || die "the test cluster runs its daemons as root (run: sudo bash $0 up)"
    install_packages
    write_munge_key
    write_slurm_conf
    start_munged
    start_daemon slurmctld
    start_daemon slurmd
    wait_for_srun
    say "up: partition debug on $HOST; try: sbatch --wrap hostname; squeue; bash $0 down"
}

stop() {  # $1 = pid file, $2 = name
    if alive "$1"; then
        local pid
        pid=$(cat "$1")
        kill "$pid"
        for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
        kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
        say "stopped $2 (pid $pid)"
    else
        say "$2 not running"
    fi
    rm -f "$1"
}

down() {
    stop "$RUN_DIR/slurmd.pid" slurmd
    stop "$RUN_DIR/slurmctld.pid" slurmctld
    stop "$MUNGE_RUN/munged.pid" munged
}

status() {
    for daemon in "$MUNGE_RUN/munged.pid munged" "$RUN_DIR/slurmctld.pid slurmctld" "$RUN_DIR/slurmd.pid slurmd"; do
        set -- $daemon
        if alive "$1"; then say "$2 running (pid $(cat "$1"))"; else say "$2 not running"; fi
    done
    if command -v sinfo >/dev/null && timeout 10 scontrol ping >/dev/null 2>&1; then
        sinfo
        squeue
    fi
}

case ${1:-} in
    up) up ;;
    down) down ;;
    status) status ;;
    *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
