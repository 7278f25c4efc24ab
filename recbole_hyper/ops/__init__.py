"""Low-level operators."""

from recbole_hyper.ops.scan import (
    SCAN_BACKENDS,
    mamba_ssm_available,
    resolve_backend,
    selective_scan,
    selective_scan_time_major,
)

__all__ = [
    "SCAN_BACKENDS",
    "mamba_ssm_available",
    "resolve_backend",
    "selective_scan",
    "selective_scan_time_major",
]
