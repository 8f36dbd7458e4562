"""Operator and developer entry points: fleetctl, `fleet up` and the local stack it starts."""
