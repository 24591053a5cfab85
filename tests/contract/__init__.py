"""One behaviour suite run against every session-cache backend (SPEC §6)."""
