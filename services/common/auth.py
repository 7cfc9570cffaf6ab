"""Who may call: tenants with bearer keys (router, agent) and the router's identity (adapters).

`CallerAuthInterceptor` checks `authorization: Bearer <key>` against the
tenants file and puts the tenant in `current_tenant` for the servicer (the
router checks models and quotas with it). `InternalAuthInterceptor` lets
only the router reach an adapter: a shared token (`llmmesh-internal-token`
metadata, compared in constant time) and/or an mTLS client certificate
whose CN or SAN is allowed. Health and reflection stay open on both.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar

import grpc
import structlog

from services.common.errors import MeshError
from services.common.interceptors import guard_handler, is_open_method
from services.common.tenants import KeyStore, Tenant

INTERNAL_TOKEN_HEADER = "llmmesh-internal-token"
REASON_NOT_ROUTER = "CALLER_NOT_ROUTER"

log = structlog.get_logger(__name__)

#: The authenticated tenant of the call being served; None when auth is off.
current_tenant: ContextVar[Tenant | None] = ContextVar("llmmesh_tenant", default=None)


def caller_interceptors(keys: KeyStore | None, *, service: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors for a caller-facing service; auth off is allowed, and said loudly."""
    if keys is None:
        log.warning(
            "AUTH OFF: every caller is accepted without a key; set LLMMESH_AUTH_FILE to require tenant keys",
            service=service,
        )
        return []
    log.info("caller auth on", tenants=len(keys.file.tenants))
    return [CallerAuthInterceptor(keys)]


def internal_interceptors(token: str, allowed_clients: str, *, service: str) -> list[grpc.aio.ServerInterceptor]:
    """The interceptors for an adapter (`allowed_clients`: comma-separated CN/SAN names); off is said loudly."""
    allowed = frozenset(name.strip() for name in allowed_clients.split(",") if name.strip())
    if not token and not allowed:
        log.warning(
            "INTERNAL AUTH OFF: anyone who can reach this adapter can spend its provider key; "
            "set LLMMESH_INTERNAL_TOKEN (same value on the router) and/or LLMMESH_INTERNAL_ALLOWED_CLIENTS with mTLS",
            service=service,
        )
        return []
    return [InternalAuthInterceptor(token, allowed)]


class _GateInterceptor(grpc.aio.ServerInterceptor):
    """Runs `_gate` before every method except health and reflection."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if is_open_method(handler_call_details.method):
            return handler
        method = handler_call_details.method

        async def gate(context: grpc.aio.ServicerContext) -> None:
            await self._gate(context, method)

        return guard_handler(handler, gate)  # type: ignore[return-value]

    async def _gate(self, context: grpc.aio.ServicerContext, method: str) -> None:
        raise NotImplementedError


class CallerAuthInterceptor(_GateInterceptor):
    """Bearer keys per tenant; the tenant goes into `current_tenant`."""

    def __init__(self, keys: KeyStore) -> None:
        self._keys = keys

    async def _gate(self, context: grpc.aio.ServicerContext, method: str) -> None:
        authorization = _metadata_value(context.invocation_metadata(), "authorization")
        try:
            tenant = self._keys.authenticate(authorization)
        except MeshError as error:
            log.info("caller refused", method=method, reason=error.reason, peer=context.peer())
            raise
        current_tenant.set(tenant)
        structlog.contextvars.bind_contextvars(tenant=tenant.name)


class InternalAuthInterceptor(_GateInterceptor):
    """Only the router: the shared token and/or an allowed mTLS client identity."""

    def __init__(self, token: str, allowed_clients: frozenset[str]) -> None:
        self._token = token.encode("utf-8")
        self._allowed = allowed_clients

    async def _gate(self, context: grpc.aio.ServicerContext, method: str) -> None:
        if self._token:
            presented = _metadata_value(context.invocation_metadata(), INTERNAL_TOKEN_HEADER) or ""
            if not hmac.compare_digest(presented.encode("utf-8", errors="surrogateescape"), self._token):
                log.info("internal caller refused", method=method, why="token", peer=context.peer())
                raise MeshError(
                    grpc.StatusCode.UNAUTHENTICATED,
                    f"adapters accept calls from the router only: the {INTERNAL_TOKEN_HEADER} metadata is "
                    + ("missing" if not presented else "wrong")
                    + "; set the same LLMMESH_INTERNAL_TOKEN on router and adapters",
                    reason=REASON_NOT_ROUTER,
                )
        if self._allowed:
            identities = _peer_identities(context)
            if not identities & self._allowed:
                log.info("internal caller refused", method=method, why="certificate", peer=context.peer())
                raise MeshError(
                    grpc.StatusCode.PERMISSION_DENIED,
                    "adapters accept calls from the router only: "
                    + (
                        "the client certificate names none of LLMMESH_INTERNAL_ALLOWED_CLIENTS"
                        if identities
                        else "no client certificate; the router must connect with mTLS"
                    ),
                    reason=REASON_NOT_ROUTER,
                )


class AllowedClientsInterceptor(_GateInterceptor):
    """Only callers whose verified client certificate names one of `allowed` (mTLS); `setting` lists them."""

    def __init__(self, allowed: frozenset[str], *, setting: str, service: str) -> None:
        self._allowed = allowed
        self._setting = setting
        self._service = service

    async def _gate(self, context: grpc.aio.ServicerContext, method: str) -> None:
        identities = _peer_identities(context)
        if identities & self._allowed:
            return
        log.info("caller refused", method=method, why="certificate", peer=context.peer())
        raise MeshError(
            grpc.StatusCode.PERMISSION_DENIED,
            f"{self._service} accepts calls from {', '.join(sorted(self._allowed))} only: "
            + (
                f"the client certificate names none of {self._setting}"
                if identities
                else "no client certificate; connect with mTLS"
            ),
        )


def _metadata_value(metadata: Iterable[tuple[str, str | bytes]] | None, name: str) -> str | None:
    for key, value in metadata or ():
        if key == name:
            return value.decode("utf-8", errors="replace") if isinstance(value, bytes) else value
    return None


def _peer_identities(context: grpc.aio.ServicerContext) -> set[str]:
    """The verified client certificate's CN and SANs (empty without mTLS)."""
    auth = context.auth_context() or {}
    names = [*auth.get("x509_common_name", ()), *auth.get("x509_subject_alternative_name", ())]
    return {name.decode("utf-8", errors="replace") if isinstance(name, bytes) else name for name in names}


def internal_metadata(token: str) -> tuple[tuple[str, str], ...]:
    """What the router sends to adapters on every call (nothing when no token is configured)."""
    return ((INTERNAL_TOKEN_HEADER, token),) if token else ()
