"""Fetch files an app returned, as a browser would, and tell whether each arrived whole (tests only)."""
from __future__ import annotations

import io
from dataclasses import dataclass

import httpx
from PIL import Image


@dataclass(frozen=True)
class Fetched:
    """One download: what the server declared, what arrived, and whether it decodes as an image."""

    url: str
    declared: int | None  # Content-Length (None: the connection broke before the headers)
    received: int  # bytes received
    decodes: bool  # the bytes open and load as an image

    @property
    def cut(self) -> bool:
        """Shorter than declared, broken off, or not a whole image."""
        return self.declared is None or self.received != self.declared or not self.decodes


def fetch_image(http: httpx.Client, url: str) -> Fetched:
    """GET `url` and check the image that arrives."""
    try:
        response = http.get(url)
    except httpx.HTTPError:  # e.g. "peer closed connection without sending complete message body"
        return Fetched(url, None, 0, False)
    try:
        with Image.open(io.BytesIO(response.content)) as picture:
            picture.load()
        decodes = True
    except OSError:
        decodes = False
    return Fetched(url, int(response.headers["content-length"]), len(response.content), decodes)
