"""Cluster mode: broker nodes sharing one namespace and their queues on Redis Cluster.

A node is the ordinary broker core (:mod:`mbroker.core`) with a second implementation
of its storage side: :class:`~mbroker.cluster.node.ClusterBroker` keeps the namespace
and the queues' messages in Redis (hashes, a set, one stream per queue) and feeds the
local core the messages its consumers can take.  ``docs/cluster.rst`` says how it maps
onto Redis and what differs from a single broker.  Imported only with ``--cluster``.
"""
