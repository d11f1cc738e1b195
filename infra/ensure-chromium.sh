#!/usr/bin/env bash
# The review page is tested end to end in headless Chromium (Debian's chromium and its
# chromedriver, driven by Selenium). Install them when missing.
set -euo pipefail
if command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "chromium and chromedriver are missing: apt-get install chromium chromium-driver" >&2
  exit 1
fi
echo "installing Chromium and chromedriver (Debian packages) for the review page test ..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq chromium chromium-driver >/dev/null
