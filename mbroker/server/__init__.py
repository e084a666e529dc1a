"""The Twisted glue: the broker on the network.

* :mod:`~mbroker.server.protocol` - one connection: bytes in, commands run in order;
* :mod:`~mbroker.server.output` - its replies in command order, written in batches;
* :mod:`~mbroker.server.commands` - its command handlers and its user's permissions;
* :mod:`~mbroker.server.auth` - users, passwords and permissions;
* :mod:`~mbroker.server.factory` - the connections' factory, shared by all of them;
* :mod:`~mbroker.server.memwatch` - the memory high-water mark;
* :mod:`~mbroker.server.service` - the broker as a service listening on endpoints;
* :mod:`~mbroker.server.tap` - ``twistd mbroker``: its options and its service.
"""
