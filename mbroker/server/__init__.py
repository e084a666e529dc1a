"""The Twisted glue: the protocol per connection, login, the factory, the service and tap."""
