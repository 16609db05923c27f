"""Central place for marker skips; see tests/README or DEVELOPERS.md."""
