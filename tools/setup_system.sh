#!/usr/bin/env bash
# Best-effort system packages that some tests use: OpenSSH's server (remote-target tests start
# a throw-away sshd on 127.0.0.1) and Chromium (the report.html test opens it headless).
# Only as root with apt-get, only what is missing; failure is not fatal: those tests then skip
# with the reason. Set EDGEKD_NO_SYSTEM_PACKAGES=1 to skip this step.
set -u
[ "${EDGEKD_NO_SYSTEM_PACKAGES:-0}" = "1" ] && exit 0
[ "$(id -u)" = "0" ] || exit 0
command -v apt-get >/dev/null 2>&1 || exit 0
want=()
[ -x /usr/sbin/sshd ] || want+=(openssh-server)
command -v chromium >/dev/null 2>&1 || [ -x /usr/bin/chromium ] || want+=(chromium)
[ ${#want[@]} -eq 0 ] && exit 0
echo "edgekd setup: installing system packages for the tests: ${want[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
if ! { apt-get update -qq >/dev/null && apt-get install -y -qq --no-install-recommends "${want[@]}" >/dev/null; }; then
  echo "edgekd setup: could not install ${want[*]}; the tests that need them will skip" >&2
fi
exit 0
