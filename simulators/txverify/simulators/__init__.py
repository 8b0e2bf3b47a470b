"""Simulated member banks: issuers with their own ledgers."""
