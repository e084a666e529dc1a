"""The Twisted glue: the broker on the network.

* :mod:`~mbroker.server.protocol` - one connection: bytes in, commands run in order;
* :mod:`~mbroker.server.output` - its replies in command order, written in batches;
* :mod:`~mbroker.server.commands` - its command handlers and its user's permissions;
* :mod:`~mbroker.server.auth` - users, passwords and permissions;
* :mod:`~mbroker.server.factory` - the connections' factory, shared by all of them;
* :mod:`~mbroker.server.stomp` - the STOMP listener: its factory;
* :mod:`~mbroker.server.stomp_protocol` - one STOMP connection: bytes in, frames run in order;
* :mod:`~mbroker.server.stomp_commands` - its frame handlers after CONNECT;
* :mod:`~mbroker.server.stomp_destinations` - STOMP destinations mapped onto the broker's;
* :mod:`~mbroker.server.stomp_state` - its subscriptions' and transactions' books;
* :mod:`~mbroker.server.memwatch` - the memory high-water mark;
* :mod:`~mbroker.server.service` - the broker as a service listening on endpoints;
* :mod:`~mbroker.server.tap` - ``twistd mbroker``: its options and its service.
"""
