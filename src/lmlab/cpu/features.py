"""What this CPU is: vendor and feature flags from Linux's /proc/cpuinfo, read once on first use."""

from __future__ import annotations

import functools

import torch


@functools.cache
def _cpuinfo() -> dict[str, str]:
    """The first processor's fields in /proc/cpuinfo (empty where it cannot be read)."""
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if not line.strip():
                    break
                key, _, value = line.partition(":")
                fields[key.strip()] = value.strip()
    except OSError:
        pass
    return fields


def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (empty where they cannot be read)."""
    return frozenset(_cpuinfo().get("flags", "").split())


def has_vnni() -> bool | None:
    """Whether the CPU has 8-bit integer dot products (None: flags unknown)."""
    flags = cpu_flags()
    return bool(flags & {"avx512_vnni", "avx_vnni", "amx_int8"}) if flags else None


def onednn_preferred() -> bool:
    """Whether fp32 products should go through oneDNN: on x86 CPUs not made by Intel (MKL's own
    vendor, where its GEMM is tuned), with torch built with oneDNN."""
    vendor = _cpuinfo().get("vendor_id")
    return torch.backends.mkldnn.is_available() and vendor is not None and vendor != "GenuineIntel"


def avx512() -> bool:
    return torch.backends.cpu.get_cpu_capability().startswith("AVX512")
