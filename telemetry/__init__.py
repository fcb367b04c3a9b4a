"""What the platform tells its operators about itself: the ids a log line is about, and the log format."""
