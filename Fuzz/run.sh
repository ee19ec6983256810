#!/usr/bin/env bash
# Builds the libFuzzer targets in Fuzz/ with swiftc and runs each one for a fixed time.
#
#   Fuzz/run.sh [SECONDS_PER_TARGET]      (default 60)
#
# Each fuzzer is compiled from its Fuzz/<Target>/main.swift together with Sources/WebSocketCodec/*.swift
# (and the C targets the codec imports, compiled with clang) into .build-fuzz/<Target>, with
# -sanitize=fuzzer,address (fuzzer alone if ASan does not link).
# The targets run one after the other, never in parallel, on a copy of their seed corpus in
# .build-fuzz/corpus/ so new inputs stay out of git. Crash inputs go to .build-fuzz/artifacts/<Target>/.
# The exit status is non-zero if a build fails or any target crashes, times out or runs out of memory.
#
# Environment:
#   SWIFTC                                 compiler (default: swiftc on PATH, else /opt/swift/usr/bin/swiftc)
#   CLANG                                  C compiler (default: the clang next to SWIFTC)
#   FUZZ_SANITIZERS                        e.g. "fuzzer" to build without ASan (default: fuzzer,address)
#   FUZZ_TARGETS                           space-separated subset
#                                          (default: "HTTPRequestFuzzer FrameDecoderFuzzer ClientHandshakeFuzzer
#                                          SessionFuzzer HTTPResponseFuzzer")
#   FUZZ_ARGS                              extra libFuzzer flags, e.g. "-seed=1 -max_len=8192"
set -uo pipefail

seconds="${1:-60}"
if ! [[ "$seconds" =~ ^[0-9]+$ ]] || [ "$seconds" -lt 1 ]; then
    echo "usage: $0 [seconds per target, default 60]" >&2
    exit 2
fi

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
out=".build-fuzz"
targets="${FUZZ_TARGETS:-HTTPRequestFuzzer FrameDecoderFuzzer ClientHandshakeFuzzer SessionFuzzer HTTPResponseFuzzer}"

if [ -n "${SWIFTC:-}" ]; then
    swiftc="$SWIFTC"
elif command -v swiftc >/dev/null 2>&1; then
    swiftc="$(command -v swiftc)"
else
    swiftc=/opt/swift/usr/bin/swiftc
fi
clang="${CLANG:-$(dirname "$swiftc")/clang}"

corpus_name() {
    case "$1" in
        HTTPRequestFuzzer) echo http ;;
        FrameDecoderFuzzer) echo frames ;;
        ClientHandshakeFuzzer) echo client ;;
        SessionFuzzer) echo session ;;
        HTTPResponseFuzzer) echo response ;;
        *) echo "unknown target $1" >&2; return 1 ;;
    esac
}

# The Swift runtime's crash backtracer would otherwise start a helper that outlives the fuzzer
# and keeps its output pipe open; libFuzzer and ASan print the stack trace themselves.
export SWIFT_BACKTRACE=enable=no
export ASAN_OPTIONS="${ASAN_OPTIONS:-abort_on_error=0:symbolize=1}"

