"""Tests of mbroker.core."""
