"""The resilience primitives: circuit breaker, bulkhead, rate limits (local and in Redis).

Pure where they can be (clock injected); no locks: each runs on the hub's event loop."""
