"""Webhooks: subscriptions, signed deliveries (Standard Webhooks), the dispatcher, and the
message feed (GET /v1/messages)."""
