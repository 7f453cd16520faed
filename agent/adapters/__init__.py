"""Adapters: translate between the world and core events/actions; they never decide."""
