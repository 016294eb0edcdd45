#!/usr/bin/env bash
# Compares this host with tuning/README.md: prints each setting's current value
# next to the recommended one and flags mismatches. Read-only: it changes
# nothing and always exits 0. Runs as any user; rows that need root say so.
#
#   tuning/check.sh [/etc/transponder/transponder.toml]
#
# Status: ok | WARN (differs from the guide) | note (matters in some roles
# only, e.g. load generators) | info (no recommendation) | ? (cannot tell).

set -euo pipefail
export LC_ALL=C
# Every probe below may legitimately fail (a key, file or tool that is not
# there); such probes end in `|| true` so the report always runs to the end.

CONFIG=${1:-/etc/transponder/transponder.toml}
UNIT=transponder.service

WANT_NOFILE=2000000
WANT_NR_OPEN=2097152
WANT_FILE_MAX=4194304
WANT_SOMAXCONN=65535
WANT_SYN_BACKLOG=65535
WANT_LISTEN_BACKLOG=16384
WANT_RMEM="4096 16384 4194304"
WANT_WMEM="4096 16384 4194304"
WANT_RFS=32768
WANT_NETDEV_BACKLOG=16384
WANT_CONNTRACK_MAX=2097152
WANT_PORT_RANGE="1024 65535"
GLOMMIO_MIN_MEMLOCK_KIB=512

warns=0

row() { # name current recommended status
    [ "$4" = WARN ] && warns=$((warns + 1))
    printf '  %-37s %-28s %-30s %s\n' "$1" "$2" "$3" "$4"
}

section() { printf '\n== %s\n' "$1"; }

is_int() { [[ $1 =~ ^[0-9]+$ ]]; }

# A sysctl's value, whitespace squeezed; "absent" when the key does not exist.
sys() {
    local f="/proc/sys/${1//.//}"
    if [ -r "$f" ]; then tr -s '[:blank:]' ' ' < "$f"; else echo absent; fi
}

# Row for a sysctl that should be at least $2.
row_ge() {
    local v status=WARN
    v=$(sys "$1")
    if is_int "$v" && [ "$v" -ge "$2" ]; then status=ok; fi
    row "$1" "$v" ">= $2" "$status"
}

# Row for a sysctl that should equal $2 (whitespace-insensitive).
row_eq() {
    local v status=WARN
    v=$(sys "$1")
    [ "$v" = "$2" ] && status=ok
    row "$1" "$v" "$2" "$status"
}

# A key's value in the TOML file, quotes and comments stripped; $2 if unset.
cfg() {
    local v=""
    if [ -r "$CONFIG" ]; then
        v=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*\"\{0,1\}\([^\"#[:space:]]*\)\"\{0,1\}.*/\1/p" "$CONFIG" | tail -n 1)
    fi
    echo "${v:-$2}"
}

# systemd duration ("30s", "1min 30s", "500ms", "infinity") to milliseconds.
duration_ms() {
    local total=0 tok n
    [ "$1" = infinity ] && { echo 999999999; return; }
    for tok in $1; do
        n=${tok%%[a-z]*}
        is_int "$n" || { echo ""; return; }
        case ${tok#"$n"} in
            h) total=$((total + n * 3600000)) ;;
            min) total=$((total + n * 60000)) ;;
            s | "") total=$((total + n * 1000)) ;;
            ms) total=$((total + n)) ;;
            us) total=$((total + n / 1000)) ;;
            *) echo ""; return ;;
        esac
    done
    echo "$total"
}

# A TcpExt counter from /proc/net/netstat.
tcpext() {
    awk -v key="$1" '$1 == "TcpExt:" { if (!hdr) { split($0, h); hdr = 1 } else { for (i = 2; i <= NF; i++) if (h[i] == key) print $i } }' /proc/net/netstat 2>/dev/null || true
}

# The bracketed choice in a THP sysfs file.
thp() { sed -n 's/.*\[\([^]]*\)\].*/\1/p' "/sys/kernel/mm/transparent_hugepage/$1" 2>/dev/null || true; }

# --- what we are looking at -------------------------------------------------

