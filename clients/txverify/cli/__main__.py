"""`python -m txverify.cli`: the txverify command, as the installed script runs it."""

from txverify.cli import main

main()
