"""Flask adapter for usermgmt (arrives with the adapters issue)."""
