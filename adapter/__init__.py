"""The adapter: everything with I/O (files, network, database) around the pure referral model."""

from adapter.errors import AdapterError, ConfigError, InputError

__all__ = ["AdapterError", "ConfigError", "InputError"]
