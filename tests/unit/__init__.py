"""Tests of pure logic: settings, hashing, the layers' import rules."""
