"""Huawei Cloud sites (shared spec §1): IAM login host and console host per site."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Site:
    name: str
    iam_host: str
    console_host: str

    @property
    def iam_base(self) -> str:
        return f"https://{self.iam_host}"

    @property
    def login_url(self) -> str:
        """Where the partner platform sends the browser to start SSO (`/authui/saml/login`)."""
        return f"{self.iam_base}/authui/saml/login"

    @property
    def metadata_url(self) -> str:
        """Huawei's published SP metadata for this site."""
        return f"{self.iam_base}/authui/saml/metadata.xml"

    @property
    def console_url(self) -> str:
        return f"https://{self.console_host}/"


SITES: dict[str, Site] = {
    "cn": Site("cn", "auth.huaweicloud.com", "console.huaweicloud.com"),
    "intl": Site("intl", "auth-intl.huaweicloud.com", "console-intl.huaweicloud.com"),
    "eu": Site("eu", "auth.eu.huaweicloud.com", "console.eu.huaweicloud.com"),
}


def site(name: str) -> Site:
    try:
        return SITES[name]
    except KeyError:
        raise ValueError(f"unknown Huawei site {name!r}; expected one of {', '.join(SITES)}") from None
