"""What this CPU offers the int8 kernels, and whether an int8 graph built for another CPU is safe here.

x86 CPUs without VNNI (AVX2, AVX-512F) add pairs of u8·s8 products in saturating int16
(vpmaddubsw), so an int8 graph built with full-range weights for a VNNI or ARM CPU computes wrong
sums on them; one built for avx2 (7-bit weights, or ORT's reduce_range) is right everywhere.
``sentictl export --int8-isa`` chooses; the manifest records the choice; :func:`int8_mismatch`
tells the engine when a model is run on a CPU it was not built for. Reads /proc/cpuinfo only.
"""

from __future__ import annotations

import platform
from typing import Any

# CPUs whose int8 dot products accumulate in 32 bits: full-range weights are exact there.
WIDE_ACCUMULATORS = ("avx512_vnni", "arm64")


def cpu_isa() -> str:
    """The int8 instruction-set target for this CPU: avx512_vnni, avx512, avx2 or arm64."""
    machine = platform.machine().lower()
    if machine in ("arm64", "aarch64"):
        return "arm64"
    flags = ""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    flags = line
                    break
    except OSError:
        pass
    words = set(flags.split())
    if "avx512_vnni" in words or "avx_vnni" in words:
        return "avx512_vnni"
    if "avx512f" in words:
        return "avx512"
    return "avx2"


def int8_mismatch(variant: dict[str, Any], here: str | None = None) -> str | None:
    """Why this int8 variant may compute wrong sums on this CPU (None: it is safe here)."""
    quantization = variant.get("quantization") if isinstance(variant, dict) else None
    if variant.get("precision") != "int8" or not isinstance(quantization, dict):
        return None
    built = quantization.get("isa")
    if quantization.get("reduce_range") or built not in WIDE_ACCUMULATORS:
        return None  # 7-bit weights (or reduced range): safe on every CPU
    here = here or cpu_isa()
    if here in WIDE_ACCUMULATORS:
        return None
    return (
        f"this int8 variant was built for {built} CPUs (full 8-bit weights); this CPU ({here}) adds int8 "
        f"products in saturating 16-bit sums, so its results can drift from the model's. Re-export it here "
        f"or with --int8-isa avx2, or run --variant fp32"
    )
