"""Routers: choose a route (and so a model) for a conversation (SPEC §5)."""

from app.router.base import Router
from app.router.factory import create_router

__all__ = ["Router", "create_router"]
