"""Directory put on ansible-playbook's callback plugin path (see autoupdate_events.py)."""
