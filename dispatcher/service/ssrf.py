"""Where a callback URL may point: the SSRF guard, applied at Enqueue and again at every send.

A URL is vetted by resolving its host and refusing it if ANY address is
internal: private, loopback, link-local, multicast, reserved, unspecified,
shared (100.64/10), site-local, or one of those wrapped in an IPv4-mapped,
6to4 or NAT64 IPv6 address. Hosts that look like numbers but are not a
canonical dotted quad (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`) are
refused outright: resolvers read them as IPv4 in ways that differ between
libraries. The sender then connects to the vetted address itself (the host
goes in the Host header and TLS SNI), so a second DNS answer cannot redirect
the request (DNS rebinding).

Schemes: https; plain http only when private destinations are allowed
(development, or receivers on a trusted network). Ports: any, unless an
allow-list is configured.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass

import httpx

from dispatcher.domain.errors import InvalidArgument, Unavailable

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

DEFAULT_PORTS = {"http": 80, "https": 443}
RESOLVE_TIMEOUT_S = 5.0
_SHARED = ipaddress.ip_network("100.64.0.0/10")
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
# Never a destination, whatever the configuration.
_ALWAYS_REFUSED = frozenset({"unspecified", "multicast"})
_NUMBER = re.compile(r"(0x[0-9a-f]*|[0-9]+)", re.IGNORECASE)


class UrlRefused(Exception):
    """The URL may not be called: a policy decision, final."""


class UnresolvableHost(Exception):
    """The host has no address; `transient` when the resolver may answer later."""

    def __init__(self, message: str, transient: bool) -> None:
        super().__init__(message)
        self.transient = transient


async def system_resolver(host: str, port: int) -> list[str]:
    """The addresses getaddrinfo gives for `host` (what a plain connect would use)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


def internal_kind(ip: IPAddress) -> str | None:
    """Why `ip` is not a public destination, or None if it is one."""
    if isinstance(ip, ipaddress.IPv6Address):
        nat64 = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF) if ip in _NAT64 else None
        for embedded in (ip.ipv4_mapped, ip.sixtofour, nat64):
            if embedded is not None and (kind := internal_kind(embedded)) is not None:
                return kind
        if ip.teredo is not None:
            return "private"
        if ip.is_site_local:
            return "site-local"
    checks = (
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("shared", isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED),
        ("private", ip.is_private),
        ("reserved", ip.is_reserved),
        ("not globally routable", not ip.is_global),
    )
    return next((kind for kind, hit in checks if hit), None)


def literal_address(host: str) -> IPAddress | None:
    """`host` as an IP address if it is written as one; refuses non-canonical numeric forms."""
    bare = host.rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if ":" in bare:
        raise UrlRefused("is not a valid IP address")
    last = bare.rpartition(".")[2]
    if _NUMBER.fullmatch(last):  # no top-level domain is a number: resolvers read it as IPv4
        raise UrlRefused("must write an IP address as four decimal numbers (a.b.c.d)")
    return None


def _is_localhost(host: str) -> bool:
    """RFC 6761: `localhost` and its subdomains are loopback, whatever DNS says."""
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


@dataclass(frozen=True)
class Target:
    """A vetted URL and the address to connect to."""

    url: httpx.URL
    host: str  # ASCII (IDNA) host, for the Host header and SNI
    port: int
    address: IPAddress

    @property
    def pinned_url(self) -> httpx.URL:
        """The URL with its host replaced by the vetted address."""
        return self.url.copy_with(host=str(self.address))

    @property
    def host_header(self) -> str:
        default = DEFAULT_PORTS[self.url.scheme]
        name = f"[{self.host}]" if ":" in self.host else self.host
        return name if self.port == default else f"{name}:{self.port}"


class UrlPolicy:
    """The SSRF policy: which schemes, ports and addresses callbacks may reach."""

    def __init__(
        self,
        allow_private: bool = False,
        ports: Collection[int] = (),
        resolver: Resolver | None = None,
        resolve_timeout_s: float = RESOLVE_TIMEOUT_S,
    ) -> None:
        self.allow_private = allow_private
        self.ports = frozenset(ports)  # empty: any port
        self.schemes = ("http", "https") if allow_private else ("https",)
        self.resolver = resolver or system_resolver
        self.resolve_timeout_s = resolve_timeout_s

    async def vet(self, url: str) -> Target:
        """Parse, resolve and check `url`. Raises UrlRefused or UnresolvableHost."""
        u, host, port = self._parse(url)
        literal = literal_address(host)
        if literal is None and not self.allow_private and _is_localhost(host):
            raise UrlRefused("must not point to an internal address (localhost is loopback)")
        addresses = [literal] if literal is not None else await self._resolve(host, port)
        for address in addresses:
            kind = internal_kind(address)
            if kind is not None and (not self.allow_private or kind in _ALWAYS_REFUSED):
                shown = "its address" if literal is None else "the address"
                raise UrlRefused(f"must not point to an internal address ({shown} is {kind})")
        return Target(u, host, port, addresses[0])

    def _parse(self, url: str) -> tuple[httpx.URL, str, int]:
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, ValueError):
            raise UrlRefused("is not a valid URL") from None
        if u.scheme not in self.schemes:
            raise UrlRefused(f"must use {' or '.join(self.schemes)}")
        if u.userinfo:
            raise UrlRefused("must not carry credentials")
        host = u.raw_host.decode("ascii")
        if not host:
            raise UrlRefused("must name a host")
        port = u.port or DEFAULT_PORTS[u.scheme]
        if self.ports and port not in self.ports:
            raise UrlRefused(f"must use one of the ports {sorted(self.ports)}")
        return u, host, port

    async def check(self, url: str, field: str) -> None:
        """The Enqueue guard: InvalidArgument on `field` if the URL may not be called."""
        try:
            await self.vet(url)
        except UrlRefused as exc:
            raise InvalidArgument.field(field, str(exc)) from None
        except UnresolvableHost as exc:
            if exc.transient:
                raise Unavailable(f"could not resolve the host of {field}: try again") from None
            raise InvalidArgument.field(field, "names a host that does not resolve") from None

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        try:
            async with asyncio.timeout(self.resolve_timeout_s):
                found = await self.resolver(host.rstrip(".") + ".", port)
        except TimeoutError:
            raise UnresolvableHost("resolving the host timed out", transient=True) from None
        except socket.gaierror as exc:
            transient = exc.errno in (socket.EAI_AGAIN, getattr(socket, "EAI_SYSTEM", None))
            raise UnresolvableHost(f"cannot resolve the host: {exc.strerror}", transient) from None
        except OSError as exc:
            raise UnresolvableHost(f"cannot resolve the host: {exc}", transient=True) from None
        addresses = list(dict.fromkeys(ipaddress.ip_address(a) for a in found))
        if not addresses:
            raise UnresolvableHost("the host has no address", transient=False)
        return addresses


async def check_callback_url(url: str, field: str, allow_private: bool) -> None:
    """Refuse (InvalidArgument on `field`) a callback URL that points inside the network."""
    await UrlPolicy(allow_private=allow_private).check(url, field)
