"""Redub Studio engine: all processing, headless. Never imports Qt."""
