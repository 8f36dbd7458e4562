"""What runs a daemon: settings, the MQTT session, the run loop, metrics, logs, lifecycle."""
