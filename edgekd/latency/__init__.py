"""Latency: measurement protocol, statistics, profiles, prediction and selection."""
