#!/usr/bin/env bash
# Installs everything the tests need (Debian packages + a virtualenv) and runs them.
#   bash scripts/test.sh [pytest args...]
# Set IDP_BRIDGE_TEST_DATABASE_URL=postgresql+psycopg://postgres@127.0.0.1:5432/test to run on PostgreSQL.
# The tests get their own virtualenv (.venv-test, or $IDP_BRIDGE_TEST_VENV), so running them never changes the
# README's .venv that a demo may be running from.
set -euo pipefail
cd "$(dirname "$0")/.."

# Independent SAML peers and tools the tests use: the xmlsec1 command, Debian's chromium (+ a CJK font), SoftHSM2,
# and nginx (the shipped reverse-proxy recipe is tested for real; the tests start their own nginx processes).
missing=()
command -v xmlsec1 >/dev/null 2>&1 || missing+=(xmlsec1)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)
command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing+=(nginx)
# a CJK font, or chromium draws the zh-CN pages (and their screenshots) as boxes
fc-list :lang=zh 2>/dev/null | grep -q . || missing+=(fonts-wqy-microhei)
if [ ${#missing[@]} -gt 0 ]; then
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  $sudo_cmd env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

venv="${IDP_BRIDGE_TEST_VENV:-.venv-test}"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e ".[test]"

"$venv/bin/python" -m pytest "$@"
