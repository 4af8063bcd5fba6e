#!/usr/bin/env bash
# A real single-node SLURM cluster on this machine, for tests and CI (run as root, Linux).
#
#     scripts/slurm_cluster.sh install   # Debian packages (apt-get, non-interactive)
#     scripts/slurm_cluster.sh start     # installs if needed; munged, mariadbd, slurmdbd, slurmctld, slurmd
#     scripts/slurm_cluster.sh status    # exit 0 when every daemon runs and the node answers
#     scripts/slurm_cluster.sh stop      # by pid, SIGKILL after a grace period
#
# No systemd, no cgroups: daemons are started by hand and write pid files under $STATE.
# Partitions: `main` (default, CPU) and `gpu`; the node carries two fake GPUs (gres on
# /dev/fakegpu[0-1]), so `--gpus=N` is scheduled for real and jobs see CUDA_VISIBLE_DEVICES.
# Preemption as SLURM does it by default: a job in `urgent` (higher PriorityTier) that needs the
# resources of jobs in `preemptible` requeues them (PreemptMode=REQUEUE: SIGCONT and SIGTERM, then
# SIGKILL after KillWait; no user signal). Jobs in `main` and `gpu` are never preempted.
# slurmdbd (MariaDB) runs so that `sacct` works: the Snakemake plugin reads job states with it.
# Every start is a fresh cluster (state and accounting wiped); FirstJobId is derived from the clock
# so job ids (and submitit's logs/submitit/<jobid> folders) are not reused across starts.
set -euo pipefail

STATE=${CDRL_SLURM_STATE:-/var/lib/cdrl-slurm}
CONF_DIR=/etc/slurm
HOST=$(hostname -s)
CLUSTER=cdrl
PACKAGES=(munge slurmctld slurmd slurm-client slurmdbd mariadb-server)
DB_PASS=cdrl-slurm-test
DAEMONS=(slurmd slurmctld slurmdbd mariadbd munged) # stop order

log() { echo "slurm_cluster: $*" >&2; }
die() {
	log "$*"
	exit 1
}

need_root() {
	[[ $(uname -s) == Linux ]] || die "needs Linux"
	[[ $(id -u) == 0 ]] || die "needs root (apt-get, daemons, /etc/slurm)"
}

installed() {
	local p
	for p in "${PACKAGES[@]}"; do
		dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || return 1
	done
}

install() {
	need_root
	installed && return 0
	log "installing ${PACKAGES[*]}"
	export DEBIAN_FRONTEND=noninteractive
	timeout -k 10 600 apt-get update -qq
	timeout -k 10 900 apt-get install -y -qq --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold "${PACKAGES[@]}" >/dev/null
	# The packages may start daemons through init scripts where there is an init; we run our own.
	installed || die "packages did not install"
}

pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }

