"""What broadcasters and operators learn about their audience: rollups and reports."""
