"""The domain: exchanges, queues, bindings and the broker that routes and delivers.

Plain synchronous Python with an injected clock: nothing here imports Twisted or does I/O.
"""
