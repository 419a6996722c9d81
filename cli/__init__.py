"""Command-line interface of vlaecodec (click)."""
