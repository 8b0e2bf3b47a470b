"""The operator and QA console: a web page served by the hub on loopback (web.py), fed
live by the Verify servicer (feed.py), acting through the hub's and the simulator's
gRPC APIs as the CLI does (actions.py); the page itself is in static/."""
