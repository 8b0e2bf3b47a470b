"""The hub's JSON API: its public services over the Connect protocol, on the hub's loop.

http.py serves HTTP/1.1 and HTTP/2 (hypercorn) with the verified client
certificate in each request's scope; call.py presents a Connect request to the
hub's gRPC servicers as a gRPC call; app.py routes, and makes every failure
Connect error JSON; server.py puts them together for `txverify hub --json-port`.
"""
