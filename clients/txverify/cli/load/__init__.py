"""`txverify load`: drive the hub with a mix of slips, open or closed loop, and check every answer.

The modules, one job each: plan (the flags checked, the plan split per process), slips
(where the slips come from), judge (what each kind of slip must get), engine (the load
processes), results (their tallies merged; JSON), report (text), html, command (the CLI).
"""
