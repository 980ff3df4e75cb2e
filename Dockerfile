# syntax=docker/dockerfile:1
# The image every Ray pod of k8s/ runs: Ray 2.60.0 (what pyproject.toml pins), the project's
# pinned dependencies and zerotune itself, so `zerotune sweep run` works on the head and
# Ray Train workers import `trainer` without a runtime_env upload.
#
#   docker build -t ghcr.io/zerotune/zerotune:0.1.0-ray2.60.0 .
#   docker build --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu -t zerotune:dev .   # cpu-dev
#
# Python 3.11 (pyproject requires >=3.11,<3.12) and a CUDA 12 build of Ray; the tag must keep
# Ray at 2.60.0, or driver and cluster disagree (RayCluster.spec.rayVersion is 2.60.0 too).
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu128
FROM ${RAY_IMAGE}

# Extras baked in: `demo` ships the offline model and corpus the sample RayJob uses.
ARG ZEROTUNE_EXTRAS=demo

# The base image's user is `ray` (uid 1000, gid 100), which the manifests run as.
USER ray
# Created by `ray`, not by WORKDIR (root), so pip can write build metadata next to the source.
RUN mkdir -p /home/ray/zerotune
WORKDIR /home/ray/zerotune

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TRANSFORMERS_OFFLINE=1 \
    RAY_USAGE_STATS_ENABLED=0

# torch first and pinned exactly as pyproject.toml does: any later resolution that admits a
# newer torch would pull another multi-GB build. Its own layer, so code edits do not redo it.
RUN pip install torch==2.13.0

# Dependencies from pyproject.toml only (no source yet): cached until pyproject.toml changes.
COPY --chown=ray:users pyproject.toml README.md ./
RUN python -c 'import os, tomllib; p = tomllib.load(open("pyproject.toml", "rb"))["project"]; \
extras = [e for e in os.environ["ZEROTUNE_EXTRAS"].split(",") if e]; \
print("\n".join(p["dependencies"] + [r for e in extras for r in p["optional-dependencies"][e]]))' \
    > /tmp/requirements.txt
RUN pip install -r /tmp/requirements.txt && rm /tmp/requirements.txt

# The code itself (only the packages, so local results/.venv never end up in the image).
COPY --chown=ray:users trainer ./trainer
COPY --chown=ray:users sweeps ./sweeps
COPY --chown=ray:users cluster ./cluster
COPY --chown=ray:users zerotune ./zerotune
RUN pip install --no-deps . \
    && python -c "import ray, sys; assert ray.__version__ == '2.60.0', ray.__version__" \
    && zerotune --help > /dev/null
