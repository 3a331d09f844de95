"""The attack cases, by group; importing this package registers them all."""
from __future__ import annotations

from . import csrf_cases, injection, jwt_cases, monitor_cases, request_cases, ws_cases
from .base import CASES, GROUPS, Case, Check, Outcome, Target

__all__ = ["CASES", "GROUPS", "Case", "Check", "Outcome", "Target", "csrf_cases", "injection",
           "jwt_cases", "monitor_cases", "request_cases", "ws_cases"]
