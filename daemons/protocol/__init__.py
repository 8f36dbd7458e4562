"""The wire: codecs, messages and topics, selectors, the error family. Imports nothing of ours."""
