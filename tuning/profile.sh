#!/usr/bin/env bash
# Profiles `transponder serve` under a load scenario and writes a flamegraph SVG.
#
#   tuning/profile.sh [options] [loadgen options] [scenario [scenario options]]
#   tuning/profile.sh                                   # default fan-out scenario
#   tuning/profile.sh fanout --channels 1000 --subscribers 10
#   tuning/profile.sh -o /tmp/storm.svg --duration 15 connect-storm --connections 5000
#
# Builds the release binary (debug line tables: profile.release has debug = 1),
# starts `transponder serve` on 127.0.0.1 with ephemeral ports and a temporary
# data directory, starts the load, attaches `perf record -e cpu-clock` to the
# server for as long as the load runs, then folds the stacks with inferno into
# an SVG. Stops by itself; on exit or Ctrl-C it stops the load, perf and the
# server it started and removes its temporary directory. Installs what it
# lacks (linux-perf with apt-get, inferno with cargo into target/tools).
# Guide: tuning/PROFILING.md.

set -euo pipefail
export LC_ALL=C

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
TOOLS=$ROOT/target/tools
INFERNO_VERSION=${INFERNO_VERSION:-0.12.8}
# The scenario used when none is given.
DEFAULT_SCENARIO=(fanout --channels 20 --subscribers 50 --publishers 4 --size 256 --rate 0)

usage() {
    cat <<'EOF'
Usage: tuning/profile.sh [options] [loadgen options] [scenario [scenario options]]

Profiles `transponder serve` (127.0.0.1, ephemeral ports, temporary data dir)
with perf's cpu-clock event while `transponder loadgen` runs the scenario, and
writes a flamegraph SVG. Everything from the first argument that is not an
option below is passed to `transponder loadgen` as is, after the --admin,
--admin-token and --duration that this script supplies. Default scenario:
  fanout --channels 20 --subscribers 50 --publishers 4 --size 256 --rate 0

Options:
  -o, --output FILE      the SVG (default target/flamegraph-<scenario>.svg)
  -d, --duration SECS    how long the load runs; passed to loadgen (default 20)
  -F, --freq HZ          samples per second per busy CPU (default 999)
  -g, --call-graph MODE  perf --call-graph: dwarf[,bytes] or fp (default dwarf,32768)
      --delay SECS       start sampling this long after the load starts (default 0)
      --server-cpus LIST CPUs for the server, e.g. 1 or 2-7 (default: upper half)
      --load-cpus LIST   CPUs for the load and perf (default: the other CPUs)
      --shards N         server shards (default: one per server CPU)
      --server-arg ARG   extra `transponder serve` flag (repeatable), e.g.
                         --server-arg=--durability=normal
      --no-inline        do not resolve inlined frames: perf script takes ~1 s
                         instead of ~20 s, but most async frames fold into
                         their callers
      --no-build         use the binary in target/release as it is
      --keep             keep the temporary directory (perf.data, folded stacks,
                         server logs) and print its path
  -h, --help             this text

Environment: PERF (perf binary), INFERNO_VERSION (cargo install version).
EOF
}

say() { printf 'profile: %s\n' "$*" >&2; }
die() { printf 'profile: error: %s\n' "$*" >&2; exit 1; }

# --- arguments ------------------------------------------------------------------

OUTPUT=""
DURATION=20
FREQ=999
CALL_GRAPH=dwarf,32768
DELAY=0
SERVER_CPUS=""
LOAD_CPUS=""
SHARDS=""
SERVER_ARGS=()
INLINE=true
BUILD=true
KEEP=false

need_value() { [ "$#" -ge 2 ] || die "$1 needs a value (see --help)"; }

