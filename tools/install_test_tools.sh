#!/usr/bin/env bash
# Tools some tests need beyond Python: node packages (the Khronos glTF Validator, pinned in tools/web/package-lock.json)
# and a Chromium for the browser test of report.html. Installs what is missing where it can (Debian's chromium
# needs root and apt); never fails the caller: what it cannot get, it says, and those tests are skipped with a reason.
cd "$(dirname "$0")/.." || exit 0
if command -v npm >/dev/null 2>&1; then
  npm ci --prefix tools/web --no-audit --no-fund --loglevel=error >/dev/null 2>&1 \
    || echo "install_test_tools: npm ci in tools/web failed; the glTF validator test will be skipped"
else
  echo "install_test_tools: node/npm not found; the glTF validator test will be skipped"
fi
if ! command -v chromium >/dev/null 2>&1 && ! command -v chromium-browser >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/dev/null 2>&1 \
      || echo "install_test_tools: apt-get install chromium failed; the browser test will be skipped"
  else
    echo "install_test_tools: no chromium and no root apt-get; the browser test will be skipped"
  fi
fi
exit 0
