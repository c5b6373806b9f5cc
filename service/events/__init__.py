"""Credential events: schema, outbox relay, Kafka producer."""
