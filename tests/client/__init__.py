"""Tests of mbroker.client."""