have_systemd=false
[ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1 && have_systemd=true
unit_loaded=false
if $have_systemd && [ "$(systemctl show "$UNIT" -p LoadState --value 2>/dev/null)" = loaded ]; then
    unit_loaded=true
fi
unit() { systemctl show "$UNIT" -p "$1" --value 2>/dev/null; }

pid=""
if $unit_loaded; then
    pid=$(unit MainPID)
    [ "$pid" = 0 ] && pid=""
fi
[ -n "$pid" ] || pid=$(pgrep -xo transponder 2>/dev/null || true)
nprocs=$({ pgrep -x transponder 2>/dev/null || true; } | wc -l)

gateway_port=$(cfg gateway_port 7770)
api_port=$(cfg api_port 7771)
admin_port=$(cfg admin_port 7772)
listen_backlog=$(cfg listen_backlog 4096)
drain_ms=$(cfg drain_timeout_ms 10000)
huge_pages=$(cfg huge_pages false)

echo "Transponder host check ($(uname -n), Linux $(uname -r), $(nproc) CPUs)"
if [ -r "$CONFIG" ]; then echo "config: $CONFIG"; else echo "config: $CONFIG not found, using defaults"; fi
if $unit_loaded; then echo "unit: $UNIT loaded"; else echo "unit: $UNIT not loaded$($have_systemd || echo ' (no systemd)')"; fi
if [ -n "$pid" ]; then
    echo "process: pid $pid ($nprocs transponder process(es) running)"
else
    echo "process: none running"
fi
printf '\n  %-37s %-28s %-30s %s\n' setting current recommended status

# --- kernel and io_uring --------------------------------------------------------

section "Kernel and io_uring (README 6)"
kver=$(uname -r)
kmaj=${kver%%.*}
kmin=${kver#*.}
kmin=${kmin%%[!0-9]*}
if is_int "$kmaj" && is_int "$kmin" && { [ "$kmaj" -gt 5 ] || { [ "$kmaj" -eq 5 ] && [ "$kmin" -ge 8 ]; }; }; then
    row "kernel" "$kver" ">= 5.8 (glommio)" ok
else
    row "kernel" "$kver" ">= 5.8 (glommio)" WARN
fi
iud=$(sys kernel.io_uring_disabled)
case $iud in
    0) row kernel.io_uring_disabled 0 0 ok ;;
    absent) row kernel.io_uring_disabled "absent (< 6.6)" 0 ok ;;
    1)
        want_gid=$({ getent group transponder 2>/dev/null || true; } | cut -d: -f3)
        if [ -n "$want_gid" ] && [ "$(sys kernel.io_uring_group)" = "$want_gid" ]; then
            row kernel.io_uring_disabled "1 (group $want_gid)" "0, or 1 + io_uring_group" ok
        else
            row kernel.io_uring_disabled 1 "0, or 1 + io_uring_group" WARN
        fi
        ;;
    *) row kernel.io_uring_disabled "$iud" 0 WARN ;;
esac

memlock=$(ulimit -l)
if [ "$memlock" = unlimited ] || { is_int "$memlock" && [ "$memlock" -ge "$GLOMMIO_MIN_MEMLOCK_KIB" ]; }; then
    row "ulimit -l (this shell, KiB)" "$memlock" ">= 512" ok
else
    row "ulimit -l (this shell, KiB)" "$memlock" ">= 512" WARN
fi
if $unit_loaded; then
    v=$(unit LimitMEMLOCK)
    if [ "$v" = infinity ]; then row "unit LimitMEMLOCK" "$v" infinity ok; else row "unit LimitMEMLOCK" "$v" infinity WARN; fi
fi
if [ -n "$pid" ] && [ -r "/proc/$pid/limits" ]; then
    v=$(awk '/^Max locked memory/ {print $4}' "/proc/$pid/limits" 2>/dev/null || true)
    pin=$(awk '/^VmPin/ {print $2 " kB"}' "/proc/$pid/status" 2>/dev/null || true)
    if [ "$v" = unlimited ]; then st=ok; else st=WARN; fi
    row "process memlock (VmPin ${pin:-?})" "$v" unlimited "$st"
