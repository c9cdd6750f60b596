"""agent-tui's Textual app: a thin client of ``engine``.

Importing this package does not import textual; the app is imported only when the
interactive commands run, so headless commands stay fast.
"""
