"""Connections to boards: a small interface with a local and an SSH (paramiko) implementation."""
from .base import Connection, Result

__all__ = ["Connection", "Result"]
