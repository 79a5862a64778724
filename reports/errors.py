"""The errors the report and monitoring tasks raise; each message names the fix."""

from __future__ import annotations

from utils.errors import TxmonError


class ReportError(TxmonError):
    """A report cannot be produced (bad day, missing schema); the message names the fix."""
