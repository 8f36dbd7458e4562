"""Simulated devices: the OTA device model, heartbeat vitals and the fleet simulator."""
