"""Where a measurement ran: the commit of the code and a one-line hardware summary, for every results file (the
same functions stamp each model card field's ``written_by``: :mod:`diffuse_core.models.card`)."""

from __future__ import annotations

from diffuse_core.models.card import commit_id, hardware_summary

__all__ = ["commit_id", "hardware_summary"]
