"""Tests of mbroker.store."""
