#!/usr/bin/env bash
# Install Debian's chromium for the browser test when it is missing and we are allowed to.
# Never fails the build: without a browser, tests/test_browser.py skips and prints why.
set -u
if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then
    exit 0
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-chromium: no chromium and no apt-get; the browser test will be skipped" >&2
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "ensure-chromium: not root and no sudo; the browser test will be skipped" >&2
        exit 0
    fi
fi
echo "ensure-chromium: installing Debian's chromium for the browser test (apt-get)" >&2
if ! { $SUDO apt-get install -y -q chromium >/dev/null 2>&1 ||
       { $SUDO apt-get update -q >/dev/null 2>&1 &&
         $SUDO apt-get install -y -q chromium >/dev/null 2>&1; }; }; then
    echo "ensure-chromium: apt-get could not install chromium; the browser test will be skipped" >&2
fi
exit 0
