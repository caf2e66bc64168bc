# shellcheck shell=bash
# Helpers shared by the scripts under scripts/: sourced, not run.
#
#   log MESSAGE           a time-stamped line on stderr, named after the script
#   die MESSAGE           log it as an error and exit 1
#   as_root CMD...        run CMD as root (sudo when not root)
#   apt_ensure PKG...     install the Debian packages that are missing (idempotent)
#   build_bins PROFILE    build every binary of the workspace with its eBPF programs
#                         (installs BUILD_APT_PACKAGES and the eBPF toolchain first)
#   set_version SEP       set version and commit to the checkout's; export
#                         SOURCE_DATE_EPOCH
#   train_venv            the training virtualenv (pinned XGBoost), made if missing
#   fit_decision LOADTEST MODEL CAPTURES ATTACKS DIR
#                         DIR/scorer.toml: MODEL with the decision fitted on
#                         CAPTURES' fit windows, ATTACKS injected

log() { printf '%s %s: %s\n' "$(date +%H:%M:%S)" "${0##*/}" "$*" >&2; }
die() { log "error: $*"; exit 1; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_ensure() {
  local p missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  # Package-started services are refused in containers: the scripts start
  # what they need themselves.
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

# What compiling the workspace needs from Debian: protoc for the gRPC and
# Lance protobufs, cmake and the headers for librdkafka (SASL, TLS, zlib) and
# curl, fontconfig for the benches' plots.
BUILD_APT_PACKAGES=(protobuf-compiler cmake pkg-config build-essential libcurl4-openssl-dev libsasl2-dev
  libssl-dev zlib1g-dev libfontconfig1-dev)

# The one selection of what to build: another would unify the dependencies'
# features differently and rebuild them. A missing eBPF toolchain is an
# error, not a silent /proc-only collector.
build_bins() {
  local repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  apt_ensure "${BUILD_APT_PACKAGES[@]}"
  "$repo/scripts/ebpf-toolchain"
  log "building the binaries (${1:?profile} profile)"
  (cd "$repo" && OUTLIER_REQUIRE_EBPF=1 cargo build --profile "$1" --workspace --bins -q)
}

# The workspace version, the last commit's time and its id
# (0.1.0+git20261201.020000.abcdef0, .dirty with uncommitted changes), so
# every commit's artifacts sort after the previous one's and the same commit
# builds the same ones. SEP joins version and build: + for Debian, - where +
# is not allowed (OCI tags).
set_version() {
  local sep=${1:?separator} repo cargo_version
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  cargo_version="$(sed -n '/^\[workspace.package\]/,/^\[/s/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml")"
  SOURCE_DATE_EPOCH="$(git -C "$repo" log -1 --format=%ct 2>/dev/null || date +%s)"
  export SOURCE_DATE_EPOCH
  commit="$(git -C "$repo" rev-parse --short=7 HEAD 2>/dev/null || echo unknown)"
  version="$cargo_version${sep}git$(date -u -d "@$SOURCE_DATE_EPOCH" +%Y%m%d.%H%M%S).$commit"
  if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
    version="$version.dirty"
  fi
}

# The training virtualenv: project-local, pinned XGBoost (idempotent).
train_venv() {
  local repo venv
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  venv="$repo/.outlier/venv-train"
  if ! "$venv/bin/python" -c 'import xgboost' 2>/dev/null; then
    python3 -m venv "$venv"
    "$venv/bin/python" -m pip install -q -r "$repo/scripts/train-requirements.txt"
  fi
}

# A model's decision fitted as the shipped one is (docs/detection.md): the
# captures' fit windows (49%..70%) scored with ATTACKS injected, then
# scripts/fit_decision.py.
fit_decision() {
  local loadtest=$1 model=$2 captures=$3 attacks=$4 dir=$5 repo
  repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  printf '[scoring.classifier]\nmodel = "%s"\n' "$model" > "$dir/fit.toml"
  "$loadtest" eval --captures "$captures" --until 0.7 --split 0.7 --attacks "$attacks" \
    --per-file 150 --scorer-config "$dir/fit.toml" --outcomes "$dir/fit.tsv" >/dev/null
  { printf '[scoring.classifier]\nmodel = "%s"\n\n' "$model"
    python3 "$repo/scripts/fit_decision.py" "$dir/fit.tsv"; } > "$dir/scorer.toml"
}
