"""Stage 4: checks on a proposal before anything is written, fixes, and its diff."""
