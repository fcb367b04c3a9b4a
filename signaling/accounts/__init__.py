"""User accounts and login sessions."""
