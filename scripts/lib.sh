# Shared by scripts/run and scripts/test: install what is missing, build.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

# Debian packages the build and the tests need; installed only when missing.
ensure_packages() {
    local missing=()
    for pkg in "$@"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "==> installing ${missing[*]}"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -q
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${missing[@]}"
    fi
}

ensure_swift() {
    if ! command -v swift >/dev/null 2>&1; then
        if [ -x /opt/swift/usr/bin/swift ]; then
            export PATH="/opt/swift/usr/bin:$PATH"
        else
            echo "swift is not installed: install a Swift 6 toolchain (https://www.swift.org/install/linux/) and re-run" >&2
            exit 1
        fi
    fi
}

build_release() {
    ensure_packages pkg-config liblua5.4-dev libssl-dev zlib1g-dev libhiredis-dev
    ensure_swift
    echo "==> swift build -c release --product wsgate"
    swift build -c release --product wsgate
}
