#!/usr/bin/env bash
# Install Debian's chromium for the browser test when it is missing and we are allowed to.
# Never fails the build: without a browser, tests/test_browser.py skips and prints why.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
. "$(dirname "$0")/apt-install.sh"
apt_install ensure-chromium chromium
exit 0
