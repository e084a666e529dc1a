"""Tests of mbroker.cli."""
