#!/usr/bin/env bash
# Install the handwriting fonts of `tinymnist bench handwriting` (Debian packages) when they are
# missing and we are allowed to. Never fails the build: without them, the benchmark says so and
# its tests skip.
set -u
PACKAGES="fonts-bwht fonts-breip fonts-comic-neue fonts-dancingscript fonts-dkg-handwriting fonts-ecolier-court
fonts-femkeklaver fonts-humor-sans fonts-kaushanscript fonts-kiloji fonts-klee fonts-kristi fonts-rufscript fonts-seto"
if ! command -v dpkg-query >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
    echo "ensure-fonts: no apt-get; the handwriting benchmark's tests will be skipped" >&2
    exit 0
fi
MISSING=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $p"
done
[ -z "$MISSING" ] && exit 0
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
        echo "ensure-fonts: not root and no sudo; missing:$MISSING (the handwriting tests will be skipped)" >&2
        exit 0
    fi
fi
echo "ensure-fonts: installing the handwriting fonts (apt-get):$MISSING" >&2
# shellcheck disable=SC2086
if ! { $SUDO apt-get install -y -q $MISSING >/dev/null 2>&1 ||
       { $SUDO apt-get update -q >/dev/null 2>&1 && $SUDO apt-get install -y -q $MISSING >/dev/null 2>&1; }; }; then
    echo "ensure-fonts: apt-get could not install$MISSING; the handwriting tests will be skipped" >&2
fi
exit 0
