"""The small core every stage depends on: config, the proposal model, errors, events,
redaction and terminal-safe text.
"""
