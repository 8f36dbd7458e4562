"""shadow-sync: desired vs reported device state, deltas and versions (PROTOCOL §1)."""
