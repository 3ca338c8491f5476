#!/usr/bin/env bash
# Real Apptainer for the project's own tests, on a machine that lacks it (test plumbing only:
# nothing of this goes into the image users get).
#
#   containers/test/apptainer-env.sh [--bind HOST_PATH]... COMMAND [ARG...]
#
# Runs COMMAND (through `bash -c`, so it may be a command line) as an ordinary user, with
# `apptainer` on PATH:
#   - if `apptainer` is already on PATH here, COMMAND simply runs here (as whoever called);
#   - otherwise (needs root): a Debian sid root holding apptainer 1.4 (Debian's bookworm has none,
#     and sid's needs glibc >= 2.38, so it cannot go on the host) is built once with debootstrap
#     into $UMLIP_APPTAINER_CACHE (default ~/.cache/umlip-driver/apptainer, outside the work tree),
#     with a user `builder` (uid 1000, /etc/subuid and /etc/subgid ranges for --fakeroot builds).
#     COMMAND then runs inside that root, entered with `unshare -m` + `pivot_root` (Apptainer
#     refuses a plain chroot), /proc, /sys and /dev mounted, as `builder` (Apptainer run as root
#     is refused by this sandbox: one capability is missing), with HOME=/home/builder.
#     Each --bind HOST_PATH (and the current directory) is bind-mounted read-only at the same path
#     inside the root; the command starts in the current directory. Write results under
#     $HOME (= $UMLIP_APPTAINER_CACHE/root/home/builder seen from the host).
#   - /dev/fuse is made mode 0666 so that squashfuse can mount a SIF for the user (without it
#     Apptainer unpacks the image into a temporary sandbox at every run).
#
# Environment: UMLIP_APPTAINER_CACHE (the root's folder), DEBIAN_MIRROR (default: the first
# `URIs:` of /etc/apt/sources.list.d/debian.sources, else http://deb.debian.org/debian).
#   containers/test/apptainer-env.sh --print-home     prints the user's HOME as seen from here
set -euo pipefail

cache=${UMLIP_APPTAINER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/umlip-driver/apptainer}
root=$cache/root
user=builder

mirror() {
    if [ -n "${DEBIAN_MIRROR:-}" ]; then echo "$DEBIAN_MIRROR"; return; fi
    local uri
    uri=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    echo "${uri:-http://deb.debian.org/debian}"
}

build_root() {
    [ -f "$root/.umlip-apptainer-root" ] && return 0
    command -v debootstrap >/dev/null || {
        echo "apptainer-env: installing debootstrap (apt-get)" >&2
        apt-get install -y -qq debootstrap >/dev/null
    }
    mkdir -p "$cache"
    rm -rf "$root.tmp"
    echo "apptainer-env: building the Apptainer root in $root (debootstrap sid, 2-3 minutes, ~400 MB)" >&2
    local start=$SECONDS
    debootstrap --variant=minbase \
        --include=apptainer,squashfs-tools,squashfuse,uidmap,fakeroot,debootstrap,ca-certificates \
        sid "$root.tmp" "$(mirror)" >"$cache/debootstrap.log" 2>&1 \
        || { tail -20 "$cache/debootstrap.log" >&2; exit 1; }
    chroot "$root.tmp" useradd --create-home --uid 1000 --shell /bin/bash "$user"
    echo "$user:100000:65536" >"$root.tmp/etc/subuid"
    echo "$user:100000:65536" >"$root.tmp/etc/subgid"
    touch "$root.tmp/.umlip-apptainer-root"
    mv "$root.tmp" "$root"
    echo "apptainer-env: root ready in $((SECONDS - start)) s" >&2
}

if [ "${1:-}" = --print-home ]; then
    if command -v apptainer >/dev/null; then echo "$HOME"; else echo "$root/home/$user"; fi
    exit 0
fi

binds=()
while [ "${1:-}" = --bind ]; do
    binds+=("$(realpath "$2")")
    shift 2
done
if [ "$#" -lt 1 ]; then
    echo "usage: $0 [--bind HOST_PATH]... COMMAND [ARG...]" >&2
    exit 2
fi

if command -v apptainer >/dev/null; then
    exec bash -c "$*"
fi
if [ "$(id -u)" != 0 ]; then
    echo "apptainer-env: apptainer is not installed and making a root for it needs root" >&2
    exit 2
fi
build_root
[ -e /dev/fuse ] && chmod 666 /dev/fuse
binds+=("$(pwd -P)")
export UMLIP_ROOT=$root UMLIP_USER=$user UMLIP_CWD=$(pwd -P) UMLIP_CMD="$*"
UMLIP_BINDS=$(printf '%s\n' "${binds[@]}")
export UMLIP_BINDS

# A private mount namespace: the root bind-mounted onto itself (pivot_root needs a mount point;
# Apptainer looks its own mount up in /proc/self/mountinfo), pseudo file systems, read-only binds.
exec unshare -m --propagation private bash -c '
set -eu
r=$UMLIP_ROOT
mount --bind "$r" "$r"
mount -t proc proc "$r/proc"
mount --rbind /sys "$r/sys"
mount --rbind /dev "$r/dev"
mount -t tmpfs -o mode=1777 tmpfs "$r/dev/shm" 2>/dev/null || true
cp /etc/hosts /etc/resolv.conf "$r/etc/" 2>/dev/null || true
while IFS= read -r p; do
    [ -n "$p" ] || continue
    if [ -d "$p" ]; then mkdir -p "$r$p"; else mkdir -p "$(dirname "$r$p")"; touch "$r$p"; fi
    mount --rbind "$p" "$r$p"
    mount -o remount,bind,ro "$r$p" 2>/dev/null || true
done <<<"$UMLIP_BINDS"
cd "$r"
mkdir -p .old-root
pivot_root . .old-root
cd /
umount -l /.old-root
rmdir /.old-root 2>/dev/null || true
cd "$UMLIP_CWD"
exec setpriv --reuid="$UMLIP_USER" --regid="$UMLIP_USER" --init-groups \
    env -i HOME="/home/$UMLIP_USER" USER="$UMLIP_USER" LOGNAME="$UMLIP_USER" \
    PATH=/usr/local/bin:/usr/bin:/bin:/usr/local/sbin:/usr/sbin:/sbin LANG=C.UTF-8 ${APPTAINER_ENV_PASS:-} \
    bash -c "$UMLIP_CMD"
'
