"""Tests of mbroker.wire."""
