"""HTTP contract tests, run against every web adapter."""
