"""The return state machine: one table drives the API, the history and the webhook events."""

from dataclasses import dataclass

from returnstack.models.returns import ReturnStatus


@dataclass(frozen=True, slots=True)
class Transition:
    action: str
    sources: frozenset[ReturnStatus]
    target: ReturnStatus
    event_type: str


TRANSITIONS: dict[str, Transition] = {
    t.action: t
    for t in (
        Transition(
            "approve", frozenset({ReturnStatus.requested}), ReturnStatus.approved, "return.approved"
        ),
        Transition(
            "decline", frozenset({ReturnStatus.requested}), ReturnStatus.declined, "return.declined"
        ),
        Transition(
            "receive",
            frozenset({ReturnStatus.approved, ReturnStatus.received}),
            ReturnStatus.received,
            "return.received",
        ),
        Transition(
            "refund", frozenset({ReturnStatus.received}), ReturnStatus.refunded, "return.refunded"
        ),
        Transition(
            "close",
            frozenset({ReturnStatus.refunded, ReturnStatus.declined}),
            ReturnStatus.closed,
            "return.closed",
        ),
        Transition(
            "cancel",
            frozenset({ReturnStatus.requested, ReturnStatus.approved}),
            ReturnStatus.cancelled,
            "return.cancelled",
        ),
        Transition(
            "reopen",
            frozenset({ReturnStatus.closed, ReturnStatus.cancelled}),
            ReturnStatus.requested,
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
