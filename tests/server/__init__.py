"""Tests of mbroker.server."""
