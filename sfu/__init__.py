"""Tallylight sfu (grows with the media issues)."""
