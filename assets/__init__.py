"""MJCF models and scenes written for robotrl (package data)."""
