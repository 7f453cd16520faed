"""Helpers shared by the tests: namespaces, free ports, daemons started and stopped by pid."""