fi

# --- file descriptors -----------------------------------------------------------

section "File descriptors (README 1)"
row_ge fs.nr_open "$WANT_NR_OPEN"
row_ge fs.file-max "$WANT_FILE_MAX"
row "fs.file-nr (allocated)" "$(awk '{print $1}' /proc/sys/fs/file-nr)" "-" info
soft=$(ulimit -Sn)
hard=$(ulimit -Hn)
for pair in "ulimit -Sn (this shell):$soft" "ulimit -Hn (this shell):$hard"; do
    name=${pair%%:*}
    v=${pair#*:}
    if [ "$v" = unlimited ] || { is_int "$v" && [ "$v" -ge "$WANT_NOFILE" ]; }; then st=ok; else st=note; fi
    row "$name" "$v" ">= $WANT_NOFILE (load gens)" "$st"
done
if $unit_loaded; then
    v=$(unit LimitNOFILE)
    if is_int "$v" && [ "$v" -ge "$WANT_NOFILE" ]; then st=ok; else st=WARN; fi
    row "unit LimitNOFILE" "$v" ">= $WANT_NOFILE" "$st"
fi
if [ -n "$pid" ] && [ -r "/proc/$pid/limits" ]; then
    v=$(awk '/^Max open files/ {print $4}' "/proc/$pid/limits" 2>/dev/null || true)
    if [ "$v" = unlimited ] || { is_int "$v" && [ "$v" -ge "$WANT_NOFILE" ]; }; then st=ok; else st=WARN; fi
    row "process open files (hard)" "$v" ">= $WANT_NOFILE" "$st"
    if [ -r "/proc/$pid/fd" ]; then
        row "process fds in use" "$(find "/proc/$pid/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)" "-" info
    else
        row "process fds in use" "needs root" "-" "?"
    fi
fi

# --- listen backlog -------------------------------------------------------------

section "Listen backlog (README 2)"
row_ge net.core.somaxconn "$WANT_SOMAXCONN"
row_ge net.ipv4.tcp_max_syn_backlog "$WANT_SYN_BACKLOG"
row_eq net.ipv4.tcp_syncookies 1
somax=$(sys net.core.somaxconn)
if is_int "$listen_backlog" && is_int "$somax" && [ "$listen_backlog" -gt "$somax" ]; then
    row "listen_backlog (config)" "$listen_backlog (capped: $somax)" ">= $WANT_LISTEN_BACKLOG, <= somaxconn" WARN
elif is_int "$listen_backlog" && [ "$listen_backlog" -ge "$WANT_LISTEN_BACKLOG" ]; then
    row "listen_backlog (config)" "$listen_backlog" ">= $WANT_LISTEN_BACKLOG, <= somaxconn" ok
else
    row "listen_backlog (config)" "$listen_backlog" ">= $WANT_LISTEN_BACKLOG, <= somaxconn" WARN
fi
if command -v ss >/dev/null 2>&1; then
    n=$({ ss -Hltn "sport = :$gateway_port" 2>/dev/null || true; } | wc -l)
    b=$({ ss -Hltn "sport = :$gateway_port" 2>/dev/null || true; } | awk 'NR == 1 {print $3}')
    if [ "$n" -gt 0 ]; then
        row "gateway :$gateway_port listeners" "$n (backlog ${b:-?})" "one per shard" info
    fi
fi
for c in ListenOverflows ListenDrops SyncookiesSent; do
    v=$(tcpext "$c")
    row "TcpExt $c (since boot)" "${v:-?}" "no growth in storms" info
done

# --- ports ----------------------------------------------------------------------

