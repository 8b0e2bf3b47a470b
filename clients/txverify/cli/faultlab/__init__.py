"""Fault experiments on a live network of real processes, for QA and for RELIABILITY.md:
the issuer fault matrix (matrix) and restart to first OK (restart), over `txverify banks`
and `txverify hub` processes started and measured by processes.

bench/fault_matrix.py and bench/restart_recovery.py run them as scripts (`make
bench-faults`, `make bench-restarts`); tests/test_fault_matrix.py and
tests/test_bank_restart.py run them briefly and assert every expectation.
"""
