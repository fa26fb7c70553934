#!/usr/bin/env bash
# Runs fuzz targets under libFuzzer, one after the other: `make fuzz` calls this.
#
#   fuzz/run.sh BINARY OUTDIR [TARGET...]     (no TARGET: every target)
#
# Environment:
#   FUZZ_RUNS     inputs per target (default 1000000)
#   FUZZ_TIMEOUT  seconds one input may take before it counts as a hang (default 10)
#   FUZZ_RSS_MB   resident memory cap, checked by libFuzzer (default 2048)
#   FUZZ_AS_MB    address-space cap of the process, by prlimit (default 8192): an allocation
#                 past it fails, which aborts the process and keeps the input
#   FUZZ_SEED     libFuzzer's random seed (default 1, so a run repeats)
#   FUZZ_MAX_LEN  longest input, instead of each target's own
#
# For each target, OUTDIR/TARGET/ gets corpus/ (inputs that found new coverage, kept across
# runs), seeds/ (seeds made in code and real files of this machine), crashes/ and log.
# OUTDIR/summary.tsv gets one line per target: name, inputs run, seconds, result.
set -uo pipefail

bin=$1
out=$2
shift 2
here=$(cd "$(dirname "$0")" && pwd)
runs=${FUZZ_RUNS:-1000000}
timeout=${FUZZ_TIMEOUT:-10}
rss=${FUZZ_RSS_MB:-2048}
as=${FUZZ_AS_MB:-8192}
seed=${FUZZ_SEED:-1}
cache=${STRATUM_CACHE:-$HOME/.cache/stratum}

# name and max_len of every target, from the binary itself.
mapfile -t table < <(STRATUM_FUZZ_LIST=1 "$bin" 2>/dev/null)
if [ ${#table[@]} -eq 0 ]; then
    echo "fuzz/run.sh: $bin lists no targets" >&2
    exit 2
fi
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    for line in "${table[@]}"; do targets+=("${line%% *}"); done
fi

# The first modules directory found: the running kernel's, else a cached Debian root's.
modules_dir() {
    local d
    for d in "/lib/modules/$(uname -r)" "$cache"/rootfs-*/usr/lib/modules/*; do
        [ -f "$d/modules.dep" ] && { echo "$d"; return; }
    done
}

# Real files of this machine as seeds for target $1 in directory $2.
real_seeds() {
    local t=$1 dir=$2 f d
    case $t in
        cmdline) cp /proc/cmdline "$dir/proc-cmdline" 2>/dev/null ;;
        mountinfo) cp /proc/self/mountinfo "$dir/proc-mountinfo" 2>/dev/null ;;
        grubenv)
            for f in /boot/grub/grubenv /boot/efi/EFI/*/grubenv; do
                [ -f "$f" ] && cp "$f" "$dir/$(echo "$f" | tr / _)"
            done ;;
        archive)
            for f in /boot/initrd.img-* /boot/initramfs-*.img; do
                [ -f "$f" ] && head -c 65536 "$f" > "$dir/$(basename "$f")"
            done ;;
        modules)
            d=$(modules_dir)
            [ -n "$d" ] && python3 "$here/modules-seeds.py" "$d" "$dir" ;;
        modinfo)
            d=$(modules_dir)
            [ -n "$d" ] || return 0
            # Small real modules, whole (the section headers are at the end of the file).
            find "$d/kernel" -name '*.ko*' -size -6k 2>/dev/null | sort | head -n 20 |
                while read -r f; do
                    case $f in
                        *.xz) xz -dc "$f" ;;
                        *.zst) zstd -dc "$f" ;;
                        *.gz) gzip -dc "$f" ;;
                        *) cat "$f" ;;
                    esac 2>/dev/null | head -c 16384 > "$dir/$(basename "$f")"
                done ;;
    esac
    return 0
}

mkdir -p "$out"
summary="$out/summary.tsv"
: > "$summary"
failed=0
for t in "${targets[@]}"; do
    max_len=
    for line in "${table[@]}"; do
        [ "${line%% *}" = "$t" ] && max_len=${line#* }
    done
    if [ -z "$max_len" ]; then
        echo "fuzz/run.sh: no target $t" >&2
        exit 2
    fi
    max_len=${FUZZ_MAX_LEN:-$max_len}
    dir="$out/$t"
    mkdir -p "$dir/corpus" "$dir/seeds" "$dir/crashes"
    real_seeds "$t" "$dir/seeds"
    committed=()
    [ -d "$here/seeds/$t" ] && committed=("$here/seeds/$t")
    echo "== $t: $runs inputs (max $max_len bytes, ${timeout}s and ${rss} MiB each at most)"
    start=$(date +%s.%N)
    TMPDIR="$dir" STRATUM_FUZZ_TARGET=$t STRATUM_FUZZ_SEEDS="$dir/seeds" \
        prlimit --as=$((as << 20)) -- "$bin" \
        -runs="$runs" -max_len="$max_len" -timeout="$timeout" -rss_limit_mb="$rss" \
        -seed="$seed" -print_final_stats=1 -artifact_prefix="$dir/crashes/" \
        "$dir/corpus" "$dir/seeds" "${committed[@]}" > "$dir/log" 2>&1
    rc=$?
    secs=$(awk "BEGIN { print $(date +%s.%N) - $start }")
    rm -rf "$dir"/stratum-fuzz-*
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$dir/log" | tail -n 1)
    if [ $rc -eq 0 ]; then result=ok; else result="FAILED (exit $rc, see $dir/log)"; failed=1; fi
    printf '%s\t%s\t%.0f\t%s\n' "$t" "${execs:-?}" "$secs" "$result" | tee -a "$summary"
    [ $rc -eq 0 ] || tail -n 30 "$dir/log"
done
echo "== summary (target, inputs, seconds, result): $summary"
column -t -s $'\t' "$summary"
exit $failed
