"""The settings of a process that registers itself in Consul, apart from the client (imported only when used)."""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from services.common.settings import ENV_PREFIX


class RegistrationSettings(BaseSettings):
    """LLMMESH_* settings of a process that registers itself (adapters, tool services)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", frozen=True)

    discovery: str = Field("static", pattern="^(static|consul)$", description="static (YAML file) or consul.")
    advertise_address: str = Field(
        "", description="Address registered in Consul; default: the bind host, or this host's IP when binding 0.0.0.0."
    )
    consul_check_interval_seconds: float = Field(10.0, gt=0, le=3600, description="gRPC health check interval.")
    consul_check_timeout_seconds: float = Field(5.0, gt=0, le=600, description="gRPC health check timeout.")
    consul_deregister_after_seconds: float = Field(
        60.0, ge=0, le=86400, description="DeregisterCriticalServiceAfter; Consul enforces at least 60 s. 0: never."
    )
    consul_anti_entropy_seconds: float = Field(
        10.0, gt=0, le=3600, description="How often an instance checks that the agent still knows it."
    )
    consul_timeout_seconds: float = Field(5.0, gt=0, le=600, description="Timeout of each registration call.")
    pod_name: str = Field(
        "", description="Stable name of this instance (Kubernetes: metadata.name); default: the host name."
    )
    consul_check_tls_server_name: str = Field(
        "", description="TLSServerName of the gRPC check when serving TLS: a DNS name in this process's certificate."
    )
    consul_check_tls_skip_verify: bool = Field(
        False, description="TLSSkipVerify of the gRPC check: Consul does not verify this process's certificate."
    )
    consul_agent_ca_file: str = Field(
        "",
        description="CA of the Consul agents' own certificates, accepted (for health checks) under mTLS.",
    )
