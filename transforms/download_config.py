"""The download stage's settings as plain picklable values, validated on construction."""

from __future__ import annotations

import dataclasses

from clipcrawl.transforms.address_guard import AddressPolicy
from clipcrawl.transforms.image_processing import ImageSpec

DEFAULT_USER_AGENT = "clipcrawl/0.1 (image-text dataset builder; +https://github.com/clipcrawl/clipcrawl)"


@dataclasses.dataclass(frozen=True)
class DownloadConfig:
    """Everything the download stage needs. Politeness and the SSRF guard are on by default."""

    image_size: int = 256
    resize_mode: str = "border"
    resize_only_if_bigger: bool = False
    encode_format: str = "jpg"
    encode_quality: int = 95
    min_image_size: int = 10
    max_image_pixels: int = 89_478_485
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 5.0
    read_timeout: float = 10.0
    total_timeout: float = 30.0  # per fetch, redirects included, waits for a host slot excluded
    max_redirects: int = 5
    threads: int = 16
    user_agent: str = DEFAULT_USER_AGENT
    allow_private_addresses: bool = False
    allowed_hosts: tuple[str, ...] = ()  # "host:port" let through the SSRF guard (tests, intranets)
    respect_x_robots_tag: bool = True
    respect_robots_txt: bool = True
    respect_tdm_reservation: bool = True  # TDM-Rep: the tdm-reservation header, and tdmrep.json unless off below
    respect_tdmrep_json: bool = True  # fetch /.well-known/tdmrep.json once per origin (needs the line above)
    robots_cache_seconds: float = 24 * 3600.0  # robots.txt and tdmrep.json answers kept this long (RFC 9309: 24 h)
    per_host_connections: int = 2  # requests in flight per host per worker; 0: unlimited
    per_host_rate: float = 5.0  # request starts per second per host per worker; 0: unlimited
    max_host_wait: float = 60.0  # longest a sample waits for its host's slot before rate_limited
    max_retry_after: float = 10.0  # longest 429/503 Retry-After we wait out (once); longer: rate_limited
    default_retry_after: float = 1.0  # back-off when a 429/503 names no Retry-After
    dns_cache_seconds: float = 300.0
    ca_bundle: str | None = None  # PEM file (or directory) of CAs to trust for https instead of the system's

    def __post_init__(self) -> None:
        _ = self.image_spec  # validates the image fields, with their own messages
        _ = self.address_policy  # validates allowed_hosts
        if self.max_bytes < 1:
            raise ValueError(f"max_bytes must be at least 1, got {self.max_bytes}")
        for name in ("connect_timeout", "read_timeout", "total_timeout", "robots_cache_seconds"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds, got {getattr(self, name)}")
        for name in ("per_host_rate", "max_host_wait", "max_retry_after", "default_retry_after",
                     "dns_cache_seconds"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.per_host_connections < 0:
            raise ValueError(f"per_host_connections must be >= 0 (0: unlimited), got {self.per_host_connections}")
        if self.max_redirects < 0:
            raise ValueError(f"max_redirects must be >= 0, got {self.max_redirects}")
        if self.threads < 1:
            raise ValueError(f"threads must be at least 1, got {self.threads}")
        if self.ca_bundle is not None and not self.ca_bundle.strip():
            raise ValueError("ca_bundle must be a path (or None for the system's CAs), got an empty string")
        if not self.user_agent.strip() or any(c in self.user_agent for c in "\r\n"):
            raise ValueError(f"user_agent must be a non-empty single line, got {self.user_agent!r}")

    @property
    def image_spec(self) -> ImageSpec:
        return ImageSpec(
            image_size=self.image_size,
            resize_mode=self.resize_mode,
            resize_only_if_bigger=self.resize_only_if_bigger,
            encode_format=self.encode_format,
            encode_quality=self.encode_quality,
            min_image_size=self.min_image_size,
            max_image_pixels=self.max_image_pixels,
        )

    @property
    def address_policy(self) -> AddressPolicy:
        return AddressPolicy(self.allow_private_addresses, frozenset(self.allowed_hosts))

    @property
    def user_agent_token(self) -> str:
        """The product token robots.txt and X-Robots-Tag address us by: ``clipcrawl``."""
        words = self.user_agent.split("/", 1)[0].split()
        return words[0].lower() if words else ""
