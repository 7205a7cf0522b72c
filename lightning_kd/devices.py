"""Which reduced precisions a device runs natively, rather than emulating them at a loss.

A reduced-precision forward is faster only where the hardware computes in it: on GPUs of compute capability 8.0
and newer for bf16 (7.0 for fp16), on CPUs with AVX-512 BF16 or AMX for bf16 (AVX-512 FP16 or AMX-FP16 for fp16).
Elsewhere PyTorch emulates it: on a 2-core AMD EPYC without AVX-512 BF16, a bf16 teacher forward made a KD epoch
4.8 times slower than fp32 (``benchmarks/cache_throughput.py``).

Example:
    >>> import torch
    >>> "32" in native_precisions(torch.device("cpu"))
    True
"""

from __future__ import annotations

from pathlib import Path

import torch

CPU_FLAGS = {"bf16": ("avx512_bf16", "amx_bf16"), "16": ("avx512_fp16", "amx_fp16")}
"""The CPU flags (``/proc/cpuinfo``) any one of which makes a precision native on the CPU."""
GPU_CAPABILITY = {"bf16": (8, 0), "16": (7, 0)}
"""The CUDA compute capability from which a precision is native on the GPU."""


def cpu_flags() -> set[str]:
    """The CPU's feature flags as Linux lists them (``/proc/cpuinfo``); empty where it does not."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def native_precisions(device: torch.device) -> tuple[str, ...]:
    """The precisions (``"32"``, ``"bf16"``, ``"16"``) ``device`` computes natively.

    On a CPU whose flags cannot be read (not Linux), only ``"32"``: a reduced precision is not known to gain there.
    """
    native = ["32"]
    if device.type == "cuda":
        capability = torch.cuda.get_device_capability(device)
        native += [precision for precision, needed in GPU_CAPABILITY.items() if capability >= needed]
    elif device.type == "cpu":
        flags = cpu_flags()
        native += [precision for precision, wanted in CPU_FLAGS.items() if flags & set(wanted)]
    else:  # MPS and others: what they run is theirs to say; take reduced precisions as asked
        native += list(CPU_FLAGS)
    return tuple(native)