section "Ephemeral ports (README 3)"
range=$(sys net.ipv4.ip_local_port_range)
if [ "$range" = "$WANT_PORT_RANGE" ]; then st=ok; else st=note; fi
row net.ipv4.ip_local_port_range "$range" "$WANT_PORT_RANGE (load gens)" "$st"
reserved=$(sys net.ipv4.ip_local_reserved_ports)
row net.ipv4.ip_local_reserved_ports "${reserved:-(none)}" "service ports in range" info
lo=${range%% *}
hi=${range##* }
for p in "$gateway_port" "$api_port" "$admin_port"; do
    if ! is_int "$p" || ! is_int "$lo" || ! is_int "$hi"; then continue; fi
    if [ "$p" -ge "$lo" ] && [ "$p" -le "$hi" ]; then
        covered=false
        IFS=, read -ra parts <<< "$reserved"
        for part in "${parts[@]}"; do
            a=${part%-*}
            z=${part#*-}
            is_int "$a" && is_int "$z" && [ "$p" -ge "$a" ] && [ "$p" -le "$z" ] && covered=true
        done
        if $covered; then st=ok; else st=WARN; fi
        row "port $p inside the range" "reserved: $covered" reserved "$st"
    fi
done

# --- TCP memory -----------------------------------------------------------------

section "TCP memory (README 4)"
page=$(getconf PAGESIZE 2>/dev/null || echo 4096)
mem_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo)
pages=$((mem_kib * 1024 / page))
want_tcp_mem="$((pages / 16)) $((pages / 8)) $((pages / 4))"
tcp_mem=$(sys net.ipv4.tcp_mem)
cur_max=${tcp_mem##* }
if is_int "$cur_max" && [ "$cur_max" -ge $((pages / 4)) ]; then st=ok; else st=WARN; fi
row net.ipv4.tcp_mem "$tcp_mem" "$want_tcp_mem" "$st"
row_eq net.ipv4.tcp_rmem "$WANT_RMEM"
row_eq net.ipv4.tcp_wmem "$WANT_WMEM"
used=$(awk '$1 == "TCP:" { for (i = 2; i < NF; i++) if ($i == "mem") print $(i + 1) }' /proc/net/sockstat 2>/dev/null || true)
row "TCP buffer pages in use" "${used:-?}" "< tcp_mem pressure" info
v=$(tcpext TCPMemoryPressures)
row "TcpExt TCPMemoryPressures" "${v:-?}" "0" "$([ "${v:-0}" = 0 ] && echo ok || echo WARN)"
row "max_queue_bytes (config)" "$(cfg max_queue_bytes 4194304)" "bounds lag; see README 4" info
echo "  -> tcp_mem line for this host ($((mem_kib / 1024)) MiB RAM, $page B pages): net.ipv4.tcp_mem = $want_tcp_mem"

# --- conntrack ------------------------------------------------------------------

section "Conntrack (README 5)"
ct_max=$(sys net.netfilter.nf_conntrack_max)
if [ "$ct_max" = absent ]; then
    row "nf_conntrack" "not loaded" "untracked, or max >= $WANT_CONNTRACK_MAX" ok
else
    ct_count=$(sys net.netfilter.nf_conntrack_count)
    notrack="?"
    if [ "$(id -u)" = 0 ]; then
        notrack=no
        if command -v nft >/dev/null 2>&1 && nft list ruleset 2>/dev/null | grep -qE "(dport|sport) $gateway_port .*notrack"; then notrack=yes; fi
        if command -v iptables >/dev/null 2>&1 && iptables -t raw -S 2>/dev/null | grep -qE -- "--(dport|sport) $gateway_port .*(NOTRACK|--notrack)"; then notrack=yes; fi
    fi
    row "nf_conntrack_count" "$ct_count" "-" info
    if [ "$notrack" = yes ]; then
        row "gateway :$gateway_port notrack" yes yes ok
        row net.netfilter.nf_conntrack_max "$ct_max" "(not needed: notrack)" ok
    else
        row "gateway :$gateway_port notrack" "$([ "$notrack" = "?" ] && echo "? (needs root)" || echo no)" "yes, or raise max" info
        if is_int "$ct_max" && [ "$ct_max" -ge "$WANT_CONNTRACK_MAX" ]; then st=ok; else st=WARN; fi
        row net.netfilter.nf_conntrack_max "$ct_max" ">= $WANT_CONNTRACK_MAX" "$st"
    fi
fi

# --- CPUs and IRQs --------------------------------------------------------------

section "CPUs, IRQs, RPS/RFS, XPS (README 7)"
row "online CPUs" "$(cat /sys/devices/system/cpu/online 2>/dev/null || true)" "-" info
iso=$(cat /sys/devices/system/cpu/isolated 2>/dev/null || true)
row "isolated CPUs (isolcpus)" "${iso:-(none)}" "optional" info
row "PID 1 CPU affinity" "$(awk '/^Cpus_allowed_list/ {print $2}' /proc/1/status 2>/dev/null)" "housekeeping CPUs" info
if $unit_loaded; then
    v=$(unit CPUAffinity)
    if [ -n "$v" ]; then st=ok; else st=WARN; fi
    row "unit CPUAffinity" "${v:-(all CPUs)}" "shard CPUs, not CPU 0" "$st"
fi
if [ -n "$pid" ] && [ -d "/proc/$pid/task" ]; then
    # glommio names a shard's executor and its blocking-pool helper thread
    # alike (shard-<i>-<id>), and pins both to the shard's CPU.
    declare -A shard_cpu=()
    for t in /proc/"$pid"/task/*; do
        comm=$(cat "$t/comm" 2>/dev/null || true)
        case $comm in shard-*) ;; *) continue ;; esac
        cpus=$(awk '/^Cpus_allowed_list/ {print $2}' "$t/status" 2>/dev/null || true)
        if [[ $cpus =~ ^[0-9]+$ ]] && [ -z "${shard_cpu[$comm]:-}" ]; then
            shard_cpu[$comm]=$cpus
        else
            shard_cpu[$comm]=${shard_cpu[$comm]:-}
        fi
    done
    nshards=${#shard_cpu[@]}
    pinned=$(printf '%s\n' "${shard_cpu[@]}" | sed '/^$/d' | sort -n | tr '\n' ' ')
    npinned=$(echo "$pinned" | wc -w)
    ndistinct=$(echo "$pinned" | tr ' ' '\n' | sed '/^$/d' | sort -u | wc -l)
    if [ "$nshards" -gt 0 ] && [ "$npinned" = "$nshards" ] && [ "$npinned" = "$ndistinct" ]; then st=ok; else st=WARN; fi
    row "shards pinned (of $nshards)" "$npinned, CPUs: ${pinned:-none}" "one distinct CPU each" "$st"
fi
if pgrep -x irqbalance >/dev/null 2>&1; then
    banned=$({ grep -hsE '^[[:space:]]*IRQBALANCE_BANNED_(CPULIST|CPUS)=' /etc/default/irqbalance /etc/sysconfig/irqbalance || true; } | tail -n 1)
    if [ -n "$banned" ]; then
        row irqbalance "running, $banned" "off, or shard CPUs banned" ok
    else
        row irqbalance running "off, or shard CPUs banned" WARN
    fi
else
    row irqbalance "not running" "off, or shard CPUs banned" ok
fi
row_ge net.core.rps_sock_flow_entries "$WANT_RFS"
row_ge net.core.netdev_max_backlog "$WANT_NETDEV_BACKLOG"
# /proc/net/softnet_stat: one line per CPU, column 2 = packets dropped because
# that CPU's backlog queue (netdev_max_backlog) was full; hexadecimal.
drops=0
while read -r _ d _; do drops=$((drops + 16#$d)); done < /proc/net/softnet_stat 2>/dev/null || drops="?"
row "softnet backlog drops (since boot)" "$drops" "no growth under load" info
for dev in /sys/class/net/*; do
    [ -e "$dev/device" ] || continue          # physical NICs only
    name=${dev##*/}
    nrx=$({ find "$dev/queues" -maxdepth 1 -name 'rx-*' 2>/dev/null || true; } | wc -l)
    ntx=$({ find "$dev/queues" -maxdepth 1 -name 'tx-*' 2>/dev/null || true; } | wc -l)
    row "$name queues rx/tx" "$nrx/$ntx" "= shards" info
    row "$name rx-0 rps_cpus / rps_flow_cnt" "$(cat "$dev/queues/rx-0/rps_cpus" 2>/dev/null) / $(cat "$dev/queues/rx-0/rps_flow_cnt" 2>/dev/null)" "(if queues < shards) / $((WANT_RFS / (nrx > 0 ? nrx : 1)))" info
    row "$name tx-0 xps_cpus" "$(cat "$dev/queues/tx-0/xps_cpus" 2>/dev/null || echo '?')" "shard 0's CPU" info
    irqs=$(awk -v d="$name" '$0 ~ d {sub(":", "", $1); print $1}' /proc/interrupts 2>/dev/null || true)
    list=""
    for irq in $irqs; do
        list="$list $irq->$(cat "/proc/irq/$irq/effective_affinity_list" 2>/dev/null || cat "/proc/irq/$irq/smp_affinity_list" 2>/dev/null)"
    done
    row "$name IRQ -> CPU" "${list:- (none named $name)}" "queue i -> shard i's CPU" info
done

# --- memory ---------------------------------------------------------------------

section "Transparent huge pages and swap (README 9)"
# The server turns THP off for itself unless huge_pages = true; only then do
# the host's THP settings reach it.
v=$(thp enabled)
if [ "$huge_pages" = true ]; then
    case $v in madvise | never) st=ok ;; "") st="?" ;; *) st=WARN ;; esac
    row "THP enabled" "${v:-?}" "madvise (or never)" "$st"
    v=$(thp defrag)
    case $v in defer | never) st=ok ;; "") st="?" ;; *) st=WARN ;; esac
    row "THP defrag" "${v:-?}" "defer" "$st"
