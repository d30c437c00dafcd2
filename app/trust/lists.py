"""Where check jobs wait in the queue: lists of their own beside the business's lists, so that a
wallet on probation can be handed check work only. They are per-model lists of app/queue.py
under a name no model can have ("~" is not allowed in a model name), so requeueing, the
reconciler and queue depths treat them like any other model's list."""

from __future__ import annotations

TRUST = "~trust"


def list_for(check_model: str | None) -> str:
    """The list of check jobs that must run on `check_model` ('' or None: miners naming none)."""
    return f"{TRUST}/{check_model}" if check_model else TRUST


def routed_list(model: str | None, purpose: str | None, check_model: str | None) -> str | None:
    """The model list a chat job goes back to: its check list, its model's, or None (common)."""
    if purpose is not None:
        return list_for(check_model)
    return model
