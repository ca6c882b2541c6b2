"""Build the MatMulInt4 shared library (g++ for the CPU kernel and ONNX Runtime binding; nvcc for
the CUDA kernels when it is available) into the cache folder, keyed by a hash of the sources,
the compilers' versions and the flags, so a changed source rebuilds and an unchanged one is reused.

Cache: $ONNXCOMP_CACHE/custom_ops/<hash>/ (default ~/.cache/onnxcomp). Each build is made in a
temporary folder and renamed into place, so concurrent builds cannot leave a half-written library.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

SRC = Path(__file__).resolve().parent / "src"
LIB_NAME = "libonnxcomp_ops.so"
CUDA_ARCHS = ("80", "90")
_SOURCES = ("ort_c_api_min.h", "int4_gemm.h", "numeric.h", "int4_gemm_cpu.cc", "ort_op.cc", "int4_gemm_cuda.cu")


class BuildError(RuntimeError):
    """The library could not be built (no compiler, or a compiler error: the message says which)."""


def cache_dir() -> Path:
    root = os.environ.get("ONNXCOMP_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "onnxcomp")
    return Path(root) / "custom_ops"


def find_cxx() -> str | None:
    for name in (os.environ.get("CXX"), "g++", "c++", "clang++"):
        if name and shutil.which(name):
            return shutil.which(name)
    return None


def find_nvcc() -> str | None:
    env = os.environ.get("NVCC")
    if env:
        return shutil.which(env)
    found = shutil.which("nvcc")
    if found:
        return found
    for cand in ("/usr/local/cuda/bin/nvcc", "/usr/local/bin/nvcc"):
        if os.access(cand, os.X_OK):
            return cand
    return None


def _version(tool: str) -> str:
    try:
        return subprocess.run([tool, "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "?"


def _cpu_flags() -> list[str]:
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(re.findall(r"^flags\s*:(.*)$", info, re.M)[0].split()) if "flags" in info else set()
    # x86-64-v3 = AVX2 + FMA + F16C: the machine that builds is the machine that runs (cache is per host).
    return ["-march=x86-64-v3"] if {"avx2", "fma", "f16c"} <= flags else []


def _run(cmd: list[str], cwd: Path, log: list[str]) -> str:
    log.append("$ " + " ".join(cmd))
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    out = (proc.stdout + proc.stderr).strip()
    if out:
        log.append(out)
    if proc.returncode != 0:
        raise BuildError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{out[-4000:]}")
    return out


def parse_ptxas(report: str) -> list[dict]:
    """Per kernel and arch: registers, spill stores/loads, stack, shared memory (from -Xptxas -v)."""
    kernels, current = [], None
    for line in report.splitlines():
        m = re.search(r"Compiling entry function '([^']+)' for '(sm_\d+)'", line)
        if m:
            current = {"kernel": m.group(1), "arch": m.group(2)}
            kernels.append(current)
            continue
        if current is None:
            continue
        m = re.search(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads", line)
        if m:
            current.update(stack=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
        m = re.search(r"Used (\d+) registers", line)
        if m:
            current["registers"] = int(m.group(1))
            sm = re.search(r"(\d+) bytes smem", line)
            current["smem"] = int(sm.group(1)) if sm else 0
    return kernels


def build_library(cuda: bool | None = None, force: bool = False) -> dict:
    """Build (or reuse) the library. cuda=None: with CUDA iff nvcc is found; True: require nvcc.

    Returns {"path", "cuda", "archs", "cached", "seconds", "kernels" (ptxas report), "log"}.
    """
    cxx = find_cxx()
    if cxx is None:
        raise BuildError(
            "no C++ compiler found (looked for $CXX, g++, c++, clang++); install g++ to build the MatMulInt4 library"
        )
    nvcc = find_nvcc() if cuda in (None, True) else None
    if cuda and nvcc is None:
        raise BuildError("CUDA build requested but nvcc was not found (set $NVCC or put nvcc on PATH)")
    use_cuda = nvcc is not None
    cxxflags = ["-std=c++17", "-O3", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wextra", *_cpu_flags()]
    nvflags = [
        "-std=c++17",
        "-O3",
        "-Xcompiler",
        "-fPIC",
        "-Xptxas",
        "-v",
        *[f"-gencode=arch=compute_{a},code=sm_{a}" for a in CUDA_ARCHS],
    ]
    h = hashlib.sha256()
    for name in _SOURCES:
        h.update(name.encode() + b"\0" + (SRC / name).read_bytes() + b"\0")
    h.update(
        json.dumps(
            [cxxflags, nvflags if use_cuda else None, _version(cxx), _version(nvcc) if use_cuda else None]
        ).encode()
    )
    key = ("cuda-" if use_cuda else "cpu-") + h.hexdigest()[:16]
    out_dir = cache_dir() / key
    lib = out_dir / LIB_NAME
    info_file = out_dir / "build.json"
    if lib.exists() and info_file.exists() and not force:
        info = json.loads(info_file.read_text())
        info.update(path=str(lib), cached=True)
        return info

    t0 = time.perf_counter()
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=key + ".tmp", dir=cache_dir()))
    log: list[str] = []
    try:
        defs = ["-DONNXCOMP_WITH_CUDA"] if use_cuda else []
        objs = []
        for src in ("ort_op.cc", "int4_gemm_cpu.cc"):
            obj = tmp / (src + ".o")
            _run([cxx, *cxxflags, *defs, "-c", str(SRC / src), "-o", str(obj)], tmp, log)
            objs.append(str(obj))
        kernels: list[dict] = []
        if use_cuda:
            obj = tmp / "int4_gemm_cuda.o"
            report = _run([nvcc, *nvflags, "-c", str(SRC / "int4_gemm_cuda.cu"), "-o", str(obj)], tmp, log)
            kernels = parse_ptxas(report)
            objs.append(str(obj))
            # nvcc links the CUDA runtime statically: the library needs only the driver at run time,
            # and loads on a machine without a GPU (the CUDA kernels are then simply never called).
            _run([nvcc, "-shared", "-o", str(tmp / LIB_NAME), *objs, "-lpthread"], tmp, log)
        else:
            _run([cxx, "-shared", "-o", str(tmp / LIB_NAME), *objs, "-lpthread"], tmp, log)
        info = {
            "cuda": use_cuda,
            "archs": [f"sm_{a}" for a in CUDA_ARCHS] if use_cuda else [],
            "seconds": round(time.perf_counter() - t0, 2),
            "kernels": kernels,
            "compiler": _version(cxx).splitlines()[0] if _version(cxx) else "?",
            "nvcc": _version(nvcc).splitlines()[-1] if use_cuda else None,
        }
        (tmp / "build.log").write_text("\n".join(log) + "\n")
        (tmp / "build.json").write_text(json.dumps(info, indent=1))
        for f in tmp.glob("*.o"):
            f.unlink()
        _install(tmp, out_dir, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    info.update(path=str(lib), cached=False, log=str(out_dir / "build.log"))
    return info


def _install(tmp: Path, out_dir: Path, force: bool) -> None:
    """Rename the finished build `tmp` to `out_dir`. When `out_dir` exists (another process finished
    the same build first) theirs is used, unless `force`: then our files replace theirs one by one
    (each rename is atomic; the folder and the library path never go missing, and a process that
    loaded the old library keeps its mapped copy)."""
    try:
        os.replace(tmp, out_dir)
        return
    except OSError:
        if not (out_dir / LIB_NAME).exists():
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    try:
        if force:
            for item in sorted(tmp.iterdir(), key=lambda p: p.name == LIB_NAME):  # the library last
                os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def library_path(cuda: bool | None = None) -> str:
    """Path of the built library (building it first if needed)."""
    return build_library(cuda=cuda)["path"]
