"""The return state machine: one table drives the API, the history and the webhook events."""

from dataclasses import dataclass
from enum import StrEnum


class Status(StrEnum):
    requested = "requested"
    approved = "approved"
    declined = "declined"
    received = "received"
    refunded = "refunded"
    closed = "closed"
    cancelled = "cancelled"


@dataclass(frozen=True, slots=True)
class Transition:
    action: str
    sources: frozenset[Status]
    target: Status
    event_type: str


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        Transition("approve", frozenset({Status.requested}), Status.approved, "return.approved"),
        Transition("decline", frozenset({Status.requested}), Status.declined, "return.declined"),
        Transition(
            "receive",
            frozenset({Status.approved, Status.received}),
            Status.received,
            "return.received",
        ),
        Transition("refund", frozenset({Status.received}), Status.refunded, "return.refunded"),
        Transition(
            "close", frozenset({Status.refunded, Status.declined}), Status.closed, "return.closed"
        ),
        Transition(
            "cancel",
            frozenset({Status.requested, Status.approved}),
            Status.cancelled,
            "return.cancelled",
        ),
        Transition(
            "reopen",
            frozenset({Status.closed, Status.cancelled}),
            Status.requested,
            "return.reopened",
        ),
    )
}


def allowed_actions(*, status: str, source: str, received_anything: bool) -> list[str]:
    """The actions a return in `status` accepts now, guards included."""
    actions = []
    for transition in TRANSITIONS.values():
        if status not in transition.sources:
            continue
        if transition.action == "cancel" and received_anything:
            continue  # not once anything was received
        if transition.action == "reopen" and source == "event":
            continue  # a recorded return is a fact from elsewhere
        actions.append(transition.action)
    return actions
