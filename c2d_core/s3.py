"""S3 in one place: the `C2D_S3_*` settings (`S3Settings`, the `.s3` of the engine settings tree) and
the one boto3 client builder (`s3_client`) that the result store, the Provider, the Dagster resource
(dagster-aws's S3Resource) and the configure pod's signed dataset URLs all use.

A leaf module (pydantic and boto3 only), so the fetchers, the settings and the stores can import it.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

S3_ENV_PREFIX = "C2D_S3_"
MAX_S3_ATTEMPTS = 20
SSE_MODES = ("", "AES256", "aws:kms")


def _number(value: object, name: str, kind: type[int] | type[float], default: float) -> object:
    """Environment text as a number, with the variable named when it is not one."""
    if not isinstance(value, str):
        return value
    raw = value.strip()
    if not raw:
        return default
    try:
        return kind(raw)
    except ValueError:
        raise ValueError(f"{name} must be a number, not {raw[:20]!r}") from None


def _message(prefix: str, error: Any) -> str:
    text = str(error["msg"]).removeprefix("Value error, ")
    name = f"{prefix}{'_'.join(str(part) for part in error['loc'])}".upper()
    return text if name in text else f"{name}: {text}"


class S3Settings(BaseModel):
    """`C2D_S3_*`: the S3 result store (any S3 API). The run worker, the publish pod and the Provider
    read the same values; the pod gets them as environment variables (`env()`), never credentials."""

    model_config = ConfigDict(frozen=True)

    bucket: str = ""
    endpoint_url: str | None = None
    region: str = "us-east-1"
    prefix: str = ""  # keys are `<prefix><job id>/<name>`
    sse: str = ""  # "", "AES256" or "aws:kms"
    kms_key_id: str = ""
    # Tries per S3 request, with boto3's exponential backoff (jittered, doubling, capped at 20 s)
    # between them: a store that is down or restarting for a few seconds costs a job nothing.
    max_attempts: int = 5
    # Seconds to connect and to wait for each answer: a hung endpoint fails its attempt, not the pod.
    timeout: float = 60.0
    # An AWS shared credentials file, mounted into the publish pod as the `s3-credentials` secret
    # (default: `<home>/secrets/s3-credentials`, see EngineSettings.resolved_s3_credentials_file).
    credentials_file: Path | None = None

    @field_validator("endpoint_url", "credentials_file", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("region", mode="before")
    @classmethod
    def _default_region(cls, value: object) -> object:
        return value or "us-east-1"

    @field_validator("prefix")
    @classmethod
    def _prefix_is_a_folder(cls, value: str) -> str:
        return value + "/" if value and not value.endswith("/") else value

    @field_validator("sse")
    @classmethod
    def _known_sse(cls, value: str) -> str:
        if value not in SSE_MODES:
            raise ValueError(f"C2D_S3_SSE must be one of {', '.join(repr(m) for m in SSE_MODES)}")
        return value

    @field_validator("max_attempts", mode="before")
    @classmethod
    def _attempts_number(cls, value: object) -> object:
        return _number(value, "C2D_S3_MAX_ATTEMPTS", int, 5)

    @field_validator("max_attempts")
    @classmethod
    def _attempts_range(cls, value: int) -> int:
        if not 1 <= value <= MAX_S3_ATTEMPTS:
            raise ValueError(f"C2D_S3_MAX_ATTEMPTS must be between 1 and {MAX_S3_ATTEMPTS}")
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout_number(cls, value: object) -> object:
        return _number(value, "C2D_S3_TIMEOUT", float, 60.0)

    @field_validator("timeout")
    @classmethod
    def _timeout_range(cls, value: float) -> float:
        if not 0 < value <= 600:
            raise ValueError("C2D_S3_TIMEOUT must be more than 0 and at most 600 seconds")
        return value

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> S3Settings:
        """The settings from a pod's environment (a mapping, not this process's `os.environ`)."""
        values = {name: environ.get(S3_ENV_PREFIX + name.upper()) for name in cls.model_fields}
        try:
            return cls.model_validate({name: value for name, value in values.items() if value is not None})
        except ValidationError as error:
            # One line naming the variable, for the pod's termination message.
            raise ValueError("; ".join(_message(S3_ENV_PREFIX, item) for item in error.errors())) from None

    def env(self) -> dict[str, str]:
        """The same settings as pod environment variables (no credentials: those come as a secret)."""
        return {
            "C2D_RESULT_STORE": "s3",
            "C2D_S3_BUCKET": self.bucket,
            "C2D_S3_ENDPOINT_URL": self.endpoint_url or "",
            "C2D_S3_REGION": self.region,
            "C2D_S3_PREFIX": self.prefix,
            "C2D_S3_SSE": self.sse,
            "C2D_S3_KMS_KEY_ID": self.kms_key_id,
            "C2D_S3_MAX_ATTEMPTS": str(self.max_attempts),
            "C2D_S3_TIMEOUT": str(self.timeout),
        }


def s3_client(
    settings: S3Settings, *, session: Any = None, unsigned: bool = False, verify: bool | str | None = None
) -> Any:
    """The one boto3 S3 client builder: the result store, the Provider, dagster-aws's S3Resource (see
    c2d_defs.resources) and the configure pod's signed dataset URLs all build their clients here.

    Credentials come from `session` (a `boto3.session.Session`), else the environment, a shared
    credentials file or the IAM role; `unsigned` sends anonymous requests (public buckets)."""
    import boto3
    from botocore import UNSIGNED
    from botocore.config import Config

    return (session or boto3.session.Session()).client(
        "s3",
        endpoint_url=settings.endpoint_url,
        region_name=settings.region,
        verify=verify,
        config=Config(
            signature_version=UNSIGNED if unsigned else None,
            # Standard mode retries throttling, 5xx and connection errors (refused, reset, timed out).
            retries={"max_attempts": settings.max_attempts, "mode": "standard"},
            connect_timeout=settings.timeout,
            read_timeout=settings.timeout,
            # Path-style for custom endpoints (MinIO, moto, Ceph) that have no per-bucket DNS names.
            s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
        ),
    )
