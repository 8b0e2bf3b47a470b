"""Clients: the txverify CLI, the client library and network runner."""