alive() {
	local pid
	pid=$(pid_of "$1")
	[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null
}

# Wait (up to $2 seconds) for a command to succeed.
wait_for() {
	local what=$1 secs=$2
	shift 2
	local end=$((SECONDS + secs))
	until "$@" >/dev/null 2>&1; do
		((SECONDS < end)) || die "timed out after ${secs}s waiting for $what (logs: $STATE/log)"
		sleep 0.5
	done
}

write_configs() {
	local mem cpus
	cpus=$(nproc)
	mem=$(slurmd -C | sed -n 's/.*RealMemory=\([0-9]*\).*/\1/p')
	mem=$((mem * 85 / 100))
	mkdir -p "$CONF_DIR" "$STATE"/{log,ctld,slurmd}
	cat >"$CONF_DIR/slurm.conf" <<EOF
# Written by cdrl-bench scripts/slurm_cluster.sh: a single-node test cluster.
ClusterName=$CLUSTER
SlurmctldHost=$HOST(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=cred_expire=30
CryptoType=crypto/munge
MailProg=/bin/true
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
GresTypes=gpu
MinJobAge=600
ReturnToService=2
JobRequeue=1
KillWait=10
SchedulerParameters=sched_interval=5
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
FirstJobId=$(($(date +%s) % 20000000 * 3 + 1000))
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/slurmd
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/log/slurmctld.log
SlurmdLogFile=$STATE/log/slurmd.log
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStorageTRES=gres/gpu
JobAcctGatherType=jobacct_gather/linux
JobCompType=jobcomp/none
NodeName=$HOST NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:2 State=UNKNOWN
PartitionName=main Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=gpu Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=OFF
PartitionName=preemptible Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=1 PreemptMode=REQUEUE
PartitionName=urgent Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
	cat >"$CONF_DIR/gres.conf" <<EOF
AutoDetect=off
NodeName=$HOST Name=gpu File=/dev/fakegpu[0-1]
EOF
	cat >"$CONF_DIR/slurmdbd.conf" <<EOF
AuthType=auth/munge
DbdHost=localhost
SlurmUser=root
PidFile=$STATE/slurmdbd.pid
LogFile=$STATE/log/slurmdbd.log
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=$DB_PASS
StorageLoc=slurm_acct_db
EOF
	chmod 600 "$CONF_DIR/slurmdbd.conf"
	local i
	# Device files like /dev/null; a plain file where mknod is not allowed (some containers).
	for i in 0 1; do [[ -e /dev/fakegpu$i ]] || mknod "/dev/fakegpu$i" c 1 3 || touch "/dev/fakegpu$i"; done
}

start_munge() {
	mkdir -p /run/munge /var/log/munge /var/lib/munge
	chown munge:munge /run/munge /var/log/munge /var/lib/munge
	[[ -s /etc/munge/munge.key ]] || runuser -u munge -- mungekey --create
	runuser -u munge -- /usr/sbin/munged --pid-file=/run/munge/munged.pid
	cp /run/munge/munged.pid "$STATE/munged.pid"
	wait_for munge 20 bash -c 'munge -n | unmunge'
}

start_mariadb() {
	local data=$STATE/mysql
	mkdir -p /run/mysqld
	chown mysql:mysql /run/mysqld
	mysql_install_db --user=mysql --datadir="$data" --auth-root-authentication-method=socket \
		>"$STATE/log/mysql_install_db.log" 2>&1
	mariadbd --user=mysql --datadir="$data" --socket=/run/mysqld/mysqld.sock \
		--pid-file=/run/mysqld/mariadbd.pid --skip-networking --innodb-buffer-pool-size=32M \
		>"$STATE/log/mariadbd.log" 2>&1 &
	wait_for mariadb 60 mariadb --protocol=socket -e 'select 1'
	cp /run/mysqld/mariadbd.pid "$STATE/mariadbd.pid"
	mariadb --protocol=socket -e "CREATE DATABASE slurm_acct_db;
		CREATE USER 'slurm'@'localhost' IDENTIFIED BY '$DB_PASS';
		GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
}

start() {
	install
	if status >/dev/null 2>&1; then
		log "already running"
		return 0
	fi
	stop >/dev/null 2>&1 || true
	rm -rf "$STATE"
	mkdir -p "$STATE"
	write_configs
	start_munge
	start_mariadb
	slurmdbd
	wait_for slurmdbd 60 sacctmgr -i list cluster
	timeout 30 sacctmgr -i add cluster "$CLUSTER" >/dev/null
	slurmctld
	wait_for slurmctld 60 scontrol ping
	slurmd -N "$HOST"
	wait_for "node $HOST idle" 90 bash -c "sinfo -h -N -n $HOST -o %t | grep -qx idle"
	wait_for sacct 60 sacct -n -X -S now
	log "up: partitions main, gpu (gpu:2 fake), preemptible, urgent; state $STATE"
}

status() {
	local d rc=0
	for d in munged mariadbd slurmdbd slurmctld slurmd; do
		if alive "$d"; then echo "$d running (pid $(pid_of "$d"))"; else
			echo "$d not running"
			rc=1
		fi
	done
	((rc == 0)) || return 1
	timeout 10 sinfo -h -o '%P %a %D %t %G' || return 1
}

stop() {
	local d pid end
	for d in "${DAEMONS[@]}"; do
		pid=$(pid_of "$d")
		[[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || continue
		kill -TERM "$pid"
		end=$((SECONDS + 20))
		while kill -0 "$pid" 2>/dev/null && ((SECONDS < end)); do sleep 0.2; done
		kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
		log "stopped $d (pid $pid)"
	done
	return 0
}

# One install/start/stop at a time (several test sessions may share this machine). The lock is
# held by flock itself (-o): daemons started under it must not inherit the lock's descriptor.
LOCK=/run/cdrl-slurm.lock
case ${1:-} in
install | start | stop) exec flock -o -w 900 "$LOCK" "$0" "_$1" ;;
_install) install ;;
_start) start ;;
_stop) stop ;;
status) status ;;
*) die "usage: $0 install|start|status|stop" ;;
esac
