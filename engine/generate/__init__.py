"""Stage 3: model backends, the proposal grammar and the event stream of a generation."""
