#!/usr/bin/env bash
# Install the handwriting fonts of `tinymnist bench handwriting` (Debian packages) when they are
# missing and we are allowed to. Never fails the build: without them, the benchmark says so and
# its tests skip.
set -u
PACKAGES="fonts-bwht fonts-breip fonts-comic-neue fonts-dancingscript fonts-dkg-handwriting fonts-ecolier-court
fonts-femkeklaver fonts-humor-sans fonts-kaushanscript fonts-kiloji fonts-klee fonts-kristi fonts-rufscript fonts-seto"
MISSING=""
for p in $PACKAGES; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || MISSING="$MISSING $p"
done
[ -z "$MISSING" ] && exit 0
. "$(dirname "$0")/apt-install.sh"
# shellcheck disable=SC2086
apt_install ensure-fonts $MISSING
exit 0
