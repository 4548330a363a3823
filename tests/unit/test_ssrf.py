"""The SSRF guard (RELIABILITY T22): every internal destination is refused before any
connection or lookup; public addresses pass and are pinned. No test touches the network:
literals are never resolved, and names go through a fake resolver."""

from __future__ import annotations

import ipaddress
import socket

import pytest

from dispatcher.domain.errors import InvalidArgument, Unavailable
from dispatcher.service.ssrf import (
    UnresolvableHost,
    UrlPolicy,
    UrlRefused,
    check_callback_url,
)


async def no_lookups(host: str, port: int) -> list[str]:
    raise AssertionError(f"looked up {host}")


def resolving_to(*addresses: str) -> UrlPolicy:
    async def resolver(host: str, port: int) -> list[str]:
        return list(addresses)

    return UrlPolicy(allow_private=False, resolver=resolver)


STRICT = UrlPolicy(allow_private=False, resolver=no_lookups)
LAX = UrlPolicy(allow_private=True, resolver=no_lookups)

INTERNAL = [
    "https://127.0.0.1/",
    "https://127.0.0.1./hook",
    "https://localhost/",
    "https://LOCALHOST./",
    "https://api.localhost/",
    "https://[::1]/",
    "https://0.0.0.0/",
    "https://[::]/",
    "https://10.0.0.1/",
    "https://10.255.255.255/",
    "https://172.16.0.1/",
    "https://172.31.255.254/",
    "https://192.168.1.1/",
    "https://100.64.0.1/",
    "https://100.127.255.254/",
    "https://169.254.169.254/latest/meta-data/",
    "https://[fd00::1]/",
    "https://[fe80::1]/",
    "https://[fec0::1]/",
    "https://[::ffff:127.0.0.1]/",
    "https://[::ffff:a00:1]/",
    "https://[::127.0.0.1]/",
    "https://[2002:7f00:1::]/",  # 6to4 of 127.0.0.1
    "https://[2002:a9fe:a9fe::]/",  # 6to4 of 169.254.169.254
    "https://[64:ff9b::a00:1]/",  # NAT64 of 10.0.0.1
    "https://[2001::1]/",  # Teredo
    "https://224.0.0.1/",
    "https://[ff02::1]/",
    "https://240.0.0.1/",
    "https://255.255.255.255/",
    "https://198.18.0.1/",
    "https://192.0.2.1/",
]
NUMERIC_FORMS = [
    "https://2130706433/",
    "https://0177.0.0.1/",
    "https://0x7f.1/",
    "https://0x7f000001/",
    "https://127.1/",
    "https://017700000001/",
    "https://1.2.3.4.5/",
]
SCHEMES = ["file:///etc/passwd", "gopher://127.0.0.1:70/_x", "ftp://93.184.216.34/", "//a.b/"]


@pytest.mark.parametrize("url", INTERNAL)
async def test_an_internal_address_is_refused_without_any_lookup(url: str) -> None:
    with pytest.raises(UrlRefused, match="internal address"):
        await STRICT.vet(url)


@pytest.mark.parametrize("url", NUMERIC_FORMS)
async def test_decimal_octal_and_hex_ipv4_forms_are_refused_without_any_lookup(url: str) -> None:
    with pytest.raises(UrlRefused):
        await STRICT.vet(url)
    with pytest.raises(UrlRefused):  # whatever the policy: resolvers disagree on them
        await LAX.vet(url)


@pytest.mark.parametrize("url", SCHEMES)
async def test_schemes_other_than_http_and_https_are_refused(url: str) -> None:
    for policy in (STRICT, LAX):
        with pytest.raises(UrlRefused):
            await policy.vet(url)


@pytest.mark.parametrize("url", ["http://127.0.0.1/", "http://localhost/", "http://10.0.0.1/"])
async def test_the_battery_over_plain_http_is_refused_too(url: str) -> None:
    with pytest.raises(UrlRefused):
        await STRICT.vet(url)


async def test_plain_http_is_refused_unless_private_destinations_are_allowed() -> None:
    with pytest.raises(UrlRefused, match="must use https"):
        await STRICT.vet("http://93.184.216.34/hook")
    assert (await LAX.vet("http://93.184.216.34/hook")).port == 80


