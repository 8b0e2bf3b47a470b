"""`python -m txverify.cli`: the txverify command, as the installed script runs it."""

from txverify.cli.cli import main

main()
