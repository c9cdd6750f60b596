"""Issue sources and pull-request publishing (GitHub via ghapi, local Markdown issues)."""
