"""The HTTP front door (``--http``): a JSON management API under RabbitMQ's paths,
Prometheus ``/metrics`` and ``/healthz``, served by ``twisted.web`` in the broker's
own process and reactor.  A thin translation onto the broker's public methods: no
work per message, nothing of the broker's rules copied."""
