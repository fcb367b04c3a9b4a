"""This process's place in the cluster: what it announces about its media node."""
