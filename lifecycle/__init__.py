"""What a process owns while it runs, and how it lets go: background tasks with a bounded stop."""
