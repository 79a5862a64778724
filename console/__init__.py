"""The analysts' console: alerts worked as cases, with four-eyes decisions (`python -m console`)."""
