#!/usr/bin/env bash
# apt_install WHAT PACKAGE...: install Debian packages when we are allowed to (root, or sudo
# without a password); never fails. Sourced by ensure-chromium.sh and ensure-fonts.sh.
apt_install() {
    local what=$1; shift
    if ! command -v apt-get >/dev/null 2>&1; then
        echo "$what: no apt-get; the tests that need $* will be skipped" >&2
        return 0
    fi
    local sudo=""
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo -n"; else
            echo "$what: not root and no sudo; missing: $* (the tests that need them will be skipped)" >&2
            return 0
        fi
    fi
    echo "$what: installing $* (apt-get)" >&2
    if ! { $sudo apt-get install -y -q "$@" >/dev/null 2>&1 ||
           { $sudo apt-get update -q >/dev/null 2>&1 && $sudo apt-get install -y -q "$@" >/dev/null 2>&1; }; }; then
        echo "$what: apt-get could not install $*; the tests that need them will be skipped" >&2
    fi
    return 0
}
