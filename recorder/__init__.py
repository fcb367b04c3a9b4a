"""Tallylight recorder (grows with the media issues)."""