mkdir -p "$out/logs"
codec_sources=(Sources/WebSocketCodec/*.swift)

# The C system modules the codec imports (COpenSSL for SHA-1, ...): each Sources/<Module>/module.modulemap
# directory goes on the include path and each of its `link "x"` lines becomes -lx
# (for COpenSSL: -I Sources/COpenSSL -lssl -lcrypto). The C targets with sources it imports (CBase64)
# carry their module map in Sources/<Module>/include, which goes on the include path; build() compiles
# their .c files.
module_flags=()
c_targets=()
for module in $(sed -n 's/^[[:space:]]*import[[:space:]]\{1,\}\([A-Za-z_][A-Za-z0-9_]*\).*/\1/p' "${codec_sources[@]}" | sort -u); do
    if [ -f "Sources/$module/module.modulemap" ]; then
        module_flags+=(-I "Sources/$module")
        for lib in $(sed -n 's/^[[:space:]]*link[[:space:]]*"\([^"]*\)".*/\1/p' "Sources/$module/module.modulemap"); do
            module_flags+=("-l$lib")
        done
    elif [ -f "Sources/$module/include/module.modulemap" ]; then
        module_flags+=(-I "Sources/$module/include")
        c_targets+=("$module")
    elif [ -d "Sources/$module" ]; then
        echo "the codec imports $module, a target with sources but no include/module.modulemap" >&2
        exit 1
    fi
done
echo "== codec C modules: ${module_flags[*]:-none}"

build() { # target sanitizers
    local objects=() module source object
    {
        # fuzzer-no-link: the C code gets coverage and ASan checks; libFuzzer's main comes with swiftc's link.
        for module in "${c_targets[@]}"; do
            for source in Sources/"$module"/*.c; do
                object="$out/obj/$1/$module-$(basename "$source" .c).o"
                mkdir -p "$(dirname "$object")"
                "$clang" -O2 -g -fsanitize="${2/fuzzer/fuzzer-no-link}" -I "Sources/$module/include" \
                    -c "$source" -o "$object" || return 1
                objects+=("$object")
            done
        done
        "$swiftc" -parse-as-library -module-name "$1" -O -g -sanitize="$2" \
            "${codec_sources[@]}" "Fuzz/$1/main.swift" "${objects[@]}" \
            "${module_flags[@]}" \
            -o "$out/$1"
    } >"$out/logs/$1.build.log" 2>&1
}

sanitizers="${FUZZ_SANITIZERS:-fuzzer,address}"
for target in $targets; do
    corpus_name "$target" >/dev/null || exit 2
    echo "== build $target (-sanitize=$sanitizers)"
    if ! build "$target" "$sanitizers"; then
        if [ -z "${FUZZ_SANITIZERS:-}" ]; then
            echo "   build with -sanitize=fuzzer,address failed, retrying with -sanitize=fuzzer only"
            sanitizers=fuzzer
            build "$target" "$sanitizers" || { cat "$out/logs/$target.build.log" >&2; echo "build of $target failed" >&2; exit 1; }
        else
            cat "$out/logs/$target.build.log" >&2
            echo "build of $target failed" >&2
            exit 1
        fi
    fi
    grep -E 'error:|warning:' "$out/logs/$target.build.log" | grep -v 'ld.gold: warning: Cannot export local symbol' || true
done

status=0
summary=()
for target in $targets; do
    name="$(corpus_name "$target")"
    corpus="$out/corpus/$name"
    artifacts="$out/artifacts/$target"
    log="$out/logs/$target.log"
    rm -rf "$corpus" "$artifacts"
    mkdir -p "$corpus" "$artifacts"
    cp Fuzz/corpus/"$name"/* "$corpus"/
    # Minimized crash inputs from earlier runs: they replay first, so an unfixed bug fails the run at once.
    for regression in Fuzz/corpus/regressions/"$name"-*; do
        [ -f "$regression" ] && cp "$regression" "$corpus"/
    done

    echo "== run $target for ${seconds}s on $corpus (log: $log)"
    # shellcheck disable=SC2086
    "./$out/$target" "$corpus" \
        -max_total_time="$seconds" -print_final_stats=1 -timeout=10 \
        -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} >"$log" 2>&1
    rc=$?

    executions="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)"
    if [ -z "$executions" ]; then
        # No final stats (killed hard): fall back to the last progress line, "#N ...".
        executions="$(sed -n 's/^#\([0-9]*\).*/\1/p' "$log" | tail -1)"
    fi
    executions="${executions:-unknown}"
    crash_inputs="$(sed -n 's/.*Test unit written to //p' "$log")"

    if [ "$rc" -eq 0 ]; then
        line="$target: ok, $executions executions in ${seconds}s, corpus $(find "$corpus" -type f | wc -l) inputs"
    else
        status=1
        line="$target: FAILED (exit $rc) after $executions executions"
        echo "---- last lines of $log"
        grep -v '^\(#\|INFO:\|NEW_FUNC\)' "$log" | tail -40
        echo "----"
        if [ -n "$crash_inputs" ]; then
            while IFS= read -r path; do line="$line"$'\n'"    crash input: $path"; done <<<"$crash_inputs"
        fi
    fi
    echo "$line"
    summary+=("$line")
done

echo "== summary"
printf '%s\n' "${summary[@]}"
exit "$status"