else
    row "THP enabled" "${v:-?}" "any (huge_pages = false)" info
    row "THP defrag" "$(thp defrag)" "any (huge_pages = false)" info
fi
if [ -n "$pid" ] && [ -r "/proc/$pid/status" ]; then
    v=$(awk '/^THP_enabled:/ {print $2}' "/proc/$pid/status" 2>/dev/null || true)
    if [ "$huge_pages" = true ]; then want=1; else want=0; fi
    if [ -z "$v" ]; then st="?"; elif [ "$v" = "$want" ]; then st=ok; else st=WARN; fi
    row "process THP_enabled" "${v:-?}" "$want (huge_pages = $huge_pages)" "$st"
fi
swap_kib=$(awk '/^SwapTotal:/ {print $2}' /proc/meminfo)
if [ "${swap_kib:-0}" = 0 ]; then st=ok; else st=WARN; fi
row "swap (SwapTotal kB)" "${swap_kib:-?}" 0 "$st"
v=$(sys vm.swappiness)
if [ "${swap_kib:-0}" = 0 ]; then
    row vm.swappiness "$v" "1 (moot: no swap)" ok
else
    if [ "$v" = 1 ] || [ "$v" = 0 ]; then st=ok; else st=WARN; fi
    row vm.swappiness "$v" 1 "$st"