while [ "$#" -gt 0 ]; do
    case $1 in
        -o | --output) need_value "$@"; OUTPUT=$2; shift 2 ;;
        --output=*) OUTPUT=${1#*=}; shift ;;
        -d | --duration) need_value "$@"; DURATION=$2; shift 2 ;;
        --duration=*) DURATION=${1#*=}; shift ;;
        -F | --freq) need_value "$@"; FREQ=$2; shift 2 ;;
        --freq=*) FREQ=${1#*=}; shift ;;
        -g | --call-graph) need_value "$@"; CALL_GRAPH=$2; shift 2 ;;
        --call-graph=*) CALL_GRAPH=${1#*=}; shift ;;
        --delay) need_value "$@"; DELAY=$2; shift 2 ;;
        --delay=*) DELAY=${1#*=}; shift ;;
        --server-cpus) need_value "$@"; SERVER_CPUS=$2; shift 2 ;;
        --server-cpus=*) SERVER_CPUS=${1#*=}; shift ;;
        --load-cpus) need_value "$@"; LOAD_CPUS=$2; shift 2 ;;
        --load-cpus=*) LOAD_CPUS=${1#*=}; shift ;;
        --shards) need_value "$@"; SHARDS=$2; shift 2 ;;
        --shards=*) SHARDS=${1#*=}; shift ;;
        --server-arg) need_value "$@"; SERVER_ARGS+=("$2"); shift 2 ;;
        --server-arg=*) SERVER_ARGS+=("${1#*=}"); shift ;;
        --no-inline) INLINE=false; shift ;;
        --no-build) BUILD=false; shift ;;
        --keep) KEEP=true; shift ;;
        -h | --help) usage; exit 0 ;;
        --) shift; break ;;
        *) break ;;
    esac
done
LOAD_ARGS=("$@")

is_int() { [[ $1 =~ ^[0-9]+$ ]]; }
positive() { [[ $1 =~ ^[0-9]+$ ]] && [ "$1" -gt 0 ]; }
positive "$DURATION" || die "--duration must be a positive number of seconds"
positive "$FREQ" || die "--freq must be a positive number"
is_int "$DELAY" || die "--delay must be a number of seconds"
[ -z "$SHARDS" ] || is_int "$SHARDS" || die "--shards must be a number"
case $CALL_GRAPH in dwarf | dwarf,[0-9]* | fp | lbr) ;; *) die "--call-graph must be dwarf[,bytes], fp or lbr" ;; esac

# Splits LOAD_ARGS into loadgen's global options and the scenario; fills in
# the default scenario; takes --duration from them when given there.
LOADGEN_GLOBALS=()
SCENARIO=()
split_load_args() {
    local i=0 a n=${#LOAD_ARGS[@]}
    while [ "$i" -lt "$n" ]; do
        a=${LOAD_ARGS[i]}
        case $a in
            --admin | --admin=* | --admin-token | --admin-token=*)
                die "$a: profile.sh supplies the admin URL and token of the server it starts" ;;
            --duration)
                [ $((i + 1)) -lt "$n" ] || die "--duration needs a value"
                DURATION=${LOAD_ARGS[i + 1]}; i=$((i + 2)); continue ;;
            --duration=*) DURATION=${a#*=}; i=$((i + 1)); continue ;;
            --target | --workers | --sources)
                [ $((i + 1)) -lt "$n" ] || die "$a needs a value"
                LOADGEN_GLOBALS+=("$a" "${LOAD_ARGS[i + 1]}"); i=$((i + 2)); continue ;;
            -*) LOADGEN_GLOBALS+=("$a"); i=$((i + 1)); continue ;;
            *) SCENARIO=("${LOAD_ARGS[@]:i}"); break ;;
        esac
    done
    if [ "${#SCENARIO[@]}" -eq 0 ]; then SCENARIO=("${DEFAULT_SCENARIO[@]}"); fi
    local g
    for ((g = 0; g < ${#LOADGEN_GLOBALS[@]}; g++)); do
        case ${LOADGEN_GLOBALS[g]} in
            --target) [ "${LOADGEN_GLOBALS[g + 1]}" = transponder ] || die "this script profiles transponder, not --target ${LOADGEN_GLOBALS[g + 1]}" ;;
            --target=*) [ "${LOADGEN_GLOBALS[g]#*=}" = transponder ] || die "this script profiles transponder, not ${LOADGEN_GLOBALS[g]}" ;;
        esac
    done
    positive "$DURATION" || die "--duration must be a positive number of seconds"
}
split_load_args
SCENARIO_NAME=${SCENARIO[0]}
[[ $SCENARIO_NAME =~ ^[a-z0-9-]+$ ]] || die "scenario name ${SCENARIO_NAME@Q} is not a word; profile.sh options go before it"
OUTPUT=${OUTPUT:-$ROOT/target/flamegraph-$SCENARIO_NAME.svg}

# --- CPUs -----------------------------------------------------------------------

# "0-3,6" -> "0 1 2 3 6"
expand_cpus() {
    local part out=() a z c parts
    IFS=, read -r -a parts <<< "$1"
    for part in "${parts[@]}"; do
        if [[ $part =~ ^([0-9]+)-([0-9]+)$ ]]; then
            a=${BASH_REMATCH[1]}; z=${BASH_REMATCH[2]}
            for ((c = a; c <= z; c++)); do out+=("$c"); done
        elif [[ $part =~ ^[0-9]+$ ]]; then
            out+=("$part")
        else
            return 1
        fi
    done
    echo "${out[*]}"
}

