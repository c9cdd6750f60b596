"""Stage 2: what the model is shown for an issue (repository snapshot, index, selection,
rendering), prompt profiles and the secret scan.
"""
