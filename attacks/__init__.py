"""Leakage audits: attacks that read an observation log and measure what leaks."""