fi

# --- service and process ----------------------------------------------------------

section "Service and process (README 8, 10)"
if $unit_loaded; then
    v=$(unit TimeoutStopUSec)
    ms=$(duration_ms "$v")
    need=$((drain_ms + 2000))
    if is_int "$ms" && [ "$ms" -gt "$need" ]; then st=ok; else st=WARN; fi
    row "unit TimeoutStopSec" "$v" "> drain ${drain_ms} ms + 2 s" "$st"
    v=$(unit User)
    if [ -n "$v" ] && [ "$v" != root ]; then st=ok; else st=WARN; fi
    row "unit User" "${v:-(root)}" transponder "$st"
fi
if command -v ss >/dev/null 2>&1 && [ -n "$pid" ]; then
    owners=$({ ss -Hltnp "sport = :$gateway_port" 2>/dev/null || true; } | { grep -o 'pid=[0-9]*' || true; } | sort -u | wc -l)
    case $owners in
        0) row "processes on :$gateway_port" "none listening" "1" info ;;
        1) row "processes on :$gateway_port" 1 "1" ok ;;
        *) row "processes on :$gateway_port" "$owners" "1" WARN ;;
    esac
fi
if [ "$nprocs" -gt 1 ]; then
    row "transponder processes on host" "$nprocs" "1 per port" note
fi

printf '\n%d WARN row(s). Read-only check; nothing was changed.\n' "$warns"
exit 0