allowed=$(awk '/^Cpus_allowed_list:/ {print $2}' /proc/self/status)
read -r -a ALLOWED <<< "$(expand_cpus "$allowed")"
ncpu=${#ALLOWED[@]}
if [ -z "$SERVER_CPUS" ]; then
    if [ "$ncpu" -ge 2 ]; then
        half=$((ncpu / 2))
        SERVER_CPUS=$(IFS=,; echo "${ALLOWED[*]:half}")
        [ -n "$LOAD_CPUS" ] || LOAD_CPUS=$(IFS=,; echo "${ALLOWED[*]:0:half}")
    else
        SERVER_CPUS=$allowed
    fi
fi
LOAD_CPUS=${LOAD_CPUS:-$allowed}
expand_cpus "$SERVER_CPUS" >/dev/null || die "--server-cpus: bad CPU list ${SERVER_CPUS@Q}"
expand_cpus "$LOAD_CPUS" >/dev/null || die "--load-cpus: bad CPU list ${LOAD_CPUS@Q}"
read -r -a SERVER_CPU_LIST <<< "$(expand_cpus "$SERVER_CPUS")"
SHARDS=${SHARDS:-${#SERVER_CPU_LIST[@]}}

# --- tools ----------------------------------------------------------------------

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"
    elif command -v sudo >/dev/null 2>&1; then sudo "$@"
    else die "need root to run: $*"
    fi
}

apt_install() { # package...
    command -v apt-get >/dev/null 2>&1 || die "install $* with your package manager"
    say "installing $* (apt-get)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null ||
        { as_root apt-get update >/dev/null && as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y "$@" >/dev/null; } ||
        die "apt-get install $* failed"
}

PERF=${PERF:-perf}
if ! "$PERF" --version >/dev/null 2>&1; then
    apt_install linux-perf     # Debian; Ubuntu: linux-tools-$(uname -r)
    "$PERF" --version >/dev/null 2>&1 || die "perf does not run; see tuning/PROFILING.md"
fi
for tool in curl taskset timeout; do
    command -v "$tool" >/dev/null 2>&1 || apt_install "$([ "$tool" = curl ] && echo curl || echo util-linux)"
done

COLLAPSE=$TOOLS/bin/inferno-collapse-perf
FLAMEGRAPH=$TOOLS/bin/inferno-flamegraph
if [ ! -x "$COLLAPSE" ] || [ ! -x "$FLAMEGRAPH" ]; then
    if command -v inferno-collapse-perf >/dev/null 2>&1 && command -v inferno-flamegraph >/dev/null 2>&1; then
        COLLAPSE=$(command -v inferno-collapse-perf)
        FLAMEGRAPH=$(command -v inferno-flamegraph)
    else
        say "installing inferno $INFERNO_VERSION into $TOOLS (cargo install, once)"
        cargo install --quiet --locked --root "$TOOLS" inferno --version "$INFERNO_VERSION" ||
            die "cargo install inferno failed"
    fi
fi

# What perf may see. Root sees everything; otherwise perf_event_paranoid > 1
# allows only this user's own processes in user space.
EVENT=cpu-clock
paranoid=$(cat /proc/sys/kernel/perf_event_paranoid 2>/dev/null || echo 2)
if [ "$(id -u)" != 0 ] && [ "$paranoid" -gt 1 ]; then
    EVENT=cpu-clock:u
    say "kernel.perf_event_paranoid=$paranoid: user-space frames only (run as root, or sysctl kernel.perf_event_paranoid=1, for kernel frames)"
fi

# --- build ----------------------------------------------------------------------

BIN=$TARGET_DIR/release/transponder
if $BUILD; then
    say "building the release binary (cargo build --release)"
    cargo build --quiet --release --bin transponder --manifest-path "$ROOT/Cargo.toml"
fi
[ -x "$BIN" ] || die "$BIN not found (drop --no-build)"


# --- processes we start, and their cleanup ----------------------------------------

WORK=$(mktemp -d "${TMPDIR:-/tmp}/transponder-profile.XXXXXX")
SERVER_PID=""
PERF_PID=""
LOAD_PIDS=()

stop_pid() { # pid signal grace-seconds: signal, wait up to grace, then SIGKILL
    local pid=$1 sig=$2 grace=$3 i
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 0
    kill -s "$sig" "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then kill -s KILL "$pid" 2>/dev/null || true; fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$? p
    trap - EXIT INT TERM
    for p in "${LOAD_PIDS[@]}"; do stop_pid "$p" TERM 5; done
    stop_pid "$PERF_PID" INT 10
    # SIGTERM drains (clients get going_away); the server exits within its
    # drain timeout (2 s here) + 2 s.
    stop_pid "$SERVER_PID" TERM 8
    if $KEEP; then say "kept $WORK"; else rm -rf "$WORK"; fi
    exit "$rc"
}
trap cleanup EXIT
trap 'say interrupted; exit 130' INT
trap 'exit 143' TERM

# --- the server -------------------------------------------------------------------

ADMIN_TOKEN=profile-$RANDOM$RANDOM
mkdir "$WORK/data"
: >"$WORK/server.out"   # exists before the background server opens it
say "server: $SHARDS shard(s) on CPUs $SERVER_CPUS; load and perf on CPUs $LOAD_CPUS"
# Server and load on separate CPUs: shards pin to the CPUs of their affinity
# mask (core_affinity), so the load does not run on a shard's core.
TRANSPONDER_LOG=${TRANSPONDER_LOG:-warn} taskset -c "$SERVER_CPUS" "$BIN" serve \
    --host 127.0.0.1 --gateway-port 0 --api-port 0 --admin-port 0 \
    --data-dir "$WORK/data" --admin-token "$ADMIN_TOKEN" --shards "$SHARDS" \
    --drain-timeout-ms 2000 "${SERVER_ARGS[@]}" \
    >"$WORK/server.out" 2>"$WORK/server.err" &
SERVER_PID=$!

ready=""
for ((i = 0; i < 300; i++)); do
    ready=$(sed -n 's/^ready //p' "$WORK/server.out" | head -n 1)
    [ -n "$ready" ] && break
    kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$WORK/server.err" >&2; die "the server exited before its ready line"; }
    sleep 0.1
done
[ -n "$ready" ] || { tail -n 20 "$WORK/server.err" >&2; die "no ready line within 30 s"; }
# ready {"gateway":"ws://H:P/","api":"http://H:P/api/","admin":"http://H:P/","admin_token":"…"}
json_field() { sed -n "s/.*\"$1\":\"\\([^\"]*\\)\".*/\\1/p" <<< "$ready"; }
ADMIN_URL=$(json_field admin)
ADMIN_URL=${ADMIN_URL%/}
GATEWAY_URL=$(json_field gateway)
for url in "$ADMIN_URL" "$GATEWAY_URL"; do
    [[ $url =~ ^(http|ws)://127\.0\.0\.1:[0-9]+ ]] || die "ready line has a non-loopback or unparsable URL: $url"
done
say "server pid $SERVER_PID ready: admin $ADMIN_URL, gateway $GATEWAY_URL"

# --- load drivers ----------------------------------------------------------------
# Each starts the load in the background, appends what it started to LOAD_PIDS
# and sets LOAD_MAIN (the pid whose exit means the load is over). Everything
# runs under `timeout`, so the load ends by itself even if a driver hangs.

LOAD_MAIN=""
GRACE=120   # seconds past --duration before a load is killed (provisioning, connects)

start_loadgen() {
    say "load: transponder loadgen ${LOADGEN_GLOBALS[*]} ${SCENARIO[*]} (${DURATION} s)"
    taskset -c "$LOAD_CPUS" timeout --kill-after=10 $((DURATION + GRACE)) "$BIN" loadgen \
        --admin "$ADMIN_URL" --admin-token "$ADMIN_TOKEN" --duration "$DURATION" \
        "${LOADGEN_GLOBALS[@]}" "${SCENARIO[@]}" >"$WORK/load.out" 2>"$WORK/load.err" &
    LOAD_MAIN=$!
    LOAD_PIDS+=("$LOAD_MAIN")
}

# --- run --------------------------------------------------------------------------

# With dwarf, perf copies that many bytes of stack per sample (measured ~33 KB
# a sample with dwarf,32768): estimate for every shard busy, plus the store.
case $CALL_GRAPH in
    dwarf,*) per_sample=$((${CALL_GRAPH#dwarf,} + 1024)) ;;
    dwarf) per_sample=9216 ;;
    *) per_sample=512 ;;
esac
est_mb=$(((SHARDS + 1) * FREQ * (DURATION + 5) * per_sample / 1000000))
free_mb=$(df -Pk "$WORK" | awk 'NR == 2 {print int($4 / 1000)}')
say "perf.data: up to ~$est_mb MB in $WORK ($free_mb MB free)"
[ "$free_mb" -gt "$est_mb" ] || say "warning: may not fit; lower --freq or --duration, or set TMPDIR"

start_loadgen
if [ "$DELAY" -gt 0 ]; then sleep "$DELAY"; fi

say "perf record -e $EVENT -F $FREQ --call-graph $CALL_GRAPH -p $SERVER_PID (until the load ends)"
taskset -c "$LOAD_CPUS" "$PERF" record --quiet -e "$EVENT" -F "$FREQ" --call-graph "$CALL_GRAPH" \
    -p "$SERVER_PID" -o "$WORK/perf.data" >"$WORK/perf.out" 2>"$WORK/perf.err" &
PERF_PID=$!
start=$SECONDS

# The load ends by itself (its duration, or `timeout`).
load_rc=0
wait "$LOAD_MAIN" || load_rc=$?
for p in "${LOAD_PIDS[@]}"; do stop_pid "$p" TERM 5; done
LOAD_PIDS=()
kill -0 "$PERF_PID" 2>/dev/null || { cat "$WORK/perf.err" >&2; die "perf record stopped early"; }
stop_pid "$PERF_PID" INT 60
PERF_PID=""
[ ! -s "$WORK/perf.err" ] || sed 's/^/perf: /' "$WORK/perf.err" >&2
say "sampled $((SECONDS - start)) s"
kill -0 "$SERVER_PID" 2>/dev/null || { tail -n 20 "$WORK/server.err" >&2; die "the server died during the load"; }

tail -n 20 "$WORK/load.out" >&2
[ ! -s "$WORK/load.err" ] || tail -n 5 "$WORK/load.err" >&2
[ "$load_rc" = 0 ] || say "loadgen exited with status $load_rc (1: it saw losses or failed connections; 124: killed after --duration + $GRACE s)"

# --- flamegraph -------------------------------------------------------------------

say "perf script$($INLINE || echo ' --no-inline') | inferno-collapse-perf$($INLINE && echo ' (inlined frames: can take a minute)')"
inline_opt=(--no-inline)
$INLINE && inline_opt=()
"$PERF" script -i "$WORK/perf.data" "${inline_opt[@]}" 2>"$WORK/perf-script.err" |
    "$COLLAPSE" --kernel >"$WORK/folded.txt"
[ -s "$WORK/folded.txt" ] || die "no samples (is the server busy? see $WORK/perf.err)"

mkdir -p "$(dirname "$OUTPUT")"
title="transponder: ${SCENARIO[*]} (${DURATION} s, $SHARDS shard(s), $EVENT ${FREQ} Hz, $CALL_GRAPH)"
"$FLAMEGRAPH" --title "$title" --subtitle "$(git -C "$ROOT" describe --always --dirty 2>/dev/null || echo) $(date -u +%FT%TZ)" \
    --colors rust --width 1600 --minwidth 0.05 "$WORK/folded.txt" >"$OUTPUT.tmp"
mv "$OUTPUT.tmp" "$OUTPUT"

# Where the time went, as text. Folded counts are cpu-clock periods (ns).
#   thread: share of the samples per thread (shard-<i>-<n>, store-writer, ...)
#   self:   the innermost frame (often the kernel's, marked _[k])
#   user:   the innermost user-space frame (which call led into the kernel)
#   total:  transponder's own functions anywhere on the stack
awk '
    { n = $NF; sub(/ [0-9]+$/, ""); total += n
      k = split($0, f, ";"); thread[f[1]] += n; self[f[k]] += n
      for (i = k; i >= 2; i--) if (f[i] !~ /_\[k\]$/) { user[f[i]] += n; break }
      delete seen
      for (i = 2; i <= k; i++) if (f[i] ~ /^transponder::/ && !(f[i] in seen)) { seen[f[i]] = 1; incl[f[i]] += n } }
    function top(label, a, n,    cmd, x) {
      cmd = "sort -k2 -rn | head -n " n
      for (x in a) printf "%-6s %6.2f%%  %s\n", label, 100 * a[x] / total, x | cmd
      close(cmd)
    }
    END {
      printf "on-CPU time sampled: %.1f s\n", total / 1e9
      top("thread", thread, 8); top("self", self, 10); top("user", user, 10); top("total", incl, 15)
    }' "$WORK/folded.txt" | cut -c 1-160 >"$WORK/summary.txt"
cat "$WORK/summary.txt" >&2
say "wrote $OUTPUT"
