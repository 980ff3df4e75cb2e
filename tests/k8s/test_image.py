"""The Dockerfile and its lock file, checked statically: no container engine or registry is reachable here,
so the image build itself is not exercised (the README says so). What is checked is what the build would do:
a digest-pinned base, torch in the build matching the base image's CUDA, every PyPI file hash-checked from a
lock that agrees with pyproject.toml, DeepSpeed's GPU ops compiled at build time, hub access left to config.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()
LOCK = REPO / "requirements.lock"
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
TORCH_FAMILY = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*)$")


def _instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, current = [], ""
    for line in DOCKERFILE.splitlines():
        if line.lstrip().startswith("#") and not current:
            continue
        current += line.rstrip("\\").strip() + " "
        if not line.endswith("\\"):
            if current.strip():
                word, _, rest = current.strip().partition(" ")
                out.append((word.upper(), rest))
            current = ""
    return out


def _locked() -> dict[str, dict]:
    """name -> {version, hashes} from the hash-pinned lock."""
    entries: dict[str, dict] = {}
    name = None
    for line in LOCK.read_text().splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            name = canonicalize_name(match[1])
            assert name not in entries, f"{name} locked twice"
            entries[name] = {"version": match[2], "hashes": []}
        elif match := re.search(r"--hash=sha256:([0-9a-f]{64})", line):
            entries[name]["hashes"].append(match[1])
        elif line and not line.startswith(("#", " ")):
            pytest.fail(f"unpinned lock line: {line}")
    return entries


def test_the_base_image_is_pinned_by_a_digest_the_builder_must_pass():
    args = dict(re.findall(r"^ARG (\w+)(?:=(.*))?$", DOCKERFILE, re.M))
    froms = [rest for word, rest in _instructions() if word == "FROM"]
    assert froms == ["${RAY_IMAGE}@${RAY_IMAGE_DIGEST}"]
    assert args["RAY_IMAGE_DIGEST"] == ""  # no default: without it the reference is invalid and the build stops
    image = args["RAY_IMAGE"]
    ray_pin = next(Requirement(d) for d in PYPROJECT["dependencies"] if d.startswith("ray["))
    assert image.startswith(f"rayproject/ray:{next(iter(ray_pin.specifier)).version}-py311-")
    assert PYPROJECT["requires-python"] == ">=3.11,<3.12"
    cluster = yaml.safe_load((REPO / "k8s/base/raycluster.base.yaml").read_text())
    assert cluster["spec"]["rayVersion"] == next(iter(ray_pin.specifier)).version
    # the user the manifests run as (uid 1000 `ray` of the rayproject images)
    assert [rest for word, rest in _instructions() if word == "USER"] == ["ray"]
    assert cluster["spec"]["headGroupSpec"]["template"]["spec"]["securityContext"]["runAsUser"] == 1000


def test_hub_access_is_left_to_configuration():
    env = " ".join(rest for word, rest in _instructions() if word == "ENV")
    assert "HF_HUB_OFFLINE" not in env and "TRANSFORMERS_OFFLINE" not in env


@pytest.mark.parametrize(
    ("cuda", "build"), [("12.8.1", "cu128"), ("12.6.3", "cu126"), ("13.0.0", "cu130"), ("", "cpu")]
)
def test_torch_comes_in_the_build_of_the_base_images_cuda(cuda, build):
    torch_pin = next(Requirement(d) for d in PYPROJECT["dependencies"] if d.startswith("torch"))
    assert f"ARG TORCH_VERSION={next(iter(torch_pin.specifier)).version}" in DOCKERFILE
    run = next(rest for word, rest in _instructions() if word == "RUN" and "download.pytorch.org" in rest)
    assert '--index-url "https://download.pytorch.org/whl/${build}"' in run
    derive = re.search(r"\$\(python -c '(.+?)'\)", run)[1]  # the snippet that picks the build
    done = subprocess.run(
        [sys.executable, "-c", derive], env={"CUDA_VERSION": cuda} if cuda else {}, capture_output=True, text=True
    )
    assert done.stdout.strip() == build, done.stderr
    assert "torch.version.cuda" in run and "assert cuda == want" in run  # and the build checks the result


def test_every_other_install_is_hash_checked_from_the_lock():
    installs = [rest for word, rest in _instructions() if word == "RUN" and "pip install" in rest]
    for run in installs:
        for command in re.findall(r"pip install [^&;]+", run):
            if "download.pytorch.org" in command:  # the one marked NOT EXERCISED, pinned by version
                assert "torch==${TORCH_VERSION}" in command
            elif command.rstrip().endswith(" ."):  # the project itself, its dependencies already in place
                assert "--no-deps" in command
            else:
                assert "--require-hashes" in command and "--no-deps" in command, command
    assert "NOT EXERCISED" in DOCKERFILE and "pip check" in DOCKERFILE


def test_the_lock_pins_what_pyproject_asks_for_with_hashes():
    locked = _locked()
    wanted = [Requirement(d) for d in PYPROJECT["dependencies"] + PYPROJECT["optional-dependencies"]["demo"]]
    for requirement in wanted:
        name = canonicalize_name(requirement.name)
        if TORCH_FAMILY.match(name):
            continue
        assert name in locked, f"{name} is in pyproject.toml but not in requirements.lock"
        assert requirement.specifier.contains(locked[name]["version"], prereleases=True), (name, locked[name])
    for name, entry in locked.items():
        assert entry["hashes"], f"{name} has no hash"
        assert not TORCH_FAMILY.match(name), f"{name} must come with the matching torch build, not from the lock"


def test_the_dockerfile_splits_deepspeed_off_to_build_it_with_its_gpu_ops(tmp_path):
    run = next(rest for word, rest in _instructions() if word == "RUN" and rest.startswith("awk"))
    awk = re.match(r"awk '(.+?)' requirements\.lock", run)[1].replace("/tmp/", f"{tmp_path}/")
    subprocess.run(["awk", awk, str(LOCK)], check=True)
    deepspeed = (tmp_path / "deepspeed.lock").read_text()
    wheels = (tmp_path / "wheels.lock").read_text()
    assert re.findall(r"^([a-z0-9-]+)==", deepspeed, re.M) == ["deepspeed"]
    assert "deepspeed==" not in wheels and len(re.findall(r"^[a-z0-9-]+==", wheels, re.M)) == len(_locked()) - 1
    build = next(rest for word, rest in _instructions() if word == "RUN" and "DS_BUILD_FUSED_ADAM" in rest)
    assert 'DS_BUILD_FUSED_ADAM="$prebuild"' in build and 'DS_BUILD_CPU_ADAM="$prebuild"' in build
    assert "--no-build-isolation" in build and "installed_ops" in build  # built against our torch, then checked
    # the ops trainer/ds_config.py selects on GPU: DeepSpeed's AdamW (FusedAdam) and CPU offload (CPUAdam)
    ds_config = (REPO / "trainer/ds_config.py").read_text()
    assert '"type": "AdamW"' in ds_config and "offload_optimizer" in ds_config
