"""Helpers for end-to-end tests of the example API: real servers, real databases."""
