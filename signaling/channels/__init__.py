"""Channels: one per user, their directory, follows and stream keys."""
