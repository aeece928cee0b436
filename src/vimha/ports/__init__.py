"""Interfaces (typing.Protocol) between the engine and its drivers."""
