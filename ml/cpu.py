"""Which int8 kernels onnxruntime uses on this CPU.

onnxruntime's uint8 x int8 convolutions run on VNNI instructions (AVX-512 VNNI, AVX-VNNI, AMX)
where the CPU has them, and otherwise on AVX2, whose multiply-add saturates 16-bit sums: the
same int8 model then agrees less often with fp32. Bundles record their int8 agreement per class
(manifest checks.int8.agreement_by_cpu), measured with `python -m ml int8-check`.
"""

from __future__ import annotations

import platform

VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni", "amx_int8"})


def cpu_flags() -> frozenset[str]:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def int8_kernel_class() -> str:
    """'vnni', 'avx2' or the machine name (e.g. 'arm64') where neither applies."""
    flags = cpu_flags()
    if flags & VNNI_FLAGS:
        return "vnni"
    if "avx2" in flags:
        return "avx2"
    return platform.machine().lower() or "unknown"
