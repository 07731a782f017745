"""Everything that touches Qt."""
