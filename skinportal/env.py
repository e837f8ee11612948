"""Typed readers for settings that come from environment variables.

Each helper names the variable in its error so a misconfigured deployment fails at start-up
with a message an operator can act on, not with a stack trace deep inside Django.
"""

from __future__ import annotations

import ipaddress
import os

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str) -> str | None:
    """The variable's value, or None when it is unset or blank."""
    value = os.environ.get(name)
    if value is None or not value.strip():
        return None
    return value.strip()


def env_str(name: str, default: str | None = None, *, required: bool = False) -> str:
    value = _raw(name)
    if value is not None:
        return value
    if required or default is None:
        raise ImproperlyConfigured(f"The environment variable {name} is required but not set.")
    return default


def env_optional_str(name: str) -> str | None:
    return _raw(name)


def env_bool(name: str, default: bool) -> bool:
    value = _raw(name)
    if value is None:
        return default
    lowered = value.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false (1/0, yes/no, on/off), got {value!r}.")


def env_int(name: str, default: int, *, minimum: int | None = None) -> int:
    value = _raw(name)
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {value!r}.") from exc
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, got {number}.")
    return number


def env_optional_int(name: str, *, minimum: int | None = None) -> int | None:
    """A whole number, or None when the variable is unset (the caller picks the default)."""
    if _raw(name) is None:
        return None
    return env_int(name, 0, minimum=minimum)


def env_list(name: str, default: list[str] | None = None, *, required: bool = False) -> list[str]:
    """Comma-separated list; blanks are dropped."""
    value = _raw(name)
    if value is None:
        if required or default is None:
            raise ImproperlyConfigured(f"The environment variable {name} is required (a comma-separated list).")
        return list(default)
    items = [item.strip() for item in value.split(",") if item.strip()]
    if required and not items:
        raise ImproperlyConfigured(f"{name} must list at least one value.")
    return items


def env_networks(name: str, default: list[str]) -> list[str]:
    """Comma-separated IP addresses or networks (`10.0.0.5`, `10.0.0.0/24`, `::1`), checked now
    and returned as their canonical text (e.g. for a list of trusted proxies)."""
    networks = []
    for item in env_list(name, default):
        try:
            networks.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError as exc:
            raise ImproperlyConfigured(
                f"{name} must list IP addresses or networks (e.g. 127.0.0.1, 10.0.0.0/24), got {item!r}."
            ) from exc
    return networks


def env_choice(name: str, default: str, choices: tuple[str, ...]) -> str:
    value = _raw(name) or default
    if value not in choices:
        raise ImproperlyConfigured(f"{name} must be one of {', '.join(choices)}, got {value!r}.")
    return value


def available_cores() -> int:
    """The cores this process may run on (its CPU affinity: a container's cpuset, `taskset`), the
    default for settings sized by the machine; the CPU count where affinity is not available."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):  # no sched_getaffinity (macOS, Windows)
        return os.cpu_count() or 1
