"""REST API served by every node."""
