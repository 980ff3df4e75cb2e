# syntax=docker/dockerfile:1
# The image every Ray pod of k8s/ runs: Ray 2.60.0 (what pyproject.toml pins), the project's
# locked dependencies and zerotune itself, so `zerotune sweep run` works on the head and Ray
# Train workers import `trainer` without a runtime_env upload.
#
# The base image is pinned by digest, which you pass (no registry was reachable where this file
# was written, so none is baked in):
#   digest=$(docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cu128 --format '{{json .Manifest.Digest}}' | tr -d '"')
#   docker build --build-arg RAY_IMAGE_DIGEST=$digest -t ghcr.io/zerotune/zerotune:0.1.0-ray2.60.0 .
# CPU image (cpu-dev, kind): the CPU base; torch's CPU build and no DeepSpeed CUDA ops follow from it.
#   digest=$(docker buildx imagetools inspect rayproject/ray:2.60.0-py311-cpu --format '{{json .Manifest.Digest}}' | tr -d '"')
#   docker build --build-arg RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu --build-arg RAY_IMAGE_DIGEST=$digest -t zerotune:dev .
#
# Python 3.11 (pyproject requires >=3.11,<3.12) with Ray 2.60.0 inside, or driver and cluster
# disagree (RayCluster.spec.rayVersion is 2.60.0 too). The build checks both.
ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cu128
# Required, no default: the build stops at FROM ("invalid reference format") without it.
ARG RAY_IMAGE_DIGEST
FROM ${RAY_IMAGE}@${RAY_IMAGE_DIGEST}

# torch exactly as pyproject.toml pins it, in the build for the base image's CUDA: empty means
# derived from the image (NVIDIA's base images set CUDA_VERSION, e.g. 12.8.1 -> cu128; none -> cpu).
ARG TORCH_VERSION=2.13.0
ARG TORCH_BUILD=
# DeepSpeed ops the GPU path uses, compiled now instead of JIT-compiled in every new pod: FusedAdam
# (AdamW on GPU) and CPUAdam (ZeRO optimizer offload). 1 on CUDA images, 0 on CPU ones (empty = derive).
ARG DS_PREBUILD=
# A100 (8.0), A10G (8.6), H100/H200 (9.0).
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;9.0"

# The base image's user is `ray` (uid 1000, gid 100), which the manifests run as.
USER ray
# Created by `ray`, not by WORKDIR (root), so pip can write build metadata next to the source.
RUN mkdir -p /home/ray/zerotune
WORKDIR /home/ray/zerotune

# No HF_HUB_OFFLINE here: the README offers hub model names, so hub access is the cluster's choice
# (set HF_HUB_OFFLINE=1, or HF_TOKEN from a Secret, in the RayCluster's env).
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RAY_USAGE_STATS_ENABLED=0 \
    TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST}

# torch first, from the PyTorch index of the matching build, then checked against the image.
# NOT EXERCISED where this file was written (that index was unreachable): its wheel is not
# hash-pinned; everything from PyPI below is.
RUN build="${TORCH_BUILD:-$(python -c 'import os; v = os.environ.get("CUDA_VERSION", ""); print("cu" + "".join(v.split(".")[:2]) if v else "cpu")')}" \
    && echo "torch ${TORCH_VERSION} build ${build}" \
    && pip install "torch==${TORCH_VERSION}" --index-url "https://download.pytorch.org/whl/${build}" \
    && python -c "import os, torch; b = '${build}'; cuda = torch.version.cuda; \
want = None if b == 'cpu' else b[2:-1] + '.' + b[-1]; \
assert cuda == want, f'torch {torch.__version__} is built for CUDA {cuda}, the image for {want}'"

# Every other dependency from the lock: exact versions, every file's hash checked, no resolver.
# deepspeed (sdist only on PyPI) is split off and built after the rest, against this torch; rouge-score
# (sdist only, pure Python) is built from its hash-checked sdist with the wheels.
COPY --chown=ray:users requirements.lock ./
RUN awk '/^[a-z0-9]/ { ds = /^deepspeed==/ } { print > (ds ? "/tmp/deepspeed.lock" : "/tmp/wheels.lock") }' requirements.lock \
    && pip install --no-deps --require-hashes --only-binary :all: --no-binary rouge-score -r /tmp/wheels.lock
RUN prebuild="${DS_PREBUILD:-$(python -c 'import torch; print(int(torch.version.cuda is not None))')}" \
    && if [ "$prebuild" = 1 ] && ! command -v nvcc >/dev/null && [ ! -x /usr/local/cuda/bin/nvcc ]; then \
         echo "DS_PREBUILD=1 needs nvcc (a CUDA devel base image); pass --build-arg DS_PREBUILD=0 to JIT-compile in pods" >&2; \
         exit 1; fi \
    && DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM="$prebuild" DS_BUILD_CPU_ADAM="$prebuild" \
       pip install --no-deps --require-hashes --no-build-isolation -r /tmp/deepspeed.lock \
    && if [ "$prebuild" = 1 ]; then python -c "from deepspeed.git_version_info import installed_ops as ops; \
assert ops['fused_adam'] and ops['cpu_adam'], ops"; fi \
    && pip check \
    && rm /tmp/deepspeed.lock /tmp/wheels.lock

# The code itself (only the packages, so local results/.venv never end up in the image).
COPY --chown=ray:users pyproject.toml README.md ./
COPY --chown=ray:users trainer ./trainer
COPY --chown=ray:users sweeps ./sweeps
COPY --chown=ray:users cluster ./cluster
COPY --chown=ray:users zerotune ./zerotune
RUN pip install --no-deps --no-build-isolation . \
    && python -c "import ray, sys; assert ray.__version__ == '2.60.0', ray.__version__; assert sys.version_info[:2] == (3, 11)" \
    && zerotune --help > /dev/null
