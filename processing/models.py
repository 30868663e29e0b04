"""Inbound mail: messages, classification and archive records."""
