"""The embedded broker: amqtt 0.12 with the fleet plugin (authentication, PROTOCOL §6 ACL, presence)."""
