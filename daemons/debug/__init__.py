"""Remote debugging (PROTOCOL §4): signed links and the live log page."""
