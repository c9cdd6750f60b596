"""Stage 1, where a change starts: issue sources (GitHub, local Markdown) and filtering."""
