"""The drivers that run the whole pipeline (one session, a batch, the demo, doctor); only
the CLI and the TUI sit above them.
"""