async def test_a_public_literal_address_is_accepted_and_pinned() -> None:
    target = await STRICT.vet("https://93.184.216.34/hook?x=1")
    assert target.address == ipaddress.ip_address("93.184.216.34")
    assert str(target.pinned_url) == "https://93.184.216.34/hook?x=1"
    assert target.host_header == "93.184.216.34"
    v6 = await STRICT.vet("https://[2606:4700::1111]:8443/")
    assert str(v6.pinned_url) == "https://[2606:4700::1111]:8443/"
    assert v6.host_header == "[2606:4700::1111]:8443"


async def test_a_name_resolving_to_a_private_address_is_refused() -> None:
    with pytest.raises(UrlRefused, match=r"its address is private"):
        await resolving_to("10.0.0.7").vet("https://hooks.example.com/")


async def test_a_name_is_refused_if_any_of_its_addresses_is_internal() -> None:
    with pytest.raises(UrlRefused, match="loopback"):
        await resolving_to("93.184.216.34", "127.0.0.1").vet("https://hooks.example.com/")
    with pytest.raises(UrlRefused, match="loopback"):
        await resolving_to("2606:4700::1111", "::ffff:127.0.0.1").vet("https://h.example.com/")


async def test_a_name_resolving_to_public_addresses_is_pinned_to_the_first() -> None:
    target = await resolving_to("93.184.216.34", "93.184.216.35").vet(
        "https://Hooks.Example.com:8443/done"
    )
    assert target.address == ipaddress.ip_address("93.184.216.34")
    assert str(target.pinned_url) == "https://93.184.216.34:8443/done"
    assert (target.host, target.host_header) == ("hooks.example.com", "hooks.example.com:8443")


async def test_an_internationalised_name_is_resolved_and_sent_in_its_ascii_form() -> None:
    seen: list[str] = []

    async def resolver(host: str, port: int) -> list[str]:
        seen.append(host)
        return ["93.184.216.34"]

    target = await UrlPolicy(resolver=resolver).vet("https://bücher.example/")
    assert seen == ["xn--bcher-kva.example."] and target.host == "xn--bcher-kva.example"


async def test_ports_outside_a_configured_allow_list_are_refused() -> None:
    policy = UrlPolicy(ports=[443], resolver=no_lookups)
    with pytest.raises(UrlRefused, match="ports"):
        await policy.vet("https://93.184.216.34:8443/")
    assert (await policy.vet("https://93.184.216.34/")).port == 443


async def test_credentials_in_the_url_are_refused() -> None:
    with pytest.raises(UrlRefused, match="credentials"):
        await STRICT.vet("https://user:pw@93.184.216.34/")


async def test_allowing_private_destinations_still_refuses_unspecified_and_multicast() -> None:
    assert (await LAX.vet("http://127.0.0.1:9/x")).address == ipaddress.ip_address("127.0.0.1")
    assert (await LAX.vet("https://10.0.0.1/")).port == 443
    for url in ("http://0.0.0.0/", "http://224.0.0.1/", "http://[::ffff:0.0.0.0]/"):
        with pytest.raises(UrlRefused):
            await LAX.vet(url)


async def test_the_enqueue_guard_turns_a_refusal_into_an_invalid_field() -> None:
    with pytest.raises(InvalidArgument) as info:
        await check_callback_url("https://169.254.169.254/", "job.callback_url", False)
    (violation,) = info.value.violations
    assert violation.field == "job.callback_url"
    assert "internal address" in violation.description


async def test_a_name_that_does_not_resolve_is_invalid_and_a_resolver_outage_is_unavailable() -> (
    None
):
    async def nxdomain(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    async def outage(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    with pytest.raises(InvalidArgument):
        await UrlPolicy(resolver=nxdomain).check("https://nope.example/", "f")
    with pytest.raises(Unavailable):
        await UrlPolicy(resolver=outage).check("https://nope.example/", "f")
    with pytest.raises(UnresolvableHost) as info:
        await UrlPolicy(resolver=outage).vet("https://nope.example/")
    assert info.value.transient
