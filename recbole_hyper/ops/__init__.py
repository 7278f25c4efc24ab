"""Low-level operators."""

from recbole_hyper.ops.scan import (  # noqa: F401
    SCAN_BACKENDS,
    mamba_ssm_available,
    resolve_backend,
    selective_scan,
    selective_scan_time_major,
)
