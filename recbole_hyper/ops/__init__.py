"""Low-level operators."""

from recbole_hyper.ops.scan import (
    SCAN_BACKENDS,
    mamba_ssm_available,
    resolve_backend,
    selective_scan,
    selective_scan_time_major,
    triton_available,
)
from recbole_hyper.ops.scan_ref import selective_scan_ref

__all__ = [
    "SCAN_BACKENDS",
    "mamba_ssm_available",
    "resolve_backend",
    "selective_scan",
    "selective_scan_time_major",
    "selective_scan_ref",
    "triton_available",
]
