#!/usr/bin/env bash
# System libraries the build links against: OpenSSL (libgit2's https transport, for memory
# repos synced with a remote) found through pkg-config. Installs them with apt-get on a
# Debian/Ubuntu machine that lacks them; elsewhere says what to install.
set -euo pipefail

if pkg-config --exists openssl 2>/dev/null; then
  exit 0
fi
echo "[build-deps] OpenSSL development files are missing: installing libssl-dev and pkg-config" >&2
if command -v apt-get >/dev/null; then
  sudo_cmd=()
  [[ "$(id -u)" == 0 ]] || sudo_cmd=(sudo)
  "${sudo_cmd[@]}" apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive "${sudo_cmd[@]}" apt-get install -y -qq libssl-dev pkg-config >&2
else
  echo "[build-deps] install OpenSSL's development files and pkg-config (e.g. libssl-dev) and run again" >&2
  exit 1
fi
